"""The every-depth ONNX folder and its torch-free runtime: one export of the reference model serves every depth of
its schedule and early exit, with the weights stored once, and gives PyTorch's transcripts in a process where
torch and transformers cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoTokenizer

pytest.importorskip("onnxruntime", reason="ONNX export needs onnx, onnxruntime, onnxscript")

from hf_prunable_ctc import PrunableCTCForCTC  # noqa: E402
from hf_prunable_ctc.data.audio import load_audio  # noqa: E402
from hf_prunable_ctc.runtime.export import export_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "model_cards" / "prunable-ctc-small-synth"
FILES = sorted((ROOT / "data" / "reference_test_subset" / "test").glob("*.flac"))
THRESHOLD = 0.9


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("every-depth")
    result = export_onnx(MODEL, out / "onnx")
    assert result["depth"] is None and result["max_abs_diff"] < 1e-4
    return out / "onnx", result


@pytest.fixture(scope="module")
def pytorch_transcripts():
    """Each bundled utterance alone through the PyTorch model, at every depth of its schedule and with early
    exit: {"depth-k": [text, ...], "early_exit": [(text, exit depth), ...]}."""
    model = PrunableCTCForCTC.from_pretrained(MODEL).eval()
    extractor, tokenizer = AutoFeatureExtractor.from_pretrained(MODEL), AutoTokenizer.from_pretrained(MODEL)
    schedule = model.pruning_schedule()
    texts = {f"depth-{d}": [] for d in schedule}
    texts["early_exit"] = []
    with torch.no_grad():
        for path in FILES:
            inputs = extractor(load_audio(path), sampling_rate=16000, return_tensors="pt")
            for depth, layers in schedule.items():
                ids = model(**inputs, layers=layers).logits[0].argmax(-1).tolist()
                texts[f"depth-{depth}"].append(tokenizer.decode(ids))
            out = model(**inputs, early_exit_threshold=THRESHOLD)
            texts["early_exit"].append([tokenizer.decode(out.logits[0].argmax(-1).tolist()), int(out.exit_depths[0])])
    return texts


def test_one_folder_holds_every_depth_at_the_size_of_one_full_depth_file(folder, tmp_path):
    path, result = folder
    single = export_onnx(MODEL, tmp_path / "single", depth=8, check=False)
    assert result["size_bytes"] <= 1.15 * single["size_bytes"]
    runtime = json.loads((path / "runtime.json").read_text())
    assert runtime["num_layers"] == 8 and len(runtime["layers"]) == 8
    assert {int(k) for k in runtime["pruning_schedule"]} == set(range(1, 9))


def test_numpy_front_end_equals_the_feature_extractor(folder):
    """Float32 in both, the same operations in the same order; what is left is rounding in the two FFTs, which
    the logarithm magnifies in the lowest, nearly empty mel bins. Measured on the 80 utterances with numpy 2.4 and
    torch 2.13: 2.06e-3 at most (bin 1 of one frame, whose log energy is -6.620 in float64, -6.629 here and -6.644
    in the torch extractor: the torch path is the farther from exact), 1.8e-4 on average."""
    from hf_prunable_ctc.runtime.onnx_runtime import NumpyFrontEnd

    front_end = NumpyFrontEnd(folder[0])
    extractor = AutoFeatureExtractor.from_pretrained(MODEL)
    audio = [load_audio(path) for path in FILES]
    differences = []
    for samples in audio + [np.zeros(16000, np.float32), np.zeros(100, np.float32)]:
        expected = extractor(samples, sampling_rate=16000, return_tensors="np")["input_features"][0]
        features, mask = front_end([samples])
        assert features.shape[1:] == expected.shape and mask.dtype == np.int32
        differences.append(float(np.abs(features[0] - expected).max()) if expected.size else 0.0)
    assert max(differences) <= 2.5e-3 and np.mean(differences) <= 2.5e-4


# The start of a script run in a process where torch and transformers cannot be imported.
WITHOUT_TORCH = textwrap.dedent("""
    import importlib.abc, json, sys

    class NotInstalled(importlib.abc.MetaPathFinder):  # as on a device where neither is installed
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("torch", "transformers"):
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, NotInstalled())
""")

RUN_WITHOUT_TORCH = WITHOUT_TORCH + textwrap.dedent("""
    from hf_prunable_ctc.runtime.onnx_runtime import OnnxPrunableCTC

    folder, files = sys.argv[1], sys.argv[2:]
    asr = OnnxPrunableCTC(folder)
    out = {}
    for depth, layers in sorted(asr.pruning_schedule.items()):
        alone = [asr.transcribe(path, layers=layers)["text"] for path in files]
        batched = [r["text"] for start in range(0, len(files), 8)
                   for r in asr.transcribe(files[start:start + 8], layers=layers)]
        out[f"depth-{depth}"] = [alone, batched]
    alone = [asr.transcribe(path, early_exit_threshold=%r) for path in files]
    batched = [r for start in range(0, len(files), 8)
               for r in asr.transcribe(files[start:start + 8], early_exit_threshold=%r)]
    out["early_exit"] = [[[r["text"], r["depth"]] for r in alone], [[r["text"], r["depth"]] for r in batched]]
    asr.profile_latency(audio_seconds=0.5, repeats=1, warmup=0)
    out["budget_depth"] = asr.transcribe(files[0], rtf_budget=max(asr.latency_profile["rtf"].values()))["depth"]
    out["modules"] = sorted(name for name in ("torch", "transformers") if name in sys.modules)
    print(json.dumps(out))
