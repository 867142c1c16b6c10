"""Depth by budget: depth_for_budget at the edges of a synthetic profile; profile_latency's measurement on a loaded
machine (a clock that a forward pass advances), its cache in the user's cache folder, keyed by the model's content;
the chosen depth through the pipeline and the CLI."""

import json
import math
import os
import time

import numpy as np
import pytest

from conftest import save_model_folder, tiny_model
from hf_prunable_ctc import PrunableCTCForCTC
from hf_prunable_ctc.runtime.budget import depth_for_budget, profile_latency


@pytest.fixture(scope="module")
def model():
    return tiny_model(num_hidden_layers=4)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """The user's cache folder, here a fresh one per test."""
    folder = tmp_path / "user-cache"
    monkeypatch.setenv("HF_PRUNABLE_CTC_CACHE", str(folder))
    return folder


class LoadedClock:
    """Stands in for `time.perf_counter`: a forward pass at depth d takes d ms, plus `extra[d]` seconds for each of
    the first `loaded_calls` forward passes, as if other processes took the CPU exactly while depth d ran."""

    def __init__(self, extra, loaded_calls=math.inf):
        self.now, self.calls, self.extra, self.loaded_calls = 0.0, 0, extra, loaded_calls

    def __call__(self):
        return self.now

    def advance(self, module, args, kwargs):
        depth = len(kwargs["layers"])
        self.now += 0.001 * depth + (self.extra.get(depth, 0.0) if self.calls < self.loaded_calls else 0.0)
        self.calls += 1


@pytest.fixture
def loaded_clock(model, monkeypatch):
    clocks = []

    def start(extra, loaded_calls=math.inf):
        clocks.append(LoadedClock(extra, loaded_calls))
        monkeypatch.setattr(time, "perf_counter", clocks[-1])
        handles.append(model.register_forward_pre_hook(clocks[-1].advance, with_kwargs=True))
        return clocks[-1]

    handles = []
    yield start
    for handle in handles:
        handle.remove()


def count_forward_calls(model):
    calls = []
    model.register_forward_pre_hook(lambda *unused: calls.append(1))
    return calls


def cached_files(cache):
    return sorted((cache / "latency_profiles").glob("*.json"))


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
    assert all(profile["rtf"][d] <= profile["rtf"][d + 1] for d in (1, 2, 3))
    assert profile["threads"] >= 1 and "threads=" in profile["device"]
    [cached] = tmp_path.glob("*.json")
    assert json.loads(cached.read_text())["device"] == profile["device"]
    # A second call reads the cache (same numbers).
    again = profile_latency(model, audio_seconds=0.5, repeats=2, warmup=1, cache_dir=tmp_path)
    assert again["rtf"] == profile["rtf"]
    assert 1 <= depth_for_budget(model, rtf=max(profile["rtf"].values()), profile=again) <= 4
    assert model.training is False


def test_profile_after_pruning_uses_the_pruned_schedule(tmp_path):
    pruned = tiny_model(num_hidden_layers=4).prune_to(2)
    profile = profile_latency(pruned, audio_seconds=0.3, repeats=1, warmup=0, cache_dir=tmp_path)
    assert sorted(profile["rtf"]) == [1, 2]


def test_a_depth_slowed_in_every_first_round_is_measured_again(model, loaded_clock):
    # Warm-up and 3 timed rounds of 4 depths: 16 calls, all of depth 1's slowed, so its fastest round still
    # looks 12x dearer than depth 4. The profile must not keep that.
    clock = loaded_clock({1: 0.05}, loaded_calls=16)
    profile = profile_latency(model, audio_seconds=1.0, repeats=3, warmup=1)
    assert clock.calls == 16 + 12  # one more set of rounds, without warm-up
    assert profile["rtf"] == pytest.approx({1: 0.001, 2: 0.002, 3: 0.003, 4: 0.004})
    assert profile["adjusted"] is False and profile["rounds"] == 6


def test_an_ordering_still_wrong_after_the_retries_is_made_monotone_and_flagged(model, loaded_clock):
    clock = loaded_clock({2: 0.01})  # depth 2 slowed in every round of every retry
    profile = profile_latency(model, audio_seconds=1.0, repeats=3, warmup=1)
    assert clock.calls == 16 + 12 + 12  # two retries, the default
    assert profile["measured_rtf"] == pytest.approx({1: 0.001, 2: 0.012, 3: 0.003, 4: 0.004})
    # Depth 3 runs a superset's worth of layers and took 0.003 s: depth 2 costs at most that.
    assert profile["rtf"] == pytest.approx({1: 0.001, 2: 0.003, 3: 0.003, 4: 0.004})
    assert profile["adjusted"] is True
    assert depth_for_budget(model, rtf=0.0035, profile=profile) == 3


def test_an_inversion_within_the_tolerance_is_not_measured_again_but_still_ironed_out(model, loaded_clock):
    clock = loaded_clock({2: 0.0011})  # depth 2 at 3.1 ms, depth 3 at 3 ms: 3% apart, within the default 10%
    profile = profile_latency(model, audio_seconds=1.0, repeats=3, warmup=1)
    assert clock.calls == 16
    assert profile["rtf"][2] == pytest.approx(0.003) and profile["measured_rtf"][2] == pytest.approx(0.0031)


