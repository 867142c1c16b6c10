"""The published reference model in model_cards/ does what its card says, on voices it never heard."""

import json
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer, pipeline

from hf_prunable_ctc import PrunableCTCForCTC
from hf_prunable_ctc.data.audio import load_audio
from hf_prunable_ctc.data.speech_data import collated_batches, load_prepared_split
from hf_prunable_ctc.evaluation.depth_evaluation import subnetwork_transcripts
from hf_prunable_ctc.evaluation.metrics import character_error_rate, utterance_word_errors, word_error_rate
from hf_prunable_ctc.evaluation.significance import paired_bootstrap

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "model_cards" / "prunable-ctc-small-synth"
SUBSET = ROOT / "data" / "reference_test_subset"
# What training/evaluate_depths.py measured on SUBSET (the first 80 of the card's 1,182 `test` utterances):
#   python training/evaluate_depths.py --model model_cards/prunable-ctc-small-synth \
#       --data_dir data/reference_test_subset --split test --strategies top --rtf_utterances 0 --output_dir OUT
#   cp OUT/depth_report.json model_cards/prunable-ctc-small-synth/test_subset_depth_report.json
SUBSET_REPORT = MODEL / "test_subset_depth_report.json"


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


@pytest.fixture(scope="module")
def transcripts(measured):
    """{depth: (references, predictions)} on the bundled subset, for every depth of the stored schedule."""
    model, tokenizer, batches = measured
    return {depth: subnetwork_transcripts(model, batches, tokenizer, layers)
            for depth, layers in model.pruning_schedule().items()}


def test_the_bundled_subset_gives_the_recorded_results_at_every_depth(transcripts):
    """Greedy decoding on CPU repeats itself: the model gives the recorded WER and CER at every depth, to one word
    and one character (another CPU's float rounding can flip the odd frame's argmax; a change to the features or
    the model moves many more)."""
    report = json.loads(SUBSET_REPORT.read_text())
    assert report["utterances"] == 80 and report["dataset"] == "data/reference_test_subset"
    recorded = {r["depth"]: r for r in report["records"] if r["strategy"] == "top"}
    assert sorted(recorded) == sorted(transcripts)
    for depth, (references, predictions) in transcripts.items():
        words, characters = sum(len(r.split()) for r in references), sum(len(r) for r in references)
        # The record rounds to 0.01 points.
        assert 100 * word_error_rate(references, predictions) == pytest.approx(
            recorded[depth]["wer"], abs=100 / words + 0.005), depth
        assert 100 * character_error_rate(references, predictions) == pytest.approx(
            recorded[depth]["cer"], abs=100 / characters + 0.005), depth


def test_the_cards_results_lie_in_the_subsets_bootstrap_interval(transcripts):
    """The card's WER on all 1,182 `test` utterances lies in the 99% bootstrap interval (over utterances) of the
    WER on the 80 bundled ones, at every depth: the card's numbers are this model's."""
    card = card_results("wer")
    for depth, (references, predictions) in transcripts.items():
        errors, words = utterance_word_errors(references, predictions)
        # The interval of WER(model) - WER(no errors), i.e. of the model's WER.
        low, high = paired_bootstrap(errors, np.zeros_like(errors), words, confidence=0.99)["difference_ci"]
        assert low <= card[depth] <= high, (depth, card[depth], (low, high))


def test_pipeline_and_auto_model_load_the_folder():
    import csv

    rows = list(csv.DictReader(open(SUBSET / "test" / "metadata.csv")))[:5]
    asr = pipeline("automatic-speech-recognition", model=str(MODEL), trust_remote_code=True, device="cpu")
    predictions = [asr(load_audio(SUBSET / "test" / r["file_name"]))["text"] for r in rows]
    references = [r["transcription"] for r in rows]
    assert character_error_rate(references, predictions) < 0.5  # it transcribes, not guesses
    assert type(AutoModel.from_pretrained(MODEL, trust_remote_code=True)).__name__ == "PrunableCTCModel"
