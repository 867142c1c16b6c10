"""Is one system's WER really lower than another's on this test set? A paired bootstrap over utterances.

Test splits of a few dozen or hundred utterances give corpus WERs a few points wide of noise, so a comparison such
as "the pruned model is 5% worse than the dedicated one" needs its uncertainty next to it. Both systems transcribe
the same utterances; resampling utterances with replacement (Koehn 2004; Bisani & Ney 2004 for ASR) and recomputing
both corpus WERs on each resample gives a confidence interval for their difference that accounts for the pairing.
"""

from __future__ import annotations


import numpy as np


def paired_bootstrap(errors_a: np.ndarray, errors_b: np.ndarray, words: np.ndarray, resamples: int = 10_000,
                     seed: int = 0, confidence: float = 0.95) -> dict:
    """Bootstrap the difference of corpus WERs ``WER(a) - WER(b)`` over utterances.

    Args:
        errors_a, errors_b: word edits per utterance of systems a and b, ``(n,)``, on the same utterances.
        words: reference words per utterance, ``(n,)``.
        resamples: bootstrap resamples.
        confidence: width of the interval.

    Returns:
        ``{"wer_a", "wer_b", "difference", "difference_ci", "relative", "relative_ci", "share_a_better",
        "utterances", "resamples"}``: WERs and their difference in percentage points, the relative difference
        ``WER(a) / WER(b) - 1`` in percent, each with its interval, and the share of resamples where a has fewer
        errors than b (near 0 or 1: a consistent difference; near 0.5: none).
    """
    errors_a, errors_b, words = (np.asarray(x, dtype=np.float64) for x in (errors_a, errors_b, words))
    if not (errors_a.shape == errors_b.shape == words.shape) or errors_a.ndim != 1 or errors_a.size == 0:
        raise ValueError(f"errors_a, errors_b and words must be non-empty 1-D arrays of one length, got shapes "
                         f"{errors_a.shape}, {errors_b.shape}, {words.shape}")
    if words.sum() == 0:
        raise ValueError("the references hold no words: WER is undefined")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, words.size, size=(resamples, words.size))
    total = words[picks].sum(axis=1)
    total = np.where(total == 0, np.nan, total)  # a resample of only empty references has no WER
    wer_a, wer_b = 100 * errors_a[picks].sum(axis=1) / total, 100 * errors_b[picks].sum(axis=1) / total
    difference = wer_a - wer_b
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = 100 * (wer_a / wer_b - 1)
    tail = (1 - confidence) / 2 * 100

    def interval(values):
        values = values[np.isfinite(values)]
        return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))] if values.size else None

    point_a, point_b = 100 * errors_a.sum() / words.sum(), 100 * errors_b.sum() / words.sum()
    return {
        "wer_a": float(point_a), "wer_b": float(point_b), "difference": float(point_a - point_b),
        "difference_ci": interval(difference),
        "relative": float(100 * (point_a / point_b - 1)) if point_b > 0 else None,
        "relative_ci": interval(relative),
        "share_a_better": float(np.nanmean(np.where(np.isfinite(difference), difference < 0, np.nan))),
        "utterances": int(words.size), "resamples": int(resamples), "confidence": confidence,
    }
