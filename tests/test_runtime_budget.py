"""Depth by budget (issue 12 item 2): depth_for_budget at the edges of a synthetic profile, and profile_latency's
measurement and cache."""

import json

import pytest

from conftest import tiny_model
from hf_prunable_ctc.runtime.budget import PROFILE_FILE, depth_for_budget, profile_latency


@pytest.fixture(scope="module")
def model():
    return tiny_model(num_hidden_layers=4)


def _profile(rtf):
    return {"device": "cpu:test|threads=2", "rtf": rtf}


SYNTHETIC = _profile({1: 0.001, 2: 0.002, 3: 0.003, 4: 0.004})


@pytest.mark.parametrize("budget, expected", [(0.004, 4), (1.0, 4), (0.0039, 3), (0.002, 2), (0.001, 1)])
def test_deepest_depth_within_budget(model, budget, expected):
    assert depth_for_budget(model, rtf=budget, profile=SYNTHETIC) == expected


def test_below_the_cheapest_depth_is_an_error_naming_it(model):
    with pytest.raises(ValueError, match=r"cheapest, 1 layer\(s\), takes 0.001"):
        depth_for_budget(model, rtf=0.0005, profile=SYNTHETIC)


@pytest.mark.parametrize("budget", [0, -1.0, float("nan")])
def test_non_positive_budget_is_an_error(model, budget):
    with pytest.raises(ValueError, match="must be > 0"):
        depth_for_budget(model, rtf=budget, profile=SYNTHETIC)


def test_non_monotonic_profile_still_returns_deepest_fitting(model):
    # Timing noise can make a deeper depth measure cheaper; the deepest depth that fits wins.
    noisy = _profile({"1": 0.003, "2": 0.001, "3": 0.005, "4": 0.0045})  # string keys, as read from JSON
    assert depth_for_budget(model, rtf=0.002, profile=noisy) == 2
    assert depth_for_budget(model, rtf=0.0046, profile=noisy) == 4


def test_profile_missing_a_depth_is_an_error(model):
    with pytest.raises(ValueError, match=r"no timing for depths \[4\]"):
        depth_for_budget(model, rtf=1.0, profile=_profile({1: 0.1, 2: 0.2, 3: 0.3}))


def test_profile_latency_measures_each_depth_and_caches(model, tmp_path):
    profile = profile_latency(model, audio_seconds=0.5, repeats=2, warmup=1, cache_dir=tmp_path)
    assert sorted(profile["rtf"]) == [1, 2, 3, 4] and all(v > 0 for v in profile["rtf"].values())
    assert profile["threads"] >= 1 and "threads=" in profile["device"]
    cached = json.loads((tmp_path / PROFILE_FILE).read_text())
    assert len(cached) == 1 and next(iter(cached)).startswith(profile["device"])
    # A second call reads the cache (same numbers), refresh=True measures again.
    again = profile_latency(model, audio_seconds=0.5, repeats=2, warmup=1, cache_dir=tmp_path)
    assert again["rtf"] == profile["rtf"]
    assert 1 <= depth_for_budget(model, rtf=max(profile["rtf"].values()), profile=again) <= 4
    assert model.training is False


def test_profile_after_pruning_uses_the_pruned_schedule(tmp_path):
    pruned = tiny_model(num_hidden_layers=4).prune_to(2)
    profile = profile_latency(pruned, audio_seconds=0.3, repeats=1, warmup=0, cache_dir=tmp_path)
    assert sorted(profile["rtf"]) == [1, 2]