def test_the_profile_is_cached_in_the_user_cache_and_never_in_the_model_folder(tmp_path, cache):
    folder = tmp_path / "model"
    tiny_model(num_hidden_layers=2).save_pretrained(folder)
    before = sorted(os.listdir(folder))
    profile = profile_latency(PrunableCTCForCTC.from_pretrained(folder), audio_seconds=0.2, repeats=1, warmup=0)
    assert sorted(os.listdir(folder)) == before
    [cached] = cached_files(cache)
    assert {int(k): v for k, v in json.loads(cached.read_text())["rtf"].items()} == profile["rtf"]


def test_a_read_only_model_folder_is_profiled(tmp_path):
    folder = tmp_path / "model"
    tiny_model(num_hidden_layers=2).save_pretrained(folder)
    loaded = PrunableCTCForCTC.from_pretrained(folder)
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("this user can write to read-only folders (root): the folder would not stop a write")
        assert sorted(profile_latency(loaded, audio_seconds=0.2, repeats=1, warmup=0)["rtf"]) == [1, 2]
    finally:
        folder.chmod(0o755)


def test_a_cache_that_cannot_be_written_is_a_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HF_PRUNABLE_CTC_CACHE", str(blocker / "cache"))  # under a file: no folder can be made
    with pytest.warns(RuntimeWarning, match="latency profile not cached"):
        profile = profile_latency(tiny_model(num_hidden_layers=2), audio_seconds=0.2, repeats=1, warmup=0)
    assert sorted(profile["rtf"]) == [1, 2]


def test_a_changed_model_in_the_same_folder_is_measured_again(tmp_path, cache):
    folder = tmp_path / "model"
    tiny_model(num_hidden_layers=2).save_pretrained(folder)
    profile_latency(PrunableCTCForCTC.from_pretrained(folder), audio_seconds=0.2, repeats=1, warmup=0)
    tiny_model(num_hidden_layers=2, intermediate_size=128).save_pretrained(folder)
    changed = PrunableCTCForCTC.from_pretrained(folder)
    calls = count_forward_calls(changed)
    profile_latency(changed, audio_seconds=0.2, repeats=1, warmup=0)
    assert calls and len(cached_files(cache)) == 2


def test_a_copy_of_the_same_model_elsewhere_reuses_the_profile(tmp_path):
    model = tiny_model(num_hidden_layers=2)
    model.save_pretrained(tmp_path / "here")
    model.save_pretrained(tmp_path / "there")
    first = profile_latency(PrunableCTCForCTC.from_pretrained(tmp_path / "here"), audio_seconds=0.2, repeats=1,
                            warmup=0)
    copy = PrunableCTCForCTC.from_pretrained(tmp_path / "there")
    calls = count_forward_calls(copy)
    assert profile_latency(copy, audio_seconds=0.2, repeats=1, warmup=0)["rtf"] == first["rtf"] and not calls


def test_refresh_measures_again_and_replaces_the_cached_profile(cache):
    model = tiny_model(num_hidden_layers=2)
    profile_latency(model, audio_seconds=0.2, repeats=1, warmup=0)
    calls = count_forward_calls(model)
    profile_latency(model, audio_seconds=0.2, repeats=1, warmup=0)
    assert not calls
    refreshed = profile_latency(model, audio_seconds=0.2, repeats=3, warmup=0, retries=0, refresh=True)
    assert len(calls) == 3 * 2
    [cached] = cached_files(cache)
    assert json.loads(cached.read_text())["rounds"] == refreshed["rounds"] == 3


def test_cli_refresh_profile_measures_again(cache):
    from hf_prunable_ctc.cli import CommandError, build_parser, transcribe_options

    model = tiny_model(num_hidden_layers=2)
    profile_latency(model)
    calls = count_forward_calls(model)
    args = build_parser().parse_args(["transcribe", "model", "clip.wav", "--rtf_budget", "1"])
    assert transcribe_options(model, args) == {"layers": [1, 2]} and not calls
    args = build_parser().parse_args(["transcribe", "model", "clip.wav", "--rtf_budget", "1", "--refresh_profile"])
    assert transcribe_options(model, args) == {"layers": [1, 2]} and calls
    with pytest.raises(CommandError, match="add --rtf_budget"):
        transcribe_options(model, build_parser().parse_args(["transcribe", "model", "clip.wav", "--refresh_profile"]))


def test_the_pipeline_result_names_the_depth_the_budget_chose(tmp_path):
    from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline

    save_model_folder(tmp_path / "model")
    asr = prunable_asr_pipeline(model=str(tmp_path / "model"), device="cpu",
                                latency_profile=_profile({1: 0.001, 2: 0.002, 3: 0.003, 4: 0.004}))
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    assert asr(audio, rtf_budget=0.0025)["depth"] == 2
    assert "depth" not in asr(audio)
