"""Depth by compute budget: measure seconds per audio second at each depth, then pick the deepest that fits.

    profile = profile_latency(model)                 # measured on this device, cached next to the model
    depth = depth_for_budget(model, rtf=0.002, profile=profile)
    logits = model(features, attention_mask=mask, layers=model.pruning_schedule()[depth]).logits

RTF (real-time factor) = seconds of compute per second of audio; smaller is faster. A profile is a dict
``{"device": str, "threads": int, "torch": str, "audio_seconds": float, "batch_size": int,
"rtf": {depth: rtf}}`` with integer depths (JSON keys are strings on disk and turned back into ints on load).

Below the cheapest depth (`rtf` smaller than every depth's measured RTF) `depth_for_budget` raises `ValueError`
naming the cheapest depth and its RTF: returning it anyway would silently miss the budget the caller asked for.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

PROFILE_FILE = "latency_profile.json"


def device_key(device: torch.device | str | None = None, threads: int | None = None) -> str:
    """Cache key for a profile: the device's name and, on CPU, the number of torch threads
    (e.g. ``"cpu:Intel(R) Xeon(R) ...|threads=2"`` or ``"cuda:NVIDIA H200"``)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads() if threads is None else threads
    return f"cpu:{_cpu_name()}|threads={threads}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def profile_latency(
    model,
    audio_seconds: float = 10.0,
    batch_size: int = 1,
    repeats: int = 5,
    warmup: int = 2,
    cache_dir: str | os.PathLike | None = None,
    refresh: bool = False,
) -> dict[str, Any]:
    """Measure the model's RTF at each depth of its pruning schedule on the model's current device.

    Args:
        model: a `PrunableCTCForCTC` (or `PrunableCTCModel`); run in eval mode under `torch.inference_mode`.
        audio_seconds: length of the random 100-frames-per-second features timed (the model's cost is not
            data dependent, so random features give the same timings as speech).
        batch_size: utterances per call; RTF is per second of audio of one utterance, i.e. divided by the batch.
        repeats, warmup: timed and untimed calls per depth; the median of the timed ones is kept.
        cache_dir: folder holding ``latency_profile.json`` (profiles for several devices, keyed by `device_key`);
            defaults to the folder the model was loaded from (``model.name_or_path``) when it exists; ``None`` and
            no such folder means no cache.
        refresh: measure again even if the cache holds this device's profile.

    Returns:
        The profile dict (see the module docstring); ``profile["rtf"][k]`` is seconds per audio second at depth k.
    """
    if audio_seconds <= 0 or batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError("audio_seconds must be > 0, batch_size and repeats >= 1, warmup >= 0; got "
                         f"{audio_seconds}, {batch_size}, {repeats}, {warmup}")
    device = next(model.parameters()).device
    key = f"{device_key(device)}|batch={batch_size}|seconds={audio_seconds:g}"
    cache_path = _cache_path(model, cache_dir)
    cache = _read_cache(cache_path)
    if key in cache and not refresh:
        return cache[key]

    frames = int(round(audio_seconds * 100))  # 10 ms hop
    features = torch.randn(batch_size, frames, model.config.num_mel_bins, device=device)
    mask = torch.ones(batch_size, frames, dtype=torch.long, device=device)
    schedule = model.pruning_schedule()
    was_training = model.training
    model.eval()
    rtf = {}
    with torch.inference_mode():
        for depth in sorted(schedule):
            def call():
                model(features, attention_mask=mask, layers=schedule[depth])
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            for _ in range(warmup):
                call()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            rtf[depth] = statistics.median(times) / audio_seconds
    model.train(was_training)
    profile = {"device": device_key(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "audio_seconds": audio_seconds, "batch_size": batch_size, "rtf": rtf}
    if cache_path is not None:
        cache[key] = profile
        # Written whole and renamed into place, so an interrupted run never leaves a truncated cache behind.
        partial = cache_path.with_name(cache_path.name + f".{os.getpid()}.partial")
        partial.write_text(json.dumps(cache, indent=2) + "\n")
        os.replace(partial, cache_path)
    return profile


def depth_for_budget(model, rtf: float, profile: dict[str, Any] | None = None) -> int:
    """The deepest depth of the model's pruning schedule whose profiled RTF is at most `rtf`.

    Args:
        model: the model the profile was measured on (its schedule's depths are the candidates).
        rtf: budget in seconds of compute per second of audio (> 0).
        profile: from `profile_latency`; measured now (and cached) when omitted.

    Raises:
        ValueError: `rtf` is not positive, the profile lacks a depth of the schedule, or even the cheapest depth
            exceeds the budget (the message names that depth and its RTF).
    """
    if not rtf > 0:
        raise ValueError(f"rtf budget must be > 0 seconds per audio second, got {rtf}")
    profile = profile_latency(model) if profile is None else profile
    measured = {int(depth): float(value) for depth, value in profile["rtf"].items()}
    depths = sorted(model.pruning_schedule())
    missing = [d for d in depths if d not in measured]
    if missing:
        raise ValueError(f"the latency profile has no timing for depths {missing}: profile the model again "
                         "(profile_latency(model, refresh=True))")
    fitting = [d for d in depths if measured[d] <= rtf]
    if not fitting:
        cheapest = min(depths, key=lambda d: measured[d])
        raise ValueError(f"no depth meets RTF {rtf:g}: the cheapest, {cheapest} layer(s), takes "
                         f"{measured[cheapest]:.3g} s per audio second on {profile.get('device', 'this device')}")
    return max(fitting)


def _cache_path(model, cache_dir) -> Path | None:
    if cache_dir is None:
        name = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
        if not name or not Path(name).is_dir():
            return None
        cache_dir = name
    return Path(cache_dir) / PROFILE_FILE


def _read_cache(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    cache = json.loads(path.read_text())
    for profile in cache.values():
        profile["rtf"] = {int(depth): value for depth, value in profile["rtf"].items()}
    return cache
