"""Depth by compute budget, without a framework: time a `call(depth)` at every depth, then pick the deepest that fits.

    profile = measure_rtf(lambda depth: run(depth), depths=[1, 2, 3, 4], audio_seconds=10.0)
    depth = deepest_depth_within(0.01, profile, depths=[1, 2, 3, 4])

RTF (real-time factor) = seconds of compute per second of audio; smaller is faster. `budget.profile_latency` (a
PyTorch model) and `OnnxPrunableCTC.profile_latency` (an ONNX folder) both measure with `measure_rtf` and choose with
`deepest_depth_within`, so a budget means the same on either path. Pure Python: importing this module imports
neither torch nor numpy.
"""

from __future__ import annotations

import numbers
import time
from pathlib import Path
from typing import Any, Callable, Sequence


def check_timing_options(audio_seconds: float, repeats: int, warmup: int, retries: int, tolerance: float,
                         batch_size: int = 1) -> None:
    """Raise `ValueError` naming every value unless audio_seconds > 0, batch_size and repeats >= 1, warmup and
    retries >= 0 and tolerance in [0, 1)."""
    if audio_seconds <= 0 or batch_size < 1 or repeats < 1 or warmup < 0 or retries < 0 or not 0 <= tolerance < 1:
        raise ValueError("audio_seconds must be > 0, batch_size and repeats >= 1, warmup and retries >= 0, "
                         f"tolerance in [0, 1); got {audio_seconds}, {batch_size}, {repeats}, {warmup}, {retries}, "
                         f"{tolerance}")


def measure_rtf(call: Callable[[int], Any], depths: Sequence[int], audio_seconds: float, repeats: int = 5,
                warmup: int = 1, retries: int = 2, tolerance: float = 0.1) -> dict[str, Any]:
    """Time `call(depth)` (one forward pass over `audio_seconds` of audio, finished when it returns) at each depth.

    Every depth is timed once per round, the depths interleaved (`time_rounds`), for `repeats` rounds after
    `warmup` untimed rounds; a depth's RTF is its fastest round divided by `audio_seconds`. When a deeper depth comes
    out more than `tolerance` (a fraction) cheaper than a shallower one, all depths are timed for `repeats` more
    rounds, up to `retries` times; an ordering still wrong after that is made monotone (`monotone_rtf`).

    Returns:
        ``{"rtf": {depth: rtf}, "measured_rtf": {depth: rtf}, "adjusted": bool, "rounds": int}``: `rtf` never
        decreases with depth, `measured_rtf` holds the timings before that was enforced, `adjusted` says whether it
        changed them, `rounds` is the number of timed rounds per depth.
    """
    seconds: dict[int, list[float]] = {depth: [] for depth in sorted(depths)}
    for attempt in range(retries + 1):
        for depth, times in time_rounds(call, depths, repeats, warmup if attempt == 0 else 0).items():
            seconds[depth] += times
        # The fastest round, not the median: on a shared machine other processes, interrupts and cache misses only
        # ever add time, so the minimum is the estimate least moved by load, and more rounds can only bring it
        # closer to the model's own cost. A median moves with any sustained load.
        measured = {depth: min(times) / audio_seconds for depth, times in seconds.items()}
        if not out_of_order(measured, tolerance):
            break
    rtf = monotone_rtf(measured)
    return {"rtf": rtf, "measured_rtf": measured, "adjusted": rtf != measured,
            "rounds": len(seconds[min(seconds)])}


def time_rounds(call: Callable[[int], Any], depths: Sequence[int], rounds: int, warmup: int
                ) -> dict[int, list[float]]:
    """Seconds per `call(depth)` at each depth, one call per depth per round, after `warmup` untimed rounds."""
    depths = sorted(depths)
    for _ in range(warmup):
        for depth in depths:
            call(depth)
    times: dict[int, list[float]] = {depth: [] for depth in depths}
    for round_index in range(rounds):
        # Depths interleaved, not timed one after the other, so a burst of load hits every depth alike instead of
        # whichever depth was being timed; alternating the order also evens out a slow drift.
        for depth in depths if round_index % 2 == 0 else depths[::-1]:
            start = time.perf_counter()
            call(depth)
            times[depth].append(time.perf_counter() - start)
    return times


def out_of_order(rtf: dict[int, float], tolerance: float) -> bool:
    """Whether some depth times more than `tolerance` (a fraction) cheaper than a shallower one."""
    slowest = 0.0
    for depth in sorted(rtf):
        if rtf[depth] < slowest * (1 - tolerance):
            return True
        slowest = max(slowest, rtf[depth])
    return False


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


def check_budget(rtf) -> float:
    """`rtf` as a float; `ValueError` unless it is a number > 0 (seconds of compute per audio second)."""
    if isinstance(rtf, bool) or not isinstance(rtf, numbers.Real) or not rtf > 0:
        raise ValueError(f"rtf budget must be > 0 seconds per audio second, got {rtf!r}")
    return float(rtf)


def deepest_depth_within(rtf, profile: dict[str, Any], depths: Sequence[int],
                         remeasure: str = "profile the model again") -> int:
    """The deepest of `depths` whose RTF in `profile` (``profile["rtf"]``, keys ints or, as read from JSON,
    strings) is at most `rtf`.

    Raises:
        ValueError: `rtf` is not a number > 0, the profile lacks one of `depths` (the message ends with
            `remeasure`, how to measure again), or even the cheapest depth exceeds the budget (the message names
            that depth and its RTF: returning it anyway would silently miss the budget the caller asked for).
    """
    rtf = check_budget(rtf)
    measured = {int(depth): float(value) for depth, value in profile["rtf"].items()}
    depths = sorted(depths)
    missing = [d for d in depths if d not in measured]
    if missing:
        raise ValueError(f"the latency profile has no timing for depths {missing}: {remeasure}")
    fitting = [d for d in depths if measured[d] <= rtf]
    if not fitting:
        cheapest = min(depths, key=lambda d: measured[d])
        raise ValueError(f"no depth meets RTF {rtf:g}: the cheapest, {cheapest} layer(s), takes "
                         f"{measured[cheapest]:.3g} s per audio second on {profile.get('device', 'this device')}")
    return max(fitting)


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo, else `platform`), for naming the device a profile was timed on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
