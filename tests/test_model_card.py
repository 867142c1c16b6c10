"""Model cards with per-depth results, and the dry-run publish folder."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from conftest import tiny_model
from hf_prunable_ctc.data.features import make_feature_extractor, save_processor
from hf_prunable_ctc.data.vocabulary import make_tokenizer
from hf_prunable_ctc.cli import main
from hf_prunable_ctc import PrunableCTCConfig
from hf_prunable_ctc.hub.model_card import ENCODER_NAMES, CardInfoError, build_model_card, parameter_count
from hf_prunable_ctc.hub.publish import publish

CARD = dict(model_name="prunable-ctc-toy", dataset_name="Toy synthetic speech", dataset_type="toy-synthetic",
            training_command="python training/train.py toy.json", summary="A toy.",
            limitations="Random weights.")


@pytest.fixture
def measured_model(tmp_path):
    """A saved model with its processor and a depth report as training/evaluate_depths.py writes it."""
    tokenizer = make_tokenizer()
    model = tiny_model(num_mel_bins=80, vocab_size=len(tokenizer), interctc_layers=[1, 2, 3], interctc_weight=0.5)
    path = tmp_path / "model"
    model.save_pretrained(path)
    save_processor(make_feature_extractor(), tokenizer, path)
    records = [{"strategy": s, "depth": d, "layers": layers, "wer": 10.0 * (5 - d) + (s == "uniform"),
                "cer": 4.0 * (5 - d), "parameters": model.count_parameters(layers=layers),
                "rtf_batch1": 0.001 * d, "rtf_batch8": 0.0005 * d}
               for s in ("top", "uniform") for d, layers in model.pruning_schedule(s).items()]
    (path / "depth_report.json").write_text(json.dumps({
        "dataset": "toy", "split": "test", "utterances": 10, "hardware": "CPU (test)",
        "rtf": {"definition": "x", "utterances": 3, "batched_size": 8}, "records": records}))
    return path


def test_card_has_one_wer_and_cer_per_depth_and_round_trips(measured_model, tmp_path):
    card = build_model_card(str(measured_model), **CARD)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    results = loaded.data.eval_results
    by_metric = {(r.metric_type, r.metric_config): r.metric_value for r in results}
    assert len(results) == 8
    for depth in range(1, 5):
        assert by_metric[("wer", f"depth-{depth}")] == 10.0 * (5 - depth)  # the "top" schedule, not "uniform"
        assert by_metric[("cer", f"depth-{depth}")] == 4.0 * (5 - depth)
    assert {r.dataset_split for r in results} == {"test"}
    assert loaded.data.pipeline_tag == "automatic-speech-recognition" and loaded.data.library_name == "transformers"
    assert "layer-pruning" in loaded.data.tags
    text = loaded.text
    assert "| 2 | 1,2 | 30.0 | 12.0 |" in text  # the per-depth table
    assert "trust_remote_code=True" in text and "prune_to" in text and "Lee, Jaesong" in text


def test_card_follows_the_stored_schedule(measured_model):
    config_path = measured_model / "config.json"
    config = json.loads(config_path.read_text())
    config["pruning_schedule"] = {"2": [2, 4]}
    config_path.write_text(json.dumps(config))
    card = build_model_card(str(measured_model), **CARD)
    wer = {r.metric_config: r.metric_value for r in card.data.eval_results if r.metric_type == "wer"}
    assert wer["depth-2"] == 31.0  # uniform's depth-2 row (layers 2, 4)
    assert wer["depth-1"] == 40.0  # depths without a stored entry fall back to top


def test_missing_results_is_a_clear_error(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="evaluate_depths"):
        build_model_card(str(tmp_path), **CARD)


def test_dry_run_publish_writes_a_loadable_folder(measured_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "repo"
    result = publish(str(measured_model), str(out), "someone/prunable-ctc-toy", CARD)
    assert not result["uploaded"]
    assert {"README.md", "model.safetensors", "config.json", "modeling_prunable_ctc.py", "vocab.json",
            "preprocessor_config.json", "depth_report.json"} <= set(result["files"])
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from transformers import AutoModelForCTC, pipeline
        model = AutoModelForCTC.from_pretrained({str(out)!r}, trust_remote_code=True)
        assert "hf_prunable_ctc" not in sys.modules
        asr = pipeline("automatic-speech-recognition", model={str(out)!r}, trust_remote_code=True)
        text = asr(np.zeros(16000, dtype=np.float32) + 0.01 * np.random.default_rng(0).standard_normal(16000))
        assert isinstance(text["text"], str)
        print("OK", type(model).__name__)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "OK PrunableCTCForCTC" in run.stdout


def test_pruned_variant_has_its_own_smaller_card(measured_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    full = publish(str(measured_model), str(tmp_path / "full"), "someone/toy", CARD)
    pruned = publish(str(measured_model), str(tmp_path / "d2"), "someone/toy-2-layers", CARD, depth=2)
    assert pruned["files"]["model.safetensors"] < full["files"]["model.safetensors"]
    card = ModelCard.load(tmp_path / "d2" / "README.md")
    depths = sorted({r.metric_args["num_layers"] for r in card.data.eval_results})
    assert depths == [1, 2]
    assert json.loads((tmp_path / "d2" / "config.json").read_text())["num_hidden_layers"] == 2


def test_card_template_is_package_data():
    """The template is read from inside the package (a wheel carries it), not from the checkout; .ci/run also
    publishes from a non-editable install in a fresh venv."""
    import tomllib
    from pathlib import Path

    import hf_prunable_ctc
    from hf_prunable_ctc.hub.model_card import TEMPLATE

    package = Path(hf_prunable_ctc.__file__).parent
    assert Path(str(TEMPLATE)).resolve().parent.parent == package.resolve()
    assert "{{ depth_table }}" in TEMPLATE.read_text()
    pyproject = tomllib.loads((package.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["hf_prunable_ctc"]
    assert any(Path(str(TEMPLATE)).relative_to(package).match(p) for p in patterns)


def test_card_shows_listening_conditions_when_measured(measured_model):
    assert "Listening conditions" not in build_model_card(str(measured_model), **CARD).text
    (measured_model / "conditions.json").write_text(json.dumps({
        "settings": {"silence_seconds": 1.0, "noise_dbfs": -65.0, "long_form_seconds": 60.0, "chunk_length_s": 10.0,
                     "pause_seconds": [0.3, 1.0]},
        "utterances": 10, "split": "test", "long_form_recordings": 1, "long_form_minutes": 0.5,
        "records": [{"condition": c, "depth": d, "wer": w + d, "cer": 1.0}
                    for d in (4, 2) for c, w in (("clean", 10.0), ("silence", 13.0), ("long_form", 11.5))],
        "cost": {"4": {"silence": 3.0, "long_form": 1.5}, "2": {"silence": 3.0, "long_form": 1.5}}}))
    text = build_model_card(str(measured_model), **CARD).text
    assert "### Listening conditions" in text and "10 utterances of the `test` split" in text
    assert "| 4 | 14.0 (1.0) | 17.0 (1.0) | 15.5 (1.0) | +3.0 | +1.5 |" in text


def test_card_shows_the_whisper_comparison_when_measured(measured_model, tmp_path, monkeypatch):
    assert "against Whisper" not in build_model_card(str(measured_model), **CARD).text
    timing = lambda s: {"min_s": s, "median_s": s + 0.01, "all_s": [s, s + 0.01]}  # noqa: E731
    (measured_model / "whisper_comparison.json").write_text(json.dumps({
        "depths": [1, 2], "whisper_name": "Whisper tiny.en", "real_speech_source": "2 recordings of people",
        "wer": {"real speech": {"utterances": 2, "per_depth": {"1": 0.5, "2": 0.25}}},
        "whisper_wer": {"real speech": 0.125},
        "latency_10s": {"audio_seconds": 10.0, "rounds": 3, "recordings": ["a"], "CTC 1 layers": timing(0.02),
                        "CTC 2 layers": timing(0.04), "whisper_greedy": timing(0.6)},
        "machine": {"threads": 2, "processor": "x86_64"}}))
    text = build_model_card(str(measured_model), **CARD).text
    assert "### Real speech, and against Whisper itself" in text and "2 recordings of people" in text
    assert "| real speech | 2 | 50.0% | 25.0% | 12.5% |" in text
    assert "| CTC 2 layers | 0.040 | 0.050 | 15.0x |" in text
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = publish(str(measured_model), str(tmp_path / "repo"), "someone/prunable-ctc-toy", CARD)
    assert "whisper_comparison.json" in result["files"]
    assert "| real speech | 2 | 50.0% | 25.0% | 12.5% |" in (tmp_path / "repo" / "README.md").read_text()


def test_card_has_every_split_per_depth_in_table_and_model_index(measured_model, tmp_path):
    report = json.loads((measured_model / "depth_report.json").read_text())
    extra = dict(report, split="test_unseen_engine", rtf=None,
                 records=[{k: v for k, v in r.items() if not k.startswith("rtf")} | {"wer": r["wer"] + 30}
                          for r in report["records"]])
    (measured_model / "depth_report_test_unseen_engine.json").write_text(json.dumps(extra))
    card = build_model_card(str(measured_model), **CARD)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    by_split = {}
    for r in loaded.data.eval_results:
        by_split.setdefault(r.dataset_split, {})[(r.metric_type, r.metric_config)] = r.metric_value
    assert set(by_split) == {"test", "test_unseen_engine"} and len(by_split["test_unseen_engine"]) == 8
    assert by_split["test_unseen_engine"][("wer", "depth-2")] == 60.0 and by_split["test"][("wer", "depth-2")] == 30.0
    text = loaded.text
    assert "| layers kept | which | test WER % | test CER % | test_unseen_engine WER % |" in text
    assert "| 2 | 1,2 | 30.0 | 12.0 | 60.0 | 12.0 |" in text and "and on `test_unseen_engine`" in text


def test_publish_carries_the_further_splits_and_conditions_with_the_model(measured_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    report = json.loads((measured_model / "depth_report.json").read_text())
    extra = dict(report, split="test_unseen_text")
    (measured_model / "depth_report_test_unseen_text.json").write_text(json.dumps(extra))
    (measured_model / "depth_report_test_unseen_text.md").write_text("table")
    (measured_model / "conditions.json").write_text(json.dumps({
        "settings": {"silence_seconds": 1.0, "noise_dbfs": -65.0, "long_form_seconds": 60.0, "chunk_length_s": 10.0,
                     "pause_seconds": [0.3, 1.0]}, "utterances": 10, "long_form_recordings": 1,
        "long_form_minutes": 0.5, "records": [{"condition": "clean", "depth": 4, "wer": 1.0, "cer": 1.0}],
        "cost": {"4": {}}}))
    result = publish(str(measured_model), str(tmp_path / "repo"), "someone/prunable-ctc-toy", CARD)
    assert {"depth_report_test_unseen_text.json", "depth_report_test_unseen_text.md", "conditions.json"} <= set(
        result["files"])
    card = (tmp_path / "repo" / "README.md").read_text()
    assert "test_unseen_text WER %" in card and "### Listening conditions" in card


ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "model_cards" / "prunable-ctc-small-synth"
REFERENCE_CARD_INFO = ROOT / "training" / "cards" / "reference.json"


def test_card_states_the_architecture_of_the_model(measured_model):
    config = PrunableCTCConfig.from_pretrained(measured_model)
    parameters = parameter_count(config)
    assert parameters == tiny_model(num_mel_bins=80, vocab_size=config.vocab_size).count_parameters()
    text = " ".join(build_model_card(str(measured_model), **CARD).text.split())
    encoder = ENCODER_NAMES[config.encoder_type]
    assert (f"this is a {encoder} CTC model with 4 encoder layers (hidden size 32, 4 attention heads, "
            f"{parameters / 1e6:.1f} M parameters), trained with intermediate CTC (at layers 1, 2, 3, weight 0.5)"
            in text)


def test_card_texts_name_the_models_fields_and_results(measured_model):
    card = dict(CARD,
                summary="A {{ num_layers }}-layer {{ encoder }}, {{ parameters }} parameters, d={{ hidden_size }}.",
                limitations="At {{ num_layers }} layers: {{ results.test[num_layers].wer }}% WER on `test`.")
    text = build_model_card(str(measured_model), **card).text
    config = PrunableCTCConfig.from_pretrained(measured_model)
    encoder = ENCODER_NAMES[config.encoder_type]
    assert f"A 4-layer {encoder}, {parameter_count(config) / 1e6:.1f} M parameters, d=32." in text
    assert "At 4 layers: 10.0% WER on `test`." in text  # the depth report's full-depth row


@pytest.mark.parametrize("field, text, message", [
    ("summary", "A small Conformer CTC speech recognizer (8 layers, 4.2 M parameters, characters).", "'8 layers'"),
    ("summary", "A 4-layer model with 4.2 M parameters.", "'4.2 M parameters'"),
    ("training", "Model: d=144, 4 heads, FFN 64, conv kernel 5.", "'d=144'"),
    ("training", "Model: d=32, 8 heads.", "'8 heads'"),
    ("training", "Model: FFN 576.", "'FFN 576'"),
    ("training", "Model: conv kernel 15.", "'conv kernel 15'"),
    ("limitations", "At 8 layers it is far from good.", "'8 layers'"),
    ("summary", "Results for {{ results.test_unseen_engine[4].wer }}% WER.", "test_unseen_engine"),
    ("summary", "{{ num_layer }} layers.", "num_layer"),
])
def test_card_information_that_contradicts_the_model_is_refused(measured_model, field, text, message):
    with pytest.raises(CardInfoError, match=message):
        build_model_card(str(measured_model), **dict(CARD, **{field: text}))


def test_the_other_encoder_type_is_refused_but_the_library_name_is_not(measured_model):
    encoder_type = PrunableCTCConfig.from_pretrained(measured_model).encoder_type
    other = "Transformer" if encoder_type == "conformer" else "Conformer"
    with pytest.raises(CardInfoError, match=f"'{other}'"):
        build_model_card(str(measured_model), **dict(CARD, summary=f"A small {other} CTC model."))
    assert "Transformers model" in build_model_card(str(measured_model), **dict(
        CARD, summary="A Hugging Face Transformers model.")).text


def test_the_reference_card_information_does_not_describe_another_model(measured_model, tmp_path, monkeypatch,
                                                                        capsys):
    """The published model's card information names its test_unseen_engine results and its own layers: for a
    model without them publish refuses, writing nothing."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "repo"
    code = main(["publish", str(measured_model), str(out), "--repo_id", "you/x", "--card_info",
                 str(REFERENCE_CARD_INFO), "--dry_run"])
    assert code == 2 and not out.exists()
    assert "card information 'limitations'" in capsys.readouterr().err


