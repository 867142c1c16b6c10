"""Depth by compute budget: measure seconds per audio second at each depth, then pick the deepest that fits.

    profile = profile_latency(model)                 # measured on this device, cached in the user's cache folder
    depth = depth_for_budget(model, rtf=0.01, profile=profile)
    logits = model(features, attention_mask=mask, layers=model.pruning_schedule()[depth]).logits

RTF (real-time factor) = seconds of compute per second of audio; smaller is faster. The timing loop and the choice
of depth are `depth_budget`'s, shared with the ONNX runtime; this module adds the PyTorch model and the cache. A
profile is a dict ``{"device": str, "threads": int, "torch": str, "audio_seconds": float, "batch_size": int,
"rounds": int, "rtf": {depth: rtf}, "measured_rtf": {depth: rtf}, "adjusted": bool, "model": str}`` with integer
depths (JSON keys are strings on disk and turned back into ints on load; "model" is the `model_fingerprint` timed).
`rtf` never decreases with depth (a deeper depth runs more layers of the same cost); `measured_rtf` holds the
timings before that was enforced, and `adjusted` says whether it changed them.

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
import warnings
from pathlib import Path
from typing import Any

import torch

from ..cache_dir import CACHE_ENV, user_cache_dir
from ..json_files import write_json
from .depth_budget import check_budget, check_timing_options, cpu_name, deepest_depth_within, measure_rtf
from .depth_budget import monotone_rtf  # noqa: F401 (part of this module's API)

PROFILE_FOLDER = "latency_profiles"


def device_key(device: torch.device | str | None = None, threads: int | None = None) -> str:
    """Cache key for a profile: the device's name and, on CPU, the number of torch threads
    (e.g. ``"cpu:Intel(R) Xeon(R) ...|threads=2"`` or ``"cuda:NVIDIA H200"``)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads() if threads is None else threads
    return f"cpu:{cpu_name()}|threads={threads}"


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

    Timed by `depth_budget.measure_rtf`: every depth once per round, the depths interleaved (in alternating order),
    for `repeats` rounds after `warmup` untimed rounds; a depth's RTF is its fastest round. When a deeper depth comes
    out more than `tolerance` (a fraction) cheaper than a shallower one, all depths are timed for `repeats` more
    rounds, up to `retries` times; an ordering still wrong after that is made monotone (see `monotone_rtf`) and the
    profile says so (``adjusted``).

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
    check_timing_options(audio_seconds, repeats, warmup, retries, tolerance, batch_size=batch_size)
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

    def call(depth):
        model(features, attention_mask=mask, layers=schedule[depth])
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            timed = measure_rtf(call, schedule, audio_seconds, repeats=repeats, warmup=warmup, retries=retries,
                                tolerance=tolerance)
    finally:
        model.train(was_training)
    profile = {"device": device_key(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "audio_seconds": audio_seconds, "batch_size": batch_size, "rounds": timed["rounds"],
               "rtf": timed["rtf"], "measured_rtf": timed["measured_rtf"], "adjusted": timed["adjusted"],
               "model": model_fingerprint(model)}
    _write_profile(path, profile)
    return profile


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
    check_budget(rtf)  # before measuring a profile for a budget that no profile could meet
    profile = profile_latency(model) if profile is None else profile
    return deepest_depth_within(rtf, profile, model.pruning_schedule(),
                                remeasure="profile the model again (profile_latency(model, refresh=True))")


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
