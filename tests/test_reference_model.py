"""The published reference model in model_cards/ does what its card says, on voices it never heard."""

from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer, pipeline

from hf_prunable_ctc import PrunableCTCForCTC
from hf_prunable_ctc.data.audio import load_audio
from hf_prunable_ctc.data.speech_data import collated_batches, load_prepared_split
from hf_prunable_ctc.evaluation.depth_evaluation import subnetwork_error_rates
from hf_prunable_ctc.evaluation.metrics import character_error_rate

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "model_cards" / "prunable-ctc-small-synth"
SUBSET = ROOT / "data" / "reference_test_subset"
# 80 of the card's test utterances: sampling error alone moves WER by several points.
TOLERANCE_POINTS = 10.0


@pytest.fixture(scope="module")
def measured():
    model = PrunableCTCForCTC.from_pretrained(MODEL).eval()
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    extractor = AutoFeatureExtractor.from_pretrained(MODEL)
    dataset, report = load_prepared_split("audiofolder", "test", extractor, tokenizer, data_dir=str(SUBSET))
    assert report.kept == 80
    return model, tokenizer, collated_batches(dataset, extractor, tokenizer, batch_size=16)


def card_results(metric, split="test"):
    """{depth: value} of one metric on one split (the card's model-index holds an entry per split and depth)."""
    card = ModelCard.load(MODEL / "README.md")
    return {r.metric_args["num_layers"]: r.metric_value for r in card.data.eval_results
            if r.metric_type == metric and r.dataset_split == split}


@pytest.mark.parametrize("split", ["test", "test_unseen_engine", "test_unseen_text"])
def test_card_lists_every_evaluated_depth_on_every_split(split):
    assert sorted(card_results("wer", split)) == list(range(1, 9))
    assert sorted(card_results("cer", split)) == list(range(1, 9))


def test_card_measured_the_schedule_the_model_states():
    """The published model states which layers prune_to(k) keeps, and its card measured exactly those (every split)."""
    results = ModelCard.load(MODEL / "README.md").data.eval_results
    stated = {int(k): v for k, v in PrunableCTCForCTC.config_class.from_pretrained(MODEL).pruning_schedule.items()}
    assert {r.metric_args["num_layers"] for r in results} == set(stated)
    # Entry by entry: a dict keyed by depth would let one split's entries hide another's.
    assert all(r.metric_args["layers"] == stated[r.metric_args["num_layers"]] for r in results)


@pytest.mark.parametrize("depth", [2, 4, 8])
def test_wer_on_unseen_voices_matches_the_card(measured, depth):
    model, tokenizer, batches = measured
    rates = subnetwork_error_rates(model, batches, tokenizer, model.pruning_schedule()[depth])
    assert 100 * rates["wer"] == pytest.approx(card_results("wer")[depth], abs=TOLERANCE_POINTS)
    assert 100 * rates["cer"] == pytest.approx(card_results("cer")[depth], abs=TOLERANCE_POINTS)


def test_pipeline_and_auto_model_load_the_folder():
    import csv

    rows = list(csv.DictReader(open(SUBSET / "test" / "metadata.csv")))[:5]
    asr = pipeline("automatic-speech-recognition", model=str(MODEL), trust_remote_code=True, device="cpu")
    predictions = [asr(load_audio(SUBSET / "test" / r["file_name"]))["text"] for r in rows]
    references = [r["transcription"] for r in rows]
    assert character_error_rate(references, predictions) < 0.5  # it transcribes, not guesses
    assert type(AutoModel.from_pretrained(MODEL, trust_remote_code=True)).__name__ == "PrunableCTCModel"
