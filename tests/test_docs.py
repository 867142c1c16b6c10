"""The README and the documentation pages: their numbers come from committed JSON through docs/render.py, the site
builds with `mkdocs build --strict`, and the README stays a page a person reads in one sitting."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _render_module():
    spec = importlib.util.spec_from_file_location("docs_render", ROOT / "docs" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_document_is_what_its_template_and_json_give():
    stale = _render_module().stale_documents()
    assert not stale, f"{stale} differ from their templates and JSON: run `python docs/render.py` and commit the result"


def test_a_changed_number_in_the_json_changes_the_document(monkeypatch):
    render = _render_module()
    report = "model_cards/prunable-ctc-small-synth/depth_report.json"
    before = render.render_all()[ROOT / "README.md"]
    changed = render.data(report)
    changed = {**changed, "records": [{**r, "wer": r["wer"] + 10.0} for r in changed["records"]]}
    original = render.data
    monkeypatch.setattr(render, "data", lambda path: changed if path == report else original(path))
    after = render.render_all()[ROOT / "README.md"]
    assert after != before
    full = render.record(changed, 8)
    assert f"| 8 | 4.17 M | {full['wer']:.1f} ({full['cer']:.1f}) |" in after
    assert f"| 8 | 4.17 M | {full['wer'] - 10:.1f} ({full['cer']:.1f}) |" in before


def test_the_readme_is_short_and_opens_with_the_commands_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    first_block = readme.split("```")[1]
    assert "pip install torch==2.13.0 && pip install -e \".[dev]\"" in first_block
    assert "python -m pytest -q" in first_block  # what .ci/run runs at the end


def test_the_documents_say_what_the_code_does_not_how_it_got_there():
    documents = [ROOT / "README.md", *_render_module().render_all()]
    for path in set(documents):
        text = path.read_text()
        assert not re.search(r"\bissue [0-9]+", text, re.IGNORECASE), path
        assert "this session" not in text.lower(), path


def test_the_site_builds_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        pytest.skip("mkdocs and mkdocstrings are not installed (pip install -e \".[dev]\" installs them)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "api" / "model" / "index.html").is_file()


@pytest.mark.parametrize("folder", ["prunable-ctc-small-synth", "whisper-tiny-prunable-ctc"])
def test_the_model_cards_are_short_and_show_every_way_to_run_the_model(folder):
    card = (ROOT / "model_cards" / folder / "README.md").read_text()
    body = card.split("\n---\n", 1)[1]  # after the metadata block (model-index)
    assert len(body.strip().splitlines()) <= 130  # about 120, the Whisper card also compares with Whisper
    for way in ("num_layers=", "prune_to(", 'pipeline("automatic-speech-recognition"', "OnnxPrunableCTC("):
        assert way in body, way
    assert "synthetic" in body.lower()


def test_code_and_tests_carry_no_development_history():
    """Docstrings, comments and test names say what and why: no references to the tracker's issue numbers."""
    pattern = re.compile(r"\b(issue|issues) #?[0-9]+|\bissue [0-9]+'s", re.IGNORECASE)
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.j2", "*.json", "*.yml", "*.toml"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    found = [f"{name}:{n}" for name in tracked if (ROOT / name).is_file()
             for n, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1)
             if pattern.search(line)]
    assert not found, found
