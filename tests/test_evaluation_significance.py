"""Paired bootstrap of WER differences (comparisons of models need their uncertainty)."""

import numpy as np
import pytest

from hf_prunable_ctc.evaluation.metrics import utterance_word_errors, word_error_rate
from hf_prunable_ctc.evaluation.significance import paired_bootstrap


def test_per_utterance_errors_add_up_to_the_corpus_wer():
    references = ["THE CAT SAT", "ON THE MAT", "", "A DOG"]
    predictions = ["THE CAT SAT", "ON A MAT TODAY", "HELLO", ""]
    errors, words = utterance_word_errors(references, predictions)
    assert errors.tolist() == [0, 2, 1, 2] and words.tolist() == [3, 3, 0, 2]
    assert errors.sum() / words.sum() == pytest.approx(word_error_rate(references, predictions))
    with pytest.raises(ValueError, match="2 references but 1 predictions"):
        utterance_word_errors(["A", "B"], ["A"])


def test_identical_systems_differ_by_nothing():
    rng = np.random.default_rng(0)
    words = rng.integers(3, 12, size=50)
    errors = rng.binomial(words, 0.3)
    result = paired_bootstrap(errors, errors, words, resamples=500)
    assert result["difference"] == 0 and result["difference_ci"] == [0.0, 0.0]
    assert result["share_a_better"] == 0.0 and result["utterances"] == 50


def test_a_system_better_on_every_utterance_has_an_interval_below_zero():
    rng = np.random.default_rng(1)
    words = rng.integers(3, 12, size=40)
    worse = rng.binomial(words, 0.4) + 1
    better = worse - 1
    result = paired_bootstrap(better, worse, words, resamples=2000, seed=3)
    low, high = result["difference_ci"]
    assert low <= result["difference"] <= high < 0
    assert result["relative"] < 0 and result["relative_ci"][1] < 0 and result["share_a_better"] == 1.0
    assert result == paired_bootstrap(better, worse, words, resamples=2000, seed=3)  # seeded


def test_noisy_small_differences_straddle_zero():
    rng = np.random.default_rng(2)
    words = rng.integers(3, 12, size=40)
    a, b = rng.binomial(words, 0.3), rng.binomial(words, 0.3)
    low, high = paired_bootstrap(a, b, words, resamples=2000)["difference_ci"]
    assert low < 0 < high


@pytest.mark.parametrize("a, b, words", [([], [], []), ([1, 2], [1], [3, 3]), ([0, 0], [0, 0], [0, 0])])
def test_bad_inputs_are_refused(a, b, words):
    with pytest.raises(ValueError):
        paired_bootstrap(np.array(a), np.array(b), np.array(words))
