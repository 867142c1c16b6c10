"""WER/CER with jiwer (known values, empty references), CTC decoding for the Trainer, local evaluate modules."""

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from hf_prunable_ctc.data.vocabulary import DEFAULT_VOCABULARY, make_tokenizer
from hf_prunable_ctc.evaluation.metrics import (
    argmax_logits,
    character_error_rate,
    compute_ctc_metrics,
    make_compute_metrics,
    word_error_rate,
)


def test_known_word_error_rates():
    assert word_error_rate(["THE CAT SAT DOWN"], ["THE BAT SAT DOWN"]) == 0.25  # one substitution in 4 words
    assert word_error_rate(["THE CAT SAT DOWN"], ["THE CAT SAT DOWN"]) == 0.0
    assert word_error_rate(["A B"], ["A B C D"]) == 1.0  # two insertions over two words
    assert word_error_rate(["A B C"], [""]) == 1.0  # all deleted
    # Corpus level: (1 substitution + 1 deletion) / (4 + 2) words, not the mean of per-utterance rates.
    assert word_error_rate(["A B C D", "E F"], ["A X C D", "E"]) == pytest.approx(2 / 6)


def test_known_character_error_rates():
    assert character_error_rate(["ABCD"], ["ABXD"]) == 0.25
    assert character_error_rate(["AB CD"], ["AB CD"]) == 0.0
    assert character_error_rate(["AB CD"], ["ABCD"]) == pytest.approx(1 / 5)  # the space is a character
    assert character_error_rate(["ABCD", "EF"], ["ABD", "EFG"]) == pytest.approx(2 / 6)


def test_empty_references():
    # An empty reference adds no words; its prediction's words are insertions.
    assert word_error_rate(["A B", ""], ["A B", "C"]) == 0.5
    assert word_error_rate(["A B", " "], ["A B", ""]) == 0.0
    assert character_error_rate(["AB", ""], ["AB", "XY"]) == 1.0
    # Nothing to recognise at all: 0.0 when nothing was said, else 1.0.
    assert word_error_rate([""], [""]) == 0.0
    assert word_error_rate(["", ""], ["A B", "C"]) == 1.0
    assert character_error_rate([""], ["ABC"]) == 1.0
    assert word_error_rate([], []) == 0.0
    with pytest.raises(ValueError):
        word_error_rate(["A"], ["A", "B"])


def _ids(text):
    return [DEFAULT_VOCABULARY["|" if c == " " else c] for c in text]


def test_compute_ctc_metrics_decodes_argmax_ids_and_labels():
    tokenizer = make_tokenizer()
    blank = tokenizer.pad_token_id
    # "HELLO WORLD" as CTC frames (repeats, blanks, the double L separated by a blank), then padding by the
    # Trainer (-100) to the longest prediction.
    frames = [blank] + _ids("HH") + [blank] + _ids("EL") + [blank] + _ids("LOO||W") + [blank] + _ids("ORLD") + [blank]
    wrong = _ids("HELP") + [blank] + _ids("|WORLD")  # "HELP WORLD": 1 of 2 words, 1 of 11 characters wrong
    pred_ids = np.full((2, len(frames)), -100)
    pred_ids[0] = frames
    pred_ids[1, : len(wrong)] = wrong
    label_ids = np.full((2, 11), -100)
    label_ids[0] = label_ids[1] = _ids("HELLO WORLD")
    label_before = label_ids.copy()
    metrics = compute_ctc_metrics(pred_ids, label_ids, tokenizer)
    assert metrics == {"wer": pytest.approx(1 / 4), "cer": pytest.approx(2 / 22)}  # HELP vs HELLO: 1 sub + 1 del
    np.testing.assert_array_equal(label_ids, label_before)  # inputs are not modified

    # A label with padding and a repeated letter is decoded letter by letter.
    label_ids = np.array([_ids("OK") + [-100] * 3, _ids("TOO |")])
    pred_ids = np.array([_ids("OK") + [blank] * 3, _ids("TO") + [blank] + _ids("O|")])
    assert compute_ctc_metrics(pred_ids, label_ids, tokenizer) == {"wer": 0.0, "cer": 0.0}


def test_trainer_hooks_argmax_then_metrics():
    tokenizer = make_tokenizer()
    target = _ids("AB") + [0] + _ids("|C")
    logits = torch.full((1, len(target), len(DEFAULT_VOCABULARY)), -5.0)
    logits[0, torch.arange(len(target)), torch.tensor(target)] = 5.0
    labels = torch.tensor([_ids("AB C")])
    pred_ids = argmax_logits((logits, "other outputs"), labels)
    assert pred_ids.tolist() == [target]
    assert torch.equal(argmax_logits(logits, labels), pred_ids)
    metrics = make_compute_metrics(tokenizer)(EvalPrediction(predictions=pred_ids.numpy(), label_ids=labels.numpy()))
    assert metrics == {"wer": 0.0, "cer": 0.0}
    # compute_ctc_metrics also accepts the logits themselves.
    assert compute_ctc_metrics(logits.numpy(), labels.numpy(), tokenizer) == {"wer": 0.0, "cer": 0.0}


def test_local_evaluate_modules_load_offline():
    evaluate = pytest.importorskip("evaluate")
    from hf_prunable_ctc.evaluation.evaluate_metrics import metric_path

    wer = evaluate.load(metric_path("wer"))
    cer = evaluate.load(metric_path("cer"))
    assert wer.compute(predictions=["THE BAT SAT DOWN"], references=["THE CAT SAT DOWN"]) == 0.25
    assert cer.compute(predictions=["ABXD"], references=["ABCD"]) == 0.25
    wer.add_batch(predictions=["A B", "C"], references=["A X", "C"])
    assert wer.compute() == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        metric_path("bleu")
