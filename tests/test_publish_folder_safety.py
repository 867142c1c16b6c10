"""`publish` never deletes a folder or file it did not write, never the source model, and writes its folder with
the permissions the umask gives new files."""

import json
import os
import stat

import pytest

from conftest import save_model_folder
from hf_prunable_ctc.cli import main
from hf_prunable_ctc.hub.output_folder import MARKER, OutputFolderError
from hf_prunable_ctc.hub.publish import publish

CARD = dict(model_name="toy", dataset_name="Toy", dataset_type="toy", training_command="python train.py")


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """`runs/` holding a measured model `mymodel` and another experiment, as a user's runs folder does."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_model_folder(tmp_path / "runs" / "mymodel", with_metrics=True)
    other = tmp_path / "runs" / "other_experiment"
    other.mkdir()
    (other / "notes.txt").write_text("weeks of work")
    (tmp_path / "card.json").write_text(json.dumps(CARD))
    return tmp_path / "runs"


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dry_run_into_a_foreign_folder_is_refused_and_deletes_nothing(runs, capsys):
    before = snapshot(runs)
    code = main(["publish", str(runs / "mymodel"), str(runs), "--repo_id", "you/x",
                 "--card_info", str(runs.parent / "card.json"), "--dry_run"])
    assert code == 2
    error = capsys.readouterr().err
    assert "source model folder" in error and "new folder" in error
    assert snapshot(runs) == before  # the other experiment and the source model are intact


def test_non_empty_folder_without_marker_is_refused(runs, tmp_path, capsys):
    target = tmp_path / "repo"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    (target / "empty_subfolder").mkdir()
    code = main(["publish", str(runs / "mymodel"), str(target), "--repo_id", "you/x",
                 "--card_info", str(runs.parent / "card.json"), "--dry_run"])
    assert code == 2
    error = capsys.readouterr().err
    assert "not written by hf-prunable-ctc" in error and "keep.txt" in error
    assert (target / "keep.txt").read_text() == "mine" and (target / "empty_subfolder").is_dir()
    assert sorted(p.name for p in target.iterdir()) == ["empty_subfolder", "keep.txt"]


def test_output_equal_to_the_source_is_refused(runs):
    before = snapshot(runs / "mymodel")
    with pytest.raises(OutputFolderError, match="source model folder"):
        publish(str(runs / "mymodel"), str(runs / "mymodel"), "you/x", CARD, dry_run=True)
    assert snapshot(runs / "mymodel") == before


def test_new_empty_and_previously_written_folders_are_written(runs, tmp_path):
    (tmp_path / "repo.partial").mkdir()  # a user's folder that happens to have the old staging name
    (tmp_path / "repo.partial" / "data.bin").write_bytes(b"1")
    first = publish(str(runs / "mymodel"), str(tmp_path / "repo"), "you/x", CARD, dry_run=True)
    assert "README.md" in first["files"] and MARKER not in first["files"]
    assert json.loads((tmp_path / "repo" / MARKER).read_text())["files"] == sorted(first["files"])
    # Written before by this tool: replaced, with nothing left over from the first run.
    (tmp_path / "repo" / "README.md").write_text("stale")
    second = publish(str(runs / "mymodel"), str(tmp_path / "repo"), "you/x", CARD, dry_run=True)
    assert second["files"] == first["files"] and (tmp_path / "repo" / "README.md").read_text() != "stale"
    (tmp_path / "empty").mkdir()
    assert publish(str(runs / "mymodel"), str(tmp_path / "empty"), "you/x", CARD, dry_run=True)["files"]
    assert (tmp_path / "repo.partial" / "data.bin").read_bytes() == b"1"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial") and p.name != "repo.partial"]


def test_a_file_added_to_a_written_folder_is_kept_and_refused(runs, tmp_path):
    publish(str(runs / "mymodel"), str(tmp_path / "repo"), "you/x", CARD, dry_run=True)
    (tmp_path / "repo" / "my_notes.md").write_text("mine")
    with pytest.raises(OutputFolderError, match="my_notes.md"):
        publish(str(runs / "mymodel"), str(tmp_path / "repo"), "you/x", CARD, dry_run=True)
    assert (tmp_path / "repo" / "my_notes.md").read_text() == "mine"
    assert (tmp_path / "repo" / "model.safetensors").exists()


def modes(folder):
    """{relative path: permission bits} of `folder` ("." itself), its sub-folders and files."""
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}


@pytest.fixture
def umask():
    """Set the process umask for a test and restore it afterwards."""
    before = os.umask(0o022)
    os.umask(before)
    yield lambda mask: os.umask(mask)
    os.umask(before)


@pytest.mark.parametrize("mask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_written_folder_has_the_permissions_of_new_files(runs, tmp_path, umask, mask, folder_mode, file_mode):
    umask(mask)
    publish(str(runs / "mymodel"), str(tmp_path / "repo"), "you/x", CARD, dry_run=True)
    found = modes(tmp_path / "repo")
    assert "model.safetensors" in found and "README.md" in found
    assert found == {name: folder_mode if (tmp_path / "repo" / name).is_dir() else file_mode for name in found}
