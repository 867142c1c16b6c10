"""With the package installed, a published folder loads through every documented path
(config, model, tokenizer, feature extractor, processor, pipeline) without trust_remote_code and without a prompt."""

import os
import subprocess
import sys
import textwrap

from conftest import save_model_folder
from hf_prunable_ctc.hub.publish import publish


def test_published_folder_loads_without_remote_code(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_model_folder(tmp_path / "model", with_metrics=True)
    card = dict(model_name="toy", dataset_name="Toy", dataset_type="toy", training_command="train")
    publish(str(tmp_path / "model"), str(tmp_path / "repo"), "you/toy", card, dry_run=True)
    script = textwrap.dedent(f"""
        import numpy as np
        import hf_prunable_ctc
        from transformers import (AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForCTC, AutoProcessor,
                                  AutoTokenizer, pipeline)
        path = {str(tmp_path / "repo")!r}
        for load in (AutoConfig, AutoModel, AutoModelForCTC, AutoTokenizer, AutoFeatureExtractor, AutoProcessor):
            obj = load.from_pretrained(path)
            assert not type(obj).__module__.startswith("transformers_modules"), type(obj).__module__
        asr = pipeline("automatic-speech-recognition", model=path)
        audio = 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
        print("OK", type(asr.model).__name__, repr(asr(audio)["text"])[:0])
    """)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"))
    # No standard input: a trust_remote_code prompt would fail instead of waiting.
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "OK PrunableCTCForCTC" in run.stdout
    assert not (tmp_path / "modules").exists()  # no remote code was fetched or run


def test_float16_weights_halve_the_file_and_load_as_float32(tmp_path, monkeypatch):
    import pytest
    import torch
    from safetensors import safe_open

    from hf_prunable_ctc import PrunableCTCForCTC

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_model_folder(tmp_path / "model", with_metrics=True)
    card = dict(model_name="toy", dataset_name="Toy", dataset_type="toy", training_command="train")
    full = publish(str(tmp_path / "model"), str(tmp_path / "full"), "you/toy", card, dry_run=True)
    half = publish(str(tmp_path / "model"), str(tmp_path / "half"), "you/toy", card, dry_run=True,
                   weights_dtype="float16")
    assert half["files"]["model.safetensors"] < 0.6 * full["files"]["model.safetensors"]
    with safe_open(str(tmp_path / "half" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(name).dtype for name in f.keys()} == {torch.float16}

    reference = PrunableCTCForCTC.from_pretrained(tmp_path / "full").eval()
    loaded = PrunableCTCForCTC.from_pretrained(tmp_path / "half").eval()
    assert loaded.dtype == torch.float32
    features = torch.randn(1, 200, reference.config.num_mel_bins)
    with torch.no_grad():
        difference = (reference(features).logits - loaded(features).logits).abs().max().item()
    assert difference < 0.05  # float16 rounding of the weights only

    with pytest.raises(ValueError, match="weights_dtype"):
        publish(str(tmp_path / "model"), str(tmp_path / "bad"), "you/toy", card, dry_run=True, weights_dtype="int8")
