"""With a token but no network, publish writes and lists the folder and says why nothing was
uploaded, instead of a ConnectError traceback."""

import json

from conftest import save_model_folder
from hf_prunable_ctc.cli import main


def test_unreachable_hub_writes_lists_and_explains(tmp_path, monkeypatch, capsys):
    save_model_folder(tmp_path / "model", with_metrics=True)
    (tmp_path / "card.json").write_text(json.dumps(
        {"model_name": "toy", "dataset_name": "Toy", "dataset_type": "toy", "training_command": "train"}))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the connection fails at once
    # huggingface_hub reads both at import time, which may have happened with HF_HUB_OFFLINE=1 set.
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    code = main(["publish", str(tmp_path / "model"), str(tmp_path / "repo"), "--repo_id", "you/toy",
                 "--card_info", str(tmp_path / "card.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "README.md" in out and "model.safetensors" in out  # the folder is listed
    assert (tmp_path / "repo" / "model.safetensors").exists()
    last = out.strip().splitlines()[-1]
    assert last.startswith("not uploaded: the upload to you/toy failed (") and "Connect" in last
    assert "run the same command again" in last