""" % (THRESHOLD, THRESHOLD))


def test_folder_runs_without_torch_with_pytorchs_transcripts_at_every_depth(folder, pytorch_transcripts):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH, str(folder[0])] + [str(f) for f in FILES],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    assert got.pop("modules") == []
    assert got.pop("budget_depth") == 8
    assert set(got) == set(pytorch_transcripts)
    for key, expected in pytorch_transcripts.items():
        alone, batched = got[key]
        assert alone == expected, key
        assert batched == expected, key
    assert len({depth for _, depth in pytorch_transcripts["early_exit"]}) > 1


def test_bad_depths_and_folders_are_clear_errors(folder, tmp_path):
    from hf_prunable_ctc.runtime.onnx_runtime import OnnxPrunableCTC

    asr = OnnxPrunableCTC(folder[0])
    samples = load_audio(FILES[0])
    for options, message in (({"num_layers": 9}, "depth must be in"), ({"layers": [3, 1]}, "increasing"),
                             ({"num_layers": 2, "layers": [1]}, "at most one of"),
                             ({"early_exit_threshold": "high"}, "must be a number"),
                             ({"early_exit_threshold": 0.5, "num_layers": 2}, "at most one of")):
        with pytest.raises(ValueError, match=message):
            asr.transcribe(samples, **options)
    assert asr.transcribe(np.zeros(0, np.float32)) == {"text": "", "depth": 8}
    with pytest.raises(ValueError, match="no runtime.json"):
        OnnxPrunableCTC(tmp_path)


HAND_GIVEN = {"device": "synthetic", "rtf": {str(d): 0.001 * d for d in range(1, 9)}}  # string keys, as from JSON


def test_rtf_budget_measures_the_graphs_once_and_runs_a_depth_of_the_schedule(folder):
    from hf_prunable_ctc.runtime.onnx_runtime import OnnxPrunableCTC

    asr = OnnxPrunableCTC(folder[0], threads=1)
    samples = load_audio(FILES[0])
    assert asr.latency_profile is None
    fastest = asr.transcribe(samples, rtf_budget=1e3)  # measured here, on first use
    profile = asr.latency_profile
    assert sorted(profile["rtf"]) == sorted(asr.pruning_schedule) and fastest["depth"] == 8
    rtf = [profile["rtf"][d] for d in sorted(profile["rtf"])]
    assert all(0 < a <= b for a, b in zip(rtf, rtf[1:])) and profile["rounds"] >= 5
    # A budget at depth 3's measured cost runs depth 3 or a deeper one that measured the same.
    chosen = asr.transcribe(samples, rtf_budget=profile["rtf"][3])
    assert chosen["depth"] in asr.pruning_schedule and chosen["depth"] >= 3
    assert chosen["text"] == asr.transcribe(samples, layers=asr.pruning_schedule[chosen["depth"]])["text"]
    assert asr.latency_profile is profile  # kept: not measured again


def test_profile_latency_times_each_depth_through_the_graphs(folder, monkeypatch):
    from hf_prunable_ctc.runtime.onnx_runtime import OnnxPrunableCTC

    asr = OnnxPrunableCTC(folder[0], threads=1)
    calls = []
    logits = asr.logits
    monkeypatch.setattr(asr, "logits", lambda *args, **kwargs: calls.append(kwargs["layers"]) or logits(*args,
                                                                                                         **kwargs))
    profile = asr.profile_latency(audio_seconds=0.5, repeats=2, warmup=1, retries=0)
    assert calls.count(asr.pruning_schedule[5]) == 3 and len(calls) == 3 * 8
    assert profile["audio_seconds"] == 0.5 and profile["rounds"] == 2 and "threads=1" in profile["device"]
    assert set(profile["measured_rtf"]) == set(profile["rtf"]) == set(range(1, 9))


@pytest.mark.parametrize("budget, expected", [(0.0055, 5), (0.008, 8), (1.0, 8), (0.001, 1)])
def test_rtf_budget_with_a_hand_given_profile_runs_the_depth_it_implies(folder, monkeypatch, budget, expected):
    from hf_prunable_ctc.runtime.onnx_runtime import OnnxPrunableCTC

    asr = OnnxPrunableCTC(folder[0], latency_profile=HAND_GIVEN)
    monkeypatch.setattr(asr, "profile_latency", lambda *args, **kwargs: pytest.fail("a given profile is measured"))
    samples = load_audio(FILES[1])
    result = asr.transcribe(samples, rtf_budget=budget)
    assert result == asr.transcribe(samples, layers=asr.pruning_schedule[expected])
    assert result["depth"] == expected
    [batched] = asr.transcribe([samples], rtf_budget=budget)
    assert batched == result


def test_rtf_budget_below_the_cheapest_depth_or_combined_or_not_positive_is_an_error(folder):
    from hf_prunable_ctc.runtime.onnx_runtime import OnnxPrunableCTC

    asr = OnnxPrunableCTC(folder[0])
    asr.latency_profile = HAND_GIVEN  # the attribute serves as well as the constructor argument
    samples = load_audio(FILES[0])
    with pytest.raises(ValueError, match=r"no depth meets RTF 0.0005: the cheapest, 1 layer\(s\), takes 0.001"):
        asr.transcribe(samples, rtf_budget=0.0005)
    for other in ({"num_layers": 2}, {"layers": [1, 2]}, {"early_exit_threshold": 0.5}):
        with pytest.raises(ValueError, match=r"at most one of num_layers, layers, rtf_budget, early_exit_threshold"):
            asr.transcribe(samples, rtf_budget=0.1, **other)
    for budget in (0, -1.0, float("nan"), True, "fast"):
        with pytest.raises(ValueError, match="must be > 0"):
            asr.transcribe(samples, rtf_budget=budget)
    asr.latency_profile = {"rtf": {1: 0.001, 2: 0.002}}
    with pytest.raises(ValueError, match=r"no timing for depths \[3, 4, 5, 6, 7, 8\]"):
        asr.transcribe(samples, rtf_budget=1.0)


# Beam search with an n-gram LM, on the device.

def test_beam_search_with_and_without_an_lm_gives_the_pipelines_text(folder, tmp_path):
    pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    from test_decoding_lm import TINY_ARPA

    from hf_prunable_ctc.decoding.beam_decoder import build_beam_decoder
    from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline
    from hf_prunable_ctc.runtime.onnx_runtime import OnnxPrunableCTC

    arpa = tmp_path / "tiny.arpa"
    arpa.write_text(TINY_ARPA)
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    files = [str(path) for path in FILES[:5]]
    for lm in (arpa, None):
        asr = OnnxPrunableCTC(folder[0], lm=lm)
        pipe = prunable_asr_pipeline(model=str(MODEL), decoder=build_beam_decoder(tokenizer, lm))
        for depth in (2, 8):
            expected = [pipe(path, num_layers=depth, decoder_kwargs={"beam_width": 16})["text"] for path in files]
            got = asr.transcribe(files, num_layers=depth, beam_width=16)
            assert [result["text"] for result in got] == expected, (lm, depth)
    greedy = OnnxPrunableCTC(folder[0]).transcribe(files[0], num_layers=2)["text"]
    asr = OnnxPrunableCTC(folder[0])
    asr.transcribe(files[0], beam_width=4)
    assert asr.transcribe(files[0], num_layers=2)["text"] == greedy  # a beam in one call leaves the next greedy
    with pytest.raises(ValueError, match="beam_width must be a whole number >= 1"):
        asr.transcribe(files[0], beam_width=0)
    with pytest.raises(ValueError, match="no language model at"):
        OnnxPrunableCTC(folder[0], lm=tmp_path / "missing.arpa")


def test_transcribe_lm_on_an_onnx_folder_prints_the_model_folders_text(folder, tmp_path, capsys):
    pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    from test_decoding_lm import TINY_ARPA

    from hf_prunable_ctc.cli import main

    arpa = tmp_path / "tiny.arpa"
    arpa.write_text(TINY_ARPA)
    files = [str(path) for path in FILES[:3]]
    lines = {}
    for target in (str(MODEL), str(folder[0])):
        assert main(["transcribe", target, *files, "--lm", str(arpa), "--beam_width", "8", "--depth", "4",
                     "--json"]) == 0
        lines[target] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[str(MODEL)] == lines[str(folder[0])] and len(lines[str(MODEL)]) == 3
    assert main(["transcribe", str(folder[0]), files[0], "--beam_width", "8"]) == 2
    assert "--beam_width needs --lm" in capsys.readouterr().err
