#!/usr/bin/env python
"""How far the README's main command moves between clean runs: the demo recipe trained N times from scratch with
the same seed and a fixed thread count, each run's per-depth test WER collected in one JSON.

    OMP_NUM_THREADS=1 python training/experiments/demo_repeatability.py --runs 3 --parallel 2

Training on CPU is deterministic for one seed, one thread count and one machine: the reductions inside matrix
products are split by thread, so another thread count (or another CPU's kernels) sums in another order, and the
small demo model, trained for minutes, amplifies those last-bit differences into different weights. Each run is
resumable: a run whose `per_depth_metrics.json` exists is kept, one that stopped is restarted from scratch (its
folder removed), so every collected run is a clean one.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = "training/recipes/demo.json"


def run_once(run_dir: Path, threads: int) -> dict:
    """Train the demo recipe into `run_dir` with `threads` torch threads; its per-depth record and wall time."""
    metrics = run_dir / "per_depth_metrics.json"
    timing = run_dir / "wall_seconds.json"
    if not metrics.is_file():
        shutil.rmtree(run_dir, ignore_errors=True)  # a stopped run would resume, not start clean
        run_dir.mkdir(parents=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
            subprocess.run([sys.executable, "training/train.py", RECIPE, "--output_dir", str(run_dir)], cwd=ROOT,
                           env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
        timing.write_text(json.dumps({"seconds": time.perf_counter() - start}))
    record = json.loads(metrics.read_text())
    return {"run_dir": str(run_dir), "threads": threads, "wall_seconds": json.loads(timing.read_text())["seconds"],
            "wer": {depth: r["wer"] for depth, r in record["depths"].items()},
            "cer": {depth: r["cer"] for depth, r in record["depths"].items()}}


def summary(runs: list) -> dict:
    """Per depth: the WERs of the runs, their min, max and spread (max - min), and whether all are equal."""
    depths = sorted(runs[0]["wer"], key=int)
    per_depth = {}
    for depth in depths:
        values = [run["wer"][depth] for run in runs]
        per_depth[depth] = {"wer": values, "min": min(values), "max": max(values),
                            "spread": max(values) - min(values)}
    return {"depths": per_depth, "identical": all(d["spread"] == 0 for d in per_depth.values())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--parallel", type=int, default=1, help="runs trained at the same time")
    parser.add_argument("--runs_dir", type=Path, default=ROOT / "runs" / "demo-repeatability")
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "demo" / "repeatability.json")
    args = parser.parse_args(argv)
    if args.runs < 2 or args.threads < 1 or args.parallel < 1:
        parser.error("--runs must be >= 2, --threads and --parallel >= 1")
    with ThreadPoolExecutor(args.parallel) as pool:
        runs = list(pool.map(lambda k: run_once(args.runs_dir / f"run{k}", args.threads), range(1, args.runs + 1)))
    import platform

    result = {"command": f"python training/experiments/demo_repeatability.py --runs {args.runs} --threads "
                         f"{args.threads} --parallel {args.parallel}",
              "trains": f"python training/train.py {RECIPE} (seed {json.loads((ROOT / RECIPE).read_text())['seed']})",
              "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()},
              "runs": runs, **summary(runs)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["depths"], indent=1))
    return result


if __name__ == "__main__":
    main()
