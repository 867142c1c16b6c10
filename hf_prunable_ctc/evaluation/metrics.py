"""Word and character error rates computed offline with jiwer, and CTC decoding for the `Trainer`.

The Hub's `evaluate` "wer"/"cer" modules are thin wrappers over jiwer, but `evaluate.load("wer")` downloads them;
these functions compute the same corpus-level rates locally (and `hf_prunable_ctc/evaluation/evaluate_metrics/`
wraps them as local `evaluate` modules).

Rates are corpus-level fractions: total edits (substitutions + deletions + insertions) over total reference
words/characters, so 0.25 means 25% and a rate can exceed 1.0 when the model inserts a lot. Texts are compared as
given (no case folding or punctuation removal: normalise before training). Empty references, which jiwer 3
rejects and jiwer 4 scores inconsistently, are handled here: an empty reference adds nothing to the denominator and
each word/character of its prediction counts as one insertion; when *all* references are empty the rate is 0.0 if
all predictions are empty too, else 1.0 (kept a bounded fraction rather than infinity, so logs stay valid JSON).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from transformers import EvalPrediction, Wav2Vec2CTCTokenizer

LABEL_PAD_ID = -100


def word_error_rate(references: Sequence[str], predictions: Sequence[str]) -> float:
    """Corpus-level WER of `predictions` against `references` (same length, one string per utterance) as a
    fraction; words are separated by spaces. See the module docstring for empty references."""
    import jiwer  # a training-time dependency, not needed to run the model

    return _error_rate(references, predictions, jiwer.process_words, count_units=lambda text: len(text.split()))


def character_error_rate(references: Sequence[str], predictions: Sequence[str]) -> float:
    """Corpus-level CER of `predictions` against `references` as a fraction; spaces inside a text count as
    characters, leading/trailing ones do not. See the module docstring for empty references."""
    import jiwer

    return _error_rate(references, predictions, jiwer.process_characters, count_units=lambda text: len(text.strip()))


def compute_ctc_metrics(pred_ids: Any, label_ids: Any, tokenizer: Wav2Vec2CTCTokenizer) -> dict[str, float]:
    """WER and CER of greedy CTC output, as `run_speech_recognition_ctc.py` computes them.

    Args:
        pred_ids: ``(B, T)`` argmax ids per output frame (or ``(B, T, V)`` logits, argmaxed here); -100, which the
            `Trainer` uses to pad predictions of different lengths, is read as the blank.
        label_ids: ``(B, U)`` label ids padded with -100.
        tokenizer: the CTC tokenizer; predictions are decoded with repeats collapsed and blanks dropped, labels with
            ``group_tokens=False`` (a label "LL" is two letters, not one repeated frame).

    Returns:
        ``{"wer": float, "cer": float}`` as fractions.
    """
    references, predictions = decode_ctc(pred_ids, label_ids, tokenizer)
    return {
        "wer": word_error_rate(references, predictions),
        "cer": character_error_rate(references, predictions),
    }


def decode_ctc(pred_ids: Any, label_ids: Any, tokenizer: Wav2Vec2CTCTokenizer) -> tuple[list[str], list[str]]:
    """`(references, predictions)` of greedy CTC ids and padded labels, as `compute_ctc_metrics` takes them."""
    pred_ids = np.asarray(pred_ids)
    if pred_ids.ndim == 3:
        pred_ids = pred_ids.argmax(axis=-1)
    pad_id = tokenizer.pad_token_id
    # Copies, not in-place edits: the Trainer's arrays may be reused by other metric functions.
    pred_ids = np.where(pred_ids == LABEL_PAD_ID, pad_id, pred_ids)
    label_ids = np.where(np.asarray(label_ids) == LABEL_PAD_ID, pad_id, label_ids)
    # skip_special_tokens stays False: True would drop blanks *before* collapsing repeats and merge "L <pad> L".
    predictions = tokenizer.batch_decode(pred_ids.tolist())
    references = tokenizer.batch_decode(label_ids.tolist(), group_tokens=False)
    return references, predictions


def argmax_logits(logits: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor) -> torch.Tensor:
    """`Trainer(preprocess_logits_for_metrics=...)`: keep ``(B, T)`` argmax ids instead of ``(B, T, V)`` logits, so
    evaluation does not accumulate every logit. A tuple of outputs (extra model outputs) uses its first element."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits.argmax(dim=-1)


def make_compute_metrics(tokenizer: Wav2Vec2CTCTokenizer) -> Callable[[EvalPrediction], dict[str, float]]:
    """`Trainer(compute_metrics=...)` reporting WER and CER.

    Pair it with ``preprocess_logits_for_metrics=argmax_logits`` so that predictions arrive as ids."""

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        predictions = eval_prediction.predictions
        if isinstance(predictions, (tuple, list)):
            predictions = predictions[0]
        return compute_ctc_metrics(predictions, eval_prediction.label_ids, tokenizer)

    return compute_metrics


def utterance_word_errors(references: Sequence[str], predictions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per utterance: word edits (substitutions + deletions + insertions) and reference words, int arrays ``(n,)``;
    their sums give `word_error_rate` (with its handling of empty references)."""
    import jiwer

    return _utterance_edits(references, predictions, jiwer.process_words, lambda text: len(text.split()))


def _utterance_edits(references: Sequence[str], predictions: Sequence[str],
                     align: Callable[[list[str], list[str]], Any], count_units: Callable[[str], int]
                     ) -> tuple[np.ndarray, np.ndarray]:
    # `align` is jiwer.process_words/process_characters; `count_units` counts words/characters of one text.
    references, predictions = list(references), list(predictions)
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    errors = np.zeros(len(references), dtype=np.int64)
    units = np.zeros(len(references), dtype=np.int64)
    scored = []
    for i, (reference, prediction) in enumerate(zip(references, predictions)):
        if count_units(reference) == 0:
            errors[i] = count_units(prediction)  # all insertions
        else:
            scored.append(i)
    if scored:
        out = align([references[i] for i in scored], [predictions[i] for i in scored])
        for i, chunks in zip(scored, out.alignments):
            for chunk in chunks:
                if chunk.type == "insert":
                    errors[i] += chunk.hyp_end_idx - chunk.hyp_start_idx
                else:  # equal, substitute, delete: reference units
                    length = chunk.ref_end_idx - chunk.ref_start_idx
                    units[i] += length
                    errors[i] += 0 if chunk.type == "equal" else length
    return errors, units


def _error_rate(
    references: Sequence[str],
    predictions: Sequence[str],
    align: Callable[[list[str], list[str]], Any],
    count_units: Callable[[str], int],
) -> float:
    errors, units = _utterance_edits(references, predictions, align, count_units)
    if units.sum() == 0:
        return 0.0 if errors.sum() == 0 else 1.0
    return float(errors.sum() / units.sum())
