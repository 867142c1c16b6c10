"""Transformers integration: Auto classes, remote code in a clean process, the ASR pipeline."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCTC, pipeline

from conftest import tiny_model
from hf_prunable_ctc import PrunableCTCConfig, PrunableCTCForCTC, PrunableCTCModel
from hf_prunable_ctc.data.features import make_feature_extractor, save_processor
from hf_prunable_ctc.data.vocabulary import make_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved 80-bin model with tokenizer and feature extractor, as a Hub repo would hold it."""
    path = tmp_path_factory.mktemp("model")
    tokenizer = make_tokenizer()
    model = tiny_model(num_mel_bins=80, vocab_size=len(tokenizer), interctc_layers=[2], interctc_weight=0.3)
    model.save_pretrained(path)
    save_processor(make_feature_extractor(), tokenizer, path)
    return path


def test_saved_folder_has_code_and_auto_map(model_dir):
    names = set(os.listdir(model_dir))
    assert {"model.safetensors", "config.json", "modeling_prunable_ctc.py", "configuration_prunable_ctc.py",
            "pruning.py", "vocab.json", "preprocessor_config.json"} <= names
    auto_map = json.loads((model_dir / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_prunable_ctc.PrunableCTCConfig",
        "AutoModel": "modeling_prunable_ctc.PrunableCTCModel",
        "AutoModelForCTC": "modeling_prunable_ctc.PrunableCTCForCTC",
    }


def test_auto_classes_in_process(model_dir):
    assert isinstance(AutoConfig.from_pretrained(model_dir), PrunableCTCConfig)
    assert isinstance(AutoModel.from_pretrained(model_dir), PrunableCTCModel)
    assert isinstance(AutoModelForCTC.from_pretrained(model_dir), PrunableCTCForCTC)


def test_remote_code_in_a_clean_process(model_dir, tmp_path):
    """A process that never imports hf_prunable_ctc loads the folder with trust_remote_code and gets the same
    logits as the package's class, at full and pruned depth."""
    features = torch.randn(2, 90, 80)
    torch.save(features, tmp_path / "features.pt")
    reference = PrunableCTCForCTC.from_pretrained(model_dir).eval()
    with torch.no_grad():
        torch.save({"full": reference(features).logits, "d1": reference(features, num_layers=1).logits},
                   tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        from transformers import AutoModel, AutoModelForCTC
        model = AutoModelForCTC.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
        encoder = AutoModel.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
        assert "hf_prunable_ctc" not in sys.modules, "the package was imported"
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(encoder).__name__ == "PrunableCTCModel"
        features = torch.load("features.pt")
        expected = torch.load("expected.pt")
        with torch.no_grad():
            assert torch.allclose(model(features).logits, expected["full"], atol=1e-5)
            assert torch.allclose(model.prune_to(1)(features).logits, expected["d1"], atol=1e-5)
        model.save_pretrained("pruned")
        print("OK")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")
    pruned = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert pruned["num_hidden_layers"] == 1 and "AutoModelForCTC" in pruned["auto_map"]
    assert (tmp_path / "pruned" / "modeling_prunable_ctc.py").exists()


def tone(seconds, sampling_rate=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def asr(model_dir):
    return pipeline("automatic-speech-recognition", model=str(model_dir), trust_remote_code=True, device="cpu")


def test_pipeline_transcribes_arrays_and_dicts(asr):
    audio = tone(2.0)
    from_array = asr(audio)
    from_dict = asr({"raw": audio, "sampling_rate": 16000})
    assert isinstance(from_array["text"], str)
    assert from_array["text"] == from_dict["text"]


def test_pipeline_output_matches_model_greedy_decoding(asr, model_dir):
    audio = tone(1.5, seed=3)
    extractor = make_feature_extractor()
    tokenizer = make_tokenizer()
    features = extractor(audio, sampling_rate=16000, return_tensors="pt")
    model = PrunableCTCForCTC.from_pretrained(model_dir).eval()
    with torch.no_grad():
        ids = model(features["input_features"], features["attention_mask"]).logits.argmax(-1)[0]
    assert asr(audio)["text"] == tokenizer.decode(ids.tolist())


@pytest.mark.parametrize("kind", ["char", "word"])
def test_pipeline_chunking_and_timestamps_cover_the_audio(asr, kind):
    seconds = 12.0
    out = asr(tone(seconds, seed=1), chunk_length_s=4.0, stride_length_s=1.0, return_timestamps=kind)
    chunks = out["chunks"]
    assert chunks, "a random model emits some tokens"
    starts = [c["timestamp"][0] for c in chunks]
    ends = [c["timestamp"][1] for c in chunks]
    assert starts == sorted(starts)
    assert all(0.0 <= s <= e for s, e in zip(starts, ends))
    # With a correct inputs_to_logits_ratio, frame times map back onto the whole audio: not past its end and
    # not squeezed into a fraction of it.
    assert max(ends) <= seconds + 0.1
    assert max(ends) > 0.75 * seconds
    if kind == "word":
        assert " ".join(c["text"] for c in chunks) == out["text"].strip()