def test_the_reference_card_is_what_publish_renders():
    """model_cards/prunable-ctc-small-synth/README.md is regenerated, not edited: the model, its reports and
    training/cards/reference.json render it exactly."""
    card_info = json.loads(REFERENCE_CARD_INFO.read_text())
    card = build_model_card(str(REFERENCE), repo_id="you/prunable-ctc-small-synth", **card_info)
    assert str(card) == (REFERENCE / "README.md").read_text()


def test_card_states_how_the_depths_were_trained(measured_model):
    config = PrunableCTCConfig.from_pretrained(measured_model)
    paper = " ".join(build_model_card(str(measured_model), **CARD).text.split())
    assert "sandwich" not in paper and "self-distillation" not in paper
    config.interctc_weights, config.depth_sampling, config.sandwich_weight = "inverse_depth", "sandwich", 2.0
    config = PrunableCTCConfig(**config.to_dict())  # resolves the named weights against the layers
    config.save_pretrained(measured_model)
    text = " ".join(build_model_card(str(measured_model), **CARD).text.split())
    assert ("stochastic depth (p_max = 0.0, linear), exit weights 1, 0.5, 0.33, and sandwich sampling (each step "
            "also trains the 1-layer sub-model and 1 random depth, their loss weighted 2.0), so its depth can be cut"
            in text)
