#!/usr/bin/env python
"""Does pruning on demand work? The experiment: one corpus, one recipe, models A-F, resumable stages.

    python training/experiments/layer_pruning.py                       # the full run on data/demo (hours)
    python training/experiments/layer_pruning.py --quick --output_dir /tmp/lp --runs_dir /tmp/lp/runs   # minutes

Models (all trained from scratch with the same steps, optimiser and SpecAugment, from the recipe JSON):
    A_baseline          plain CTC, no stochastic depth            (full depth L)
    B_interctc          intermediate CTC only
    C_stochastic_depth  stochastic depth only
    D_interctc_sd       intermediate CTC + stochastic depth (the paper's method; the recipe's model as written)
    E_dedicated         plain CTC models trained at each of the recipe's `dedicated_depths` on their own
    E_dedicated_interctc  (--with_dedicated_interctc) the same with intermediate CTC
    F_selfcond_sd       (--with_selfcond) D + self-conditioned CTC
    G_interctc_every_sd (--with_every_layer_interctc) D with intermediate CTC after every layer, so that every
                        depth's exit is trained directly (the follow-up the first results pointed to)

This is a recipe on the package, not a second training stack: every stage runs `training/train.py STAGE.json`
and `training/evaluate_depths.py` as subprocesses, with a stage recipe JSON that spells out every argument.
A-D and F are evaluated at every depth under every strategy of the recipe (greedy/svcca search on validation,
numbers on each test split); E models at their trained depth (strategy "none").

Stages survive being stopped at any moment. A stage (one model) is finished when its result file
`<output_dir>/stages/<stage>.json` exists (written atomically, last); re-running skips finished stages; an
unfinished stage resumes: train.py resumes from the last checkpoint in `<runs_dir>/<stage>`, a finished training
is not repeated, and a finished depth report is not recomputed. After every stage, results.json, README.md and the
plots in `<output_dir>` are rebuilt from the finished stages, so partial results are usable.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layer_pruning_report import rebuild_outputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = Path(__file__).resolve().parent
FULL_RECIPE = EXPERIMENTS / "layer_pruning.json"
QUICK_RECIPE = EXPERIMENTS / "layer_pruning_quick.json"
TRAIN_SCRIPT = ROOT / "training" / "train.py"
EVALUATE_SCRIPT = ROOT / "training" / "evaluate_depths.py"
HEARTBEAT_S = 60  # how often a running attempt's wall time is written to attempts.json
DEMO_CORPUS = ROOT / "data" / "demo"
DEMO_CORPUS_SEED = 0  # data/demo was made with `make_corpus.py --demo`, whose seed is 0 (data/demo/README.md)
RECIPE_KEYS = {"description", "model_config", "training", "data", "dedicated_depths", "evaluation"}
# train.py arguments the stage recipe sets itself; the shared recipe must not (they differ per stage or per corpus).
STAGE_OWNED_TRAINING_KEYS = {"output_dir", "do_train", "model_config", "model_name_or_path", "data_dir",
                             "dataset_name", "test_split_name", "eval_depths", "max_train_samples",
                             "max_eval_samples", "use_cpu"}


class ExperimentError(RuntimeError):
    """A problem the user has to fix (bad recipe, mismatched earlier results); the message says how."""


@dataclass
class Stage:
    """One model of the experiment: trained once, evaluated on every test split."""

    name: str  # file-system name: stages/<name>.json, <runs_dir>/<name>
    model: str  # the `model` field of its records (E stages share "E_dedicated")
    trained_depth: int
    model_config: dict
    strategies: list = field(default_factory=list)  # empty: dedicated model, evaluated at its own depth only


# ---------------------------------------------------------------------------------------------------- the plan


def load_recipe(path: Path, extra_keys: frozenset = frozenset()) -> dict:
    """Read and check an experiment recipe (training/experiments/layer_pruning*.json); `extra_keys` are further
    top-level keys an experiment built on this one reads itself (shallow_end.py's variants)."""
    try:
        recipe = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ExperimentError(f"recipe {path} does not exist; give --recipe a JSON like {FULL_RECIPE}") from None
    except json.JSONDecodeError as error:
        raise ExperimentError(f"recipe {path} is not valid JSON: {error}") from None
    expected = RECIPE_KEYS | set(extra_keys)
    missing = expected - {"description"} - set(recipe)
    unknown = set(recipe) - expected
    if missing or unknown:
        raise ExperimentError(f"recipe {path}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}; "
                              f"expected {sorted(expected)}")
    clash = STAGE_OWNED_TRAINING_KEYS & set(recipe["training"])
    if clash:
        raise ExperimentError(f"recipe {path}: 'training' sets {sorted(clash)}, which each stage sets itself; "
                              "remove them (data subsets go under 'data')")
    if "max_steps" not in recipe["training"]:
        raise ExperimentError(f"recipe {path}: 'training' needs max_steps, so that every model gets the same steps")
    full_depth = recipe["model_config"]["num_hidden_layers"]
    bad = [d for d in recipe["dedicated_depths"] if not 1 <= d < full_depth]
    if bad:
        raise ExperimentError(f"recipe {path}: dedicated_depths {bad} must be in [1, {full_depth - 1}] "
                              f"(the full model has {full_depth} layers)")
    return recipe


def plain_ctc(config: dict) -> dict:
    return dict(config, interctc_layers=[], interctc_weight=0.0, self_conditioning=False)


def dedicated_interctc_layers(full_layers: list, depth: int) -> list:
    """Intermediate-CTC positions for a model trained at `depth`: the full model's positions below it, else the
    middle layer (a 2-layer model has no room for 2/4/6, but layer 1 can still take an intermediate loss)."""
    below = [layer for layer in full_layers if layer < depth]
    return below or ([max(1, depth // 2)] if depth > 1 else [])


def plan_stages(recipe: dict, with_dedicated_interctc: bool = False, with_selfcond: bool = False,
                with_every_layer_interctc: bool = False) -> list:
    """The stages in the order they run: D and E first (the claim), then A, B, C (which ingredient does what)."""
    base = dict(recipe["model_config"])
    depth = base["num_hidden_layers"]
    strategies = list(recipe["evaluation"]["strategies"])
    no_sd = dict(stochastic_depth_rate=0.0)
    if not base.get("interctc_layers") or not base.get("stochastic_depth_rate"):
        raise ExperimentError("the recipe's model_config is model D: it needs interctc_layers and a "
                              "stochastic_depth_rate > 0 (A, B, C and E are derived from it by turning them off)")
    stages = [Stage("D_interctc_sd", "D_interctc_sd", depth, base, strategies)]
    for k in recipe["dedicated_depths"]:
        stages.append(Stage(f"E_dedicated_d{k}", "E_dedicated", k,
                            dict(plain_ctc(base), num_hidden_layers=k, **no_sd)))
    stages += [
        Stage("A_baseline", "A_baseline", depth, dict(plain_ctc(base), **no_sd), strategies),
        Stage("B_interctc", "B_interctc", depth, dict(base, **no_sd), strategies),
        Stage("C_stochastic_depth", "C_stochastic_depth", depth, plain_ctc(base), strategies),
    ]
    if with_dedicated_interctc:
        for k in recipe["dedicated_depths"]:
            layers = dedicated_interctc_layers(base["interctc_layers"], k)
            stages.append(Stage(f"E_dedicated_interctc_d{k}", "E_dedicated_interctc", k,
                                dict(base, num_hidden_layers=k, interctc_layers=layers,
                                     interctc_weight=base["interctc_weight"] if layers else 0.0, **no_sd)))
    if with_selfcond:
        stages.append(Stage("F_selfcond_sd", "F_selfcond_sd", depth, dict(base, self_conditioning=True), strategies))
    if with_every_layer_interctc:
        # Same weight as D, spread over every exit: tests whether D's weak shallow exits come from being trained
        # at only a few positions.
        stages.append(Stage("G_interctc_every_sd", "G_interctc_every_sd", depth,
                            dict(base, interctc_layers=list(range(1, depth))), strategies))
    return stages


# ---------------------------------------------------------------------------------------------------- the corpus


def find_test_splits(data_dir: Path) -> list:
    """Every split folder of the corpus whose name starts with "test" (test, test_unseen_engine, ...)."""
    splits = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and p.name.startswith("test")
                    and (p / "metadata.csv").is_file())
    if not splits:
        raise ExperimentError(f"{data_dir} has no test split (a folder test*/ with metadata.csv); make the corpus "
                              "with training/make_corpus.py or give --test_splits")
    return splits


def corpus_seed(data_dir: Path, given) -> int | None:
    if given is not None:
        return given
    if data_dir.resolve() == DEMO_CORPUS.resolve():
        return DEMO_CORPUS_SEED
    for name in ("corpus.json", "settings.json"):  # written by some make_corpus versions, if at all
        path = data_dir / name
        if path.is_file():
            seed = json.loads(path.read_text()).get("seed")
            if seed is not None:
                return seed
    return None


def describe_corpus(data_dir: Path, splits: list, seed, subset: dict) -> dict:
    """Name, hours, voices and utterances per split, and a hash of the split manifests (metadata.csv files)."""
    digest = hashlib.sha256()
    described = {}
    for split in splits:
        metadata = data_dir / split / "metadata.csv"
        if not metadata.is_file():
            raise ExperimentError(f"split {split!r}: {metadata} does not exist (audiofolder layout "
                                  "<data_dir>/<split>/metadata.csv, as training/make_corpus.py writes)")
        content = metadata.read_bytes()
        digest.update(split.encode() + b"\0" + content + b"\0")
        rows = list(csv.DictReader(content.decode("utf-8").splitlines()))
        seconds = sum(float(r["duration"]) for r in rows) if rows and "duration" in rows[0] else None
        described[split] = {
            "utterances": len(rows),
            "hours": round(seconds / 3600, 4) if seconds is not None else None,
            "voices": len({r["speaker"] for r in rows}) if rows and "speaker" in rows[0] else None,
        }
    hours = [s["hours"] for s in described.values()]
    return {
        "name": data_dir.resolve().name if data_dir.resolve() != DEMO_CORPUS.resolve() else "data/demo",
        "data_dir": os.path.relpath(data_dir.resolve(), ROOT) if data_dir.resolve().is_relative_to(ROOT)
        else str(data_dir.resolve()),
        "hours": round(sum(hours), 4) if None not in hours else None,
        "voices": {split: s["voices"] for split, s in described.items()},
        "splits": described,
        "seed": seed,
        "manifest_sha256": digest.hexdigest(),
        "subset": subset,
    }


# ---------------------------------------------------------------------------------------------------- where it runs


def ran_on(device: str | None) -> dict:
    """Host and device of this run, for the records (no host name: it says nothing useful and may be private)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch  # late: a rerun whose stages are all finished never needs torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = torch.get_num_threads()
    name = (torch.cuda.get_device_name(0) if device.startswith("cuda")
            else f"CPU, {threads} thread{'s' if threads > 1 else ''}")
    return {"host": f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores",
            "device": name, "torch": torch.__version__}


# ---------------------------------------------------------------------------------------------------- stages


def write_json_atomically(path: Path, data) -> None:
    """Write `data` as JSON to `path` through a temporary name, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def stage_train_recipe(stage: Stage, recipe: dict, corpus_dir: Path, run_dir: Path, device: str | None) -> dict:
    """The complete train.py recipe of a stage: every argument spelled out, paths absolute."""
    train = dict(recipe["training"])
    train.update(model_config=str(run_dir / "model_config.json"), dataset_name="audiofolder",
                 data_dir=str(corpus_dir.resolve()), train_split_name="train", eval_split_name="validation",
                 text_column_name="transcription", output_dir=str(run_dir), do_train=True)
    for key in ("max_train_samples", "max_eval_samples"):
        if recipe["data"].get(key):
            train[key] = recipe["data"][key]
    if device == "cpu":
        train["use_cpu"] = True
    return train


def evaluate_command(stage: Stage, recipe: dict, corpus_dir: Path, run_dir: Path, split: str, report_dir: Path,
                     device: str | None) -> list:
    evaluation = recipe["evaluation"]
    command = [sys.executable, str(EVALUATE_SCRIPT), "--model", str(run_dir), "--dataset_name", "audiofolder",
               "--data_dir", str(corpus_dir.resolve()), "--split", split, "--search_split", "validation",
               "--strategies", ",".join(stage.strategies or ["top"]),
               "--max_search_samples", str(evaluation["max_search_samples"]),
               "--batch_size", str(evaluation["batch_size"]), "--rtf_utterances", str(evaluation["rtf_utterances"]),
               "--repeats", str(evaluation["repeats"]), "--output_dir", str(report_dir)]
    if recipe["data"].get("max_eval_samples"):
        command += ["--max_eval_samples", str(recipe["data"]["max_eval_samples"])]
    if device:
        command += ["--device", device]
    return command


def run_logged(command: list, run_dir: Path, activity: str, where: dict, what: str) -> None:
    """Run `command` from the repository root, appending its output to <run_dir>/<activity>.log.

    Every attempt's wall time and place are added to <run_dir>/attempts.json, interrupted ones included. If this
    process is stopped (Ctrl-C, SIGTERM), the child is stopped too, so no training runs on unattended.
    """
    log_path = run_dir / f"{activity}.log"
    start = time.perf_counter()
    returncode = None
    with open(log_path, "a") as log:
        log.write(f"\n===== {now()} {' '.join(command)}\n")
        log.flush()
        child = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        # Recorded as "running" and brought up to date every HEARTBEAT_S, so that an attempt killed with no chance
        # to clean up (SIGKILL, a session's end, a power cut) still counts its time in the cost table.
        attempt = record_attempt(run_dir, activity, 0.0, where, "running")
        try:
            while returncode is None:
                try:
                    returncode = child.wait(timeout=HEARTBEAT_S)
                except subprocess.TimeoutExpired:
                    record_attempt(run_dir, activity, time.perf_counter() - start, where, "running", attempt)
        finally:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
            outcome = "finished" if returncode == 0 else "stopped" if returncode is None else f"exit code {returncode}"
            record_attempt(run_dir, activity, time.perf_counter() - start, where, outcome, attempt)
    if returncode != 0:
        raise ExperimentError(f"{what} failed (exit code {returncode}); its output is in {log_path}")


def git_head() -> str | None:
    """The checkout's commit, so a result can be traced to the code that made it (None outside git)."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or None if done.returncode == 0 else None


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def record_attempt(run_dir: Path, activity: str, seconds: float, where: dict, outcome: str,
                   index: int | None = None) -> int:
    """Append one attempt (activity, wall seconds, where, outcome) to <run_dir>/attempts.json, or update the one at
    `index`; returns its index. An attempt left "running" by a process that died was interrupted at that time."""
    path = run_dir / "attempts.json"
    attempts = json.loads(path.read_text()) if path.is_file() else []
    entry = {"activity": activity, "wall_s": round(seconds, 1), "ended": now(), "outcome": outcome, **where}
    if index is None:
        attempts.append(entry)
        index = len(attempts) - 1
    else:
        attempts[index] = entry
    write_json_atomically(path, attempts)
    return index


def check_same_experiment(path: Path, fingerprint: str, what: str) -> None:
    """Refuse to mix a stage made with another corpus or recipe into this experiment's results."""
    if path.is_file():
        found = json.loads(path.read_text()).get("fingerprint")
        if found != fingerprint:
            raise ExperimentError(
                f"{what} {path} was made with another corpus or recipe (fingerprint {found}, now {fingerprint}): "
                "give a new --output_dir and --runs_dir, or move that stage away to re-run it")


def training_finished(run_dir: Path) -> bool:
    # train.py writes train_results.json after the final save_model: both the weights and the metrics are there.
    return (run_dir / "train_results.json").is_file() and (run_dir / "config.json").is_file()


def run_stage(stage: Stage, recipe: dict, corpus_dir: Path, test_splits: list, output_dir: Path,
              runs_dir: Path, fingerprint: str, device: str | None, log=print) -> dict:
    """Train (or resume) and evaluate one stage; write its result file last, atomically; return it."""
    run_dir = runs_dir / stage.name
    run_dir.mkdir(parents=True, exist_ok=True)
    check_same_experiment(run_dir / "stage.json", fingerprint, "run folder")
    where = ran_on(device)
    write_json_atomically(run_dir / "stage.json", {"fingerprint": fingerprint, "stage": stage.name})
    write_json_atomically(run_dir / "model_config.json", stage.model_config)
    train_recipe = stage_train_recipe(stage, recipe, corpus_dir, run_dir, device)
    write_json_atomically(run_dir / "train_recipe.json", train_recipe)

    if training_finished(run_dir):
        log(f"[{stage.name}] training already finished")
    else:
        resumed = any(p.name.startswith("checkpoint-") for p in run_dir.iterdir())
        log(f"[{stage.name}] training{' (resuming from the last checkpoint)' if resumed else ''}, "
            f"log: {run_dir / 'train.log'}")
        run_logged([sys.executable, str(TRAIN_SCRIPT), str(run_dir / "train_recipe.json")], run_dir, "train",
                   where, f"training of {stage.name}")
    reports = {}
    for split in test_splits:
        report_dir = run_dir / f"report_{split}"
        if not (report_dir / "depth_report.json").is_file():  # written atomically by depth_report
            log(f"[{stage.name}] evaluating on {split}")
            run_logged(evaluate_command(stage, recipe, corpus_dir, run_dir, split, report_dir, device), run_dir,
                       "evaluate", where, f"evaluation of {stage.name} on {split}")
        reports[split] = json.loads((report_dir / "depth_report.json").read_text())

    result = stage_result(stage, reports, run_dir, fingerprint)
    write_json_atomically(output_dir / "stages" / f"{stage.name}.json", result)
    return result


def stage_result(stage: Stage, reports: dict, run_dir: Path, fingerprint: str) -> dict:
    """The stage's result file: its records in results.json's format, plus cost, place and SVCCA matrices."""
    attempts = json.loads((run_dir / "attempts.json").read_text()) if (run_dir / "attempts.json").is_file() else []
    trainer_state = run_dir / "trainer_state.json"
    steps = json.loads(trainer_state.read_text()).get("global_step") if trainer_state.is_file() else None

    def total(activity):
        return round(sum(a["wall_s"] for a in attempts if a["activity"] == activity), 1)

    def places(activity):
        return sorted({f"{a['device']} ({a['host']})" for a in attempts if a["activity"] == activity})

    train_device = "; ".join(sorted({a["device"] for a in attempts if a["activity"] == "train"})) or None
    records, svcca, schedules = [], {}, {}
    for split, report in reports.items():
        for r in report["records"]:
            if stage.strategies:
                keep, strategy = r["strategy"] in stage.strategies, r["strategy"]
            else:  # a dedicated model is measured whole: its own depth, nothing pruned
                keep, strategy = r["strategy"] == "top" and r["depth"] == stage.trained_depth, "none"
            if keep:
                records.append({"model": stage.model, "trained_depth": stage.trained_depth, "depth": r["depth"],
                                "strategy": strategy, "split": split, "wer": r["wer"], "cer": r["cer"],
                                "params": r["parameters"], "layers": r["layers"], "stage": stage.name,
                                "trained_on": train_device})
        svcca[split] = report.get("svcca_matrix")
        schedules[split] = {}
        for r in report["records"]:
            schedules[split].setdefault(r["strategy"], {})[str(r["depth"])] = r["layers"]
    return {
        "stage": stage.name, "model": stage.model, "trained_depth": stage.trained_depth,
        "fingerprint": fingerprint, "model_config": stage.model_config, "train_steps": steps,
        "train_wall_s": total("train"), "evaluate_wall_s": total("evaluate"),
        "trained_on": places("train"), "evaluated_on": places("evaluate"), "attempts": attempts,
        "finished_at": now(), "git_commit": git_head(),
        "records": records, "svcca_matrix": svcca, "schedules": schedules,
    }


# ---------------------------------------------------------------------------------------------------- main


def fingerprint_of(corpus: dict, recipe: dict, test_splits: list) -> str:
    """What must be equal for two stages to belong to one experiment: corpus content, recipe, splits measured."""
    key = json.dumps({"manifest": corpus["manifest_sha256"], "subset": corpus["subset"], "test_splits": test_splits,
                      "recipe": {k: v for k, v in recipe.items() if k != "description"}}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny model, a few dozen steps on a corpus subset ({QUICK_RECIPE.name}); minutes")
    parser.add_argument("--recipe", type=Path,
                        help=f"experiment recipe JSON (default {FULL_RECIPE.relative_to(ROOT)}, "
                             f"or {QUICK_RECIPE.relative_to(ROOT)} with --quick)")
    parser.add_argument("--data_dir", type=Path, default=DEMO_CORPUS,
                        help="audiofolder corpus with train/validation/test* splits (training/make_corpus.py); "
                             "default: the bundled data/demo")
    parser.add_argument("--test_splits", help="comma-separated splits to report (default: every test* split)")
    parser.add_argument("--corpus_seed", type=int,
                        help="the make_corpus.py --seed of --data_dir, recorded in results.json (known for data/demo)")
    parser.add_argument("--output_dir", type=Path,
                        help="results: results.json, README.md, plots, stages/ (default results/layer_pruning; "
                             "with --quick, runs/layer_pruning_quick/results)")
    parser.add_argument("--runs_dir", type=Path,
                        help="checkpoints and logs, one folder per stage (default runs/layer_pruning; with --quick, "
                             "runs/layer_pruning_quick)")
    parser.add_argument("--models", help="comma-separated stages or models to run now (e.g. D_interctc_sd,"
                                         "E_dedicated); default all; finished ones are skipped anyway")
    parser.add_argument("--with_dedicated_interctc", action="store_true",
                        help="also train E_dedicated_interctc (dedicated depths with intermediate CTC)")
    parser.add_argument("--with_selfcond", action="store_true", help="also train F_selfcond_sd")
    parser.add_argument("--with_every_layer_interctc", action="store_true",
                        help="also train G_interctc_every_sd (D with intermediate CTC after every layer)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="device for training and evaluation (default: cuda when available)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads per training/evaluation process (OMP_NUM_THREADS); default: torch's "
                             "(all cores), 1 with --quick. On a CPU shared with other jobs use 1: two OpenMP threads "
                             "competing for busy cores ran a training step 25x slower than one thread here")
    parser.add_argument("--git_commit", action="store_true",
                        help="after each stage, commit --output_dir (and nothing else) with git")
    parser.add_argument("--rebuild_only", action="store_true",
                        help="run nothing; rebuild results.json, README.md and plots from the finished stages")
    return parser.parse_args(argv)


def git_commit(output_dir: Path, message: str, log=print, tries: int = 5) -> bool:
    """Commit the results folder only (never other files), so partial results are kept as stages finish.

    A failed commit (another git process holding index.lock, no git) is reported and retried, never fatal: the
    results are on disk either way, and the next stage commits them again.
    """
    path = os.path.relpath(output_dir.resolve(), ROOT)
    for attempt in range(tries):
        added = subprocess.run(["git", "add", "--", path], cwd=ROOT, capture_output=True, text=True)
        done = added if added.returncode else subprocess.run(["git", "commit", "-m", message, "--", path], cwd=ROOT,
                                                             capture_output=True, text=True)
        if done.returncode == 0:
            log(done.stdout.strip().splitlines()[0] if done.stdout.strip() else "committed")
            return True
        if "index.lock" not in done.stderr:
            break
        time.sleep(2 + 3 * attempt)
    log(f"warning: could not commit {path}: {(done.stdout + done.stderr).strip()}")
    return False


def select_stages(stages: list, models: str | None) -> list:
    if not models:
        return stages
    wanted = [m.strip() for m in models.split(",") if m.strip()]
    known = {s.name for s in stages} | {s.model for s in stages}
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise ExperimentError(f"--models: unknown {unknown}; choose from {sorted(known)} (F_selfcond_sd needs "
                              "--with_selfcond, E_dedicated_interctc --with_dedicated_interctc, "
                              "G_interctc_every_sd --with_every_layer_interctc)")
    return [s for s in stages if s.name in wanted or s.model in wanted]


def set_child_threads(threads: int | None) -> None:
    """CPU threads of every child process (train.py, evaluate_depths.py); None leaves torch's default."""
    if threads is None:
        return
    if threads < 1:
        raise ExperimentError(f"--threads must be at least 1, got {threads}")
    # Inherited by every child process and read by torch at import.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


def experiment_folders(name: str, quick: bool, output_dir: Path | None, runs_dir: Path | None) -> tuple:
    """(output_dir, runs_dir) of experiment `name`: the given ones, else results/<name> and runs/<name>, or with
    --quick runs/<name>_quick/results and runs/<name>_quick (quick results are not the experiment's)."""
    if quick:
        root = ROOT / "runs" / f"{name}_quick"
        return output_dir or root / "results", runs_dir or root
    return output_dir or ROOT / "results" / name, runs_dir or ROOT / "runs" / name


def main(argv=None) -> int:
    args = parse_args(argv)
    set_child_threads(args.threads if args.threads is not None else (1 if args.quick else None))
    recipe_path = args.recipe or (QUICK_RECIPE if args.quick else FULL_RECIPE)
    output_dir, runs_dir = experiment_folders("layer_pruning", args.quick, args.output_dir, args.runs_dir)
    recipe = load_recipe(recipe_path)
    data_dir = args.data_dir
    if not (data_dir / "train" / "metadata.csv").is_file() or not (data_dir / "validation" / "metadata.csv").is_file():
        raise ExperimentError(f"{data_dir} needs train/ and validation/ splits with metadata.csv (audiofolder, "
                              "as training/make_corpus.py writes)")
    test_splits = ([s.strip() for s in args.test_splits.split(",") if s.strip()] if args.test_splits
                   else find_test_splits(data_dir))
    subset = {k: v for k, v in recipe["data"].items() if v}
    corpus = describe_corpus(data_dir, ["train", "validation", *test_splits], corpus_seed(data_dir, args.corpus_seed),
                             subset)
    fingerprint = fingerprint_of(corpus, recipe, test_splits)
    stages = plan_stages(recipe, args.with_dedicated_interctc, args.with_selfcond, args.with_every_layer_interctc)
    experiment = {"corpus": corpus, "recipe": dict(recipe, path=os.path.relpath(Path(recipe_path).resolve(), ROOT)),
                  "test_splits": test_splits, "fingerprint": fingerprint,
                  "command": " ".join(["python", "training/experiments/layer_pruning.py", *(argv or sys.argv[1:])])}

    previous = output_dir / "results.json"
    if args.rebuild_only and previous.is_file():
        # A rebuild reports the run that made the stages, not itself.
        experiment["command"] = json.loads(previous.read_text()).get("command", experiment["command"])
    # A finished stage from another corpus or recipe must not be mixed in: check them all before running anything.
    for path in sorted((output_dir / "stages").glob("*.json")):
        check_same_experiment(path, fingerprint, "stage result")
    if not args.rebuild_only:
        for stage in select_stages(stages, args.models):
            if (output_dir / "stages" / f"{stage.name}.json").is_file():
                print(f"[{stage.name}] finished earlier, skipped")
                continue
            run_stage(stage, recipe, data_dir, test_splits, output_dir, runs_dir, fingerprint, args.device)
            for path in rebuild_outputs(output_dir, experiment, [s.name for s in stages]):
                print("wrote", path)
            if args.git_commit:
                git_commit(output_dir, f"layer pruning experiment: stage {stage.name} finished")
    for path in rebuild_outputs(output_dir, experiment, [s.name for s in stages]):
        print("wrote", path)
    return 0


def stop_on_sigterm(signum, frame):
    """SIGTERM handler of the experiment drivers (this one and shallow_end.py)."""
    # SIGTERM (a scheduler, `kill`) takes the same path as Ctrl-C: the running child is stopped, wall time kept.
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        sys.exit(main())
    except ExperimentError as error:
        sys.exit(f"layer_pruning: {error}")
