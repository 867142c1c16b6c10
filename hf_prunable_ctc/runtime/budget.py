"""Depth by compute budget: measure seconds per audio second at each depth, then pick the deepest that fits.

    profile = profile_latency(model)                 # measured on this device, cached in the user's cache folder
    depth = depth_for_budget(model, rtf=0.01, profile=profile)
    logits = model(features, attention_mask=mask, layers=model.pruning_schedule()[depth]).logits

RTF (real-time factor) = seconds of compute per second of audio; smaller is faster. A profile is a dict
``{"device": str, "threads": int, "torch": str, "audio_seconds": float, "batch_size": int, "rounds": int,
"rtf": {depth: rtf}, "measured_rtf": {depth: rtf}, "adjusted": bool, "model": str}`` with integer depths (JSON keys
are strings on disk and turned back into ints on load; "model" is the `model_fingerprint` timed). `rtf` never
decreases with depth (a deeper depth runs more layers of the same cost); `measured_rtf` holds the timings before
that was enforced, and `adjusted` says whether it changed them.

Profiles are cached one file per model, device and input size under ``latency_profiles/`` of the package's cache
folder (`hf_prunable_ctc.cache_dir.user_cache_dir`: ``$HF_PRUNABLE_CTC_CACHE``, else
``$XDG_CACHE_HOME/hf-prunable-ctc``, else ``~/.cache/hf-prunable-ctc``), never in the model's folder, which may be
read-only or shared. The file is named by a digest of what the timing depends on (`model_fingerprint`: the model's
architecture, not where it was loaded from), so a changed model is measured again and a copy of the same model is not.
``profile_latency(model, refresh=True)`` measures again and replaces the cached file.

Below the cheapest depth (`rtf` smaller than every depth's measured RTF) `depth_for_budget` raises `ValueError`
naming the cheapest depth and its RTF: returning it anyway would silently miss the budget the caller asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ..cache_dir import CACHE_ENV, user_cache_dir
from ..json_files import write_json

PROFILE_FOLDER = "latency_profiles"


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
    retries: int = 2,
    tolerance: float = 0.1,
) -> dict[str, Any]:
    """Measure the model's RTF at each depth of its pruning schedule on the model's current device.

    Every depth is timed once per round, the depths interleaved (in alternating order), for `repeats` rounds after
    `warmup` untimed rounds; a depth's RTF is its fastest round. When a deeper depth comes out more than `tolerance`
    (a fraction) cheaper than a shallower one, all depths are timed for `repeats` more rounds, up to `retries` times;
    an ordering still wrong after that is made monotone (see `monotone_rtf`) and the profile says so (``adjusted``).

    Args:
        model: a `PrunableCTCForCTC` (or `PrunableCTCModel`); run in eval mode under `torch.inference_mode`.
        audio_seconds: length of the random 100-frames-per-second features timed (the model's cost is not
            data dependent, so random features give the same timings as speech).
        batch_size: utterances per call; RTF is per second of audio of one utterance, i.e. divided by the batch.
        repeats, warmup: timed and untimed rounds (one call per depth each).
        cache_dir: folder of cached profiles; defaults to ``latency_profiles/`` under `user_cache_dir()`. A folder
            that cannot be written is a warning: the profile is returned uncached.
        refresh: measure again even if the cache holds this profile, and replace it.
        retries, tolerance: re-measurements allowed, and how much cheaper (as a fraction) a deeper depth may time
            before it counts as a wrong ordering rather than noise.

    Returns:
        The profile dict (see the module docstring); ``profile["rtf"][k]`` is seconds per audio second at depth k.
    """
    if audio_seconds <= 0 or batch_size < 1 or repeats < 1 or warmup < 0 or retries < 0 or not 0 <= tolerance < 1:
        raise ValueError("audio_seconds must be > 0, batch_size and repeats >= 1, warmup and retries >= 0, "
                         f"tolerance in [0, 1); got {audio_seconds}, {batch_size}, {repeats}, {warmup}, {retries}, "
                         f"{tolerance}")
    device = next(model.parameters()).device
    path = profile_path(model, audio_seconds=audio_seconds, batch_size=batch_size, cache_dir=cache_dir)
    if not refresh:
        cached = _read_profile(path)
        if cached is not None:
            return cached

    frames = int(round(audio_seconds * 100))  # 10 ms hop
    features = torch.randn(batch_size, frames, model.config.num_mel_bins, device=device)
    mask = torch.ones(batch_size, frames, dtype=torch.long, device=device)
    schedule = model.pruning_schedule()
    was_training = model.training
    model.eval()
    seconds = {depth: [] for depth in schedule}
    try:
        with torch.inference_mode():
            for attempt in range(retries + 1):
                for depth, times in _time_rounds(model, features, mask, schedule, repeats,
                                                 warmup if attempt == 0 else 0).items():
                    seconds[depth] += times
                # The fastest round, not the median: on a shared machine other processes, interrupts and cache
                # misses only ever add time, so the minimum is the estimate least moved by load, and more rounds
                # can only bring it closer to the model's own cost. A median moves with any sustained load.
                measured = {depth: min(times) / audio_seconds for depth, times in sorted(seconds.items())}
                if not _out_of_order(measured, tolerance):
                    break
    finally:
        model.train(was_training)
    rtf = monotone_rtf(measured)
    profile = {"device": device_key(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "audio_seconds": audio_seconds, "batch_size": batch_size, "rounds": len(seconds[min(seconds)]),
               "rtf": rtf, "measured_rtf": measured, "adjusted": rtf != measured,
               "model": model_fingerprint(model)}
    _write_profile(path, profile)
    return profile


def monotone_rtf(measured: dict[int, float]) -> dict[int, float]:
    """`measured` with each depth's RTF lowered to the cheapest RTF of any depth at least as deep.

    A deeper depth runs more layers of the same cost, so its true RTF is at least that of every shallower depth;
    and as each timing is the fastest of several rounds, which load can only slow down, every measurement is an
    upper bound on its depth's cost. So when depth 8 times at 0.019 but depth 1 at 0.055, depth 1 costs at most
    0.019: lowering the shallower depths keeps every value an upper bound (a depth it selects still meets the
    budget), where raising the deeper ones to the slow outlier would turn the deepest depths away for nothing.
    """
    rtf, cheapest = {}, float("inf")
    for depth in sorted(measured, reverse=True):
        cheapest = min(cheapest, measured[depth])
        rtf[depth] = cheapest
    return dict(sorted(rtf.items()))


def model_fingerprint(model) -> str:
    """sha256 (hex) of what a forward pass's cost depends on: the model's class, its config (without where it was
    loaded from), its pruning schedule and every tensor's name, shape and dtype.

    Weight values are left out: they do not change how long a forward pass takes, and hashing them would cost
    seconds on every call for a large model. Paths are left out so that a copy of a model shares its profile and a
    folder overwritten with another model does not.
    """
    config = {key: value for key, value in model.config.to_dict().items()
              if not key.startswith("_") and key not in ("name_or_path", "transformers_version", "auto_map")}
    tensors = [(name, list(t.shape), str(t.dtype))
               for name, t in (*model.named_parameters(), *model.named_buffers())]
    content = {"class": type(model).__name__, "config": config, "schedule": model.pruning_schedule(),
               "tensors": tensors}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def profile_path(model, audio_seconds: float = 10.0, batch_size: int = 1,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """The file `profile_latency` caches this model's profile in for the model's current device, the current number
    of torch threads and this input size: ``<cache_dir>/<digest>.json``, `cache_dir` defaulting to
    ``latency_profiles/`` under `user_cache_dir()`."""
    device = next(model.parameters()).device
    key = "|".join([model_fingerprint(model), device_key(device), f"torch={torch.__version__}",
                    f"batch={batch_size}", f"seconds={audio_seconds:g}"])
    folder = Path(cache_dir) if cache_dir is not None else user_cache_dir() / PROFILE_FOLDER
    return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _time_rounds(model, features, mask, schedule, rounds: int, warmup: int) -> dict[int, list[float]]:
    """Seconds per call at each depth, one call per depth per round, after `warmup` untimed rounds."""
    device = features.device

    def call(depth):
        model(features, attention_mask=mask, layers=schedule[depth])
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    depths = sorted(schedule)
    for _ in range(warmup):
        for depth in depths:
            call(depth)
    times = {depth: [] for depth in depths}
    for round_index in range(rounds):
        # Depths interleaved, not timed one after the other, so a burst of load hits every depth alike instead of
        # whichever depth was being timed; alternating the order also evens out a slow drift.
        for depth in depths if round_index % 2 == 0 else depths[::-1]:
            start = time.perf_counter()
            call(depth)
            times[depth].append(time.perf_counter() - start)
    return times


def _out_of_order(rtf: dict[int, float], tolerance: float) -> bool:
    """Whether some depth times more than `tolerance` (a fraction) cheaper than a shallower one."""
    slowest = 0.0
    for depth in sorted(rtf):
        if rtf[depth] < slowest * (1 - tolerance):
            return True
        slowest = max(slowest, rtf[depth])
    return False


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


def _read_profile(path: Path) -> dict[str, Any] | None:
    """The cached profile at `path`, or None when there is none or it cannot be read (it is then measured again)."""
    try:
        profile = json.loads(path.read_text())
        for field in ("rtf", "measured_rtf"):
            profile[field] = {int(depth): float(value) for depth, value in profile[field].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return profile


def _write_profile(path: Path, profile: dict[str, Any]) -> None:
    # A cache is an optimisation: a read-only or full disk costs a new measurement next time, not this call.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, profile, indent=2)
    except OSError as error:
        warnings.warn(f"latency profile not cached ({error}); set ${CACHE_ENV} to a writable folder to keep it",
                      RuntimeWarning, stacklevel=3)
