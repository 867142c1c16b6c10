#!/usr/bin/env python
"""The shallow end: can one model, pruned to 1 or 2 layers, match models trained at 1 or 2 layers?

    python training/experiments/shallow_end.py --data_dir corpora/shallow-end-0.5h --corpus_seed 3 --threads 1
    python training/experiments/shallow_end.py --quick --output_dir /tmp/se --runs_dir /tmp/se/runs   # a minute
    python training/experiments/shallow_end.py --rebuild_only        # README.md, results.json, plot from the stages

The layer-pruning experiment (results/layer_pruning) found that D (intermediate CTC + stochastic depth) pruned to
4 or 6 layers is as good as a model trained there, and clearly worse at 2. This experiment trains D again, the
dedicated models (plain CTC, trained at one depth) and D with the package's shallow-end training options, alone and
together: per-exit intermediate-CTC weights, sandwich depth sampling, in-place self-distillation. Each variant is D's
config with the recipe's `overrides`; the recipe's `stage_order` says which stage runs when, so that the most
informative comparisons finish first. Every pruned model is measured at every depth with the `top` strategy.

The stages are layer_pruning.py's: the same resumable `run_stage` (train.py and evaluate_depths.py as
subprocesses, result file `<output_dir>/stages/<stage>.json` written last), the same record format. After every
stage a fresh `--rebuild_only` process
- writes each finished stage's word errors per test utterance at every depth it is reported at to
  `<output_dir>/utterance_errors/<stage>.json` (from the weights under `--runs_dir`, checked against the stage's
  corpus WER), so that the paired bootstrap needs the results folder only;
- rebuilds results.json, README.md (paired-bootstrap intervals against the dedicated models and against D, the goal
  verdict, per-step training cost) and wer_vs_depth_<split>.png from whatever stages are finished.
A fresh process renders, so that a renderer improved while a run of hours goes on applies to its next stage.

The goal each model is judged by: at every depth with a dedicated model, the upper end of the 95% interval of its
WER relative to that model at most +5%; at full depth, the upper end relative to D at most +2%.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import layer_pruning as lp  # noqa: E402
from layer_pruning_report import find, load_stages, minutes, package_version, write_text_atomically  # noqa: E402

ROOT = lp.ROOT
FULL_RECIPE = ROOT / "training" / "recipes" / "shallow_end.json"
QUICK_RECIPE = ROOT / "training" / "recipes" / "shallow_end_quick.json"
SCRIPT = Path(__file__).resolve()
EXTRA_KEYS = frozenset({"variants", "stage_order"})
# What two stages must share to be compared: the stages themselves (variants, order, dedicated depths) may grow.
SHARED_KEYS = ("model_config", "training", "data", "evaluation")
CLAIM, DEDICATED = "D_interctc_sd", "E_dedicated"
RELATIVE_GOAL = 5.0  # percent: at each dedicated depth, upper end of the interval against the dedicated model
FULL_DEPTH_GOAL = 2.0  # percent: at full depth, upper end of the interval against D
RESAMPLES, CONFIDENCE = 10_000, 0.95


def load_recipe(path: Path) -> dict:
    """Read and check a shallow-end recipe: layer_pruning.py's keys plus `variants` and `stage_order`."""
    recipe = lp.load_recipe(path, EXTRA_KEYS)
    names = [CLAIM] + [f"E_dedicated_d{k}" for k in recipe["dedicated_depths"]]
    for variant in recipe["variants"]:
        if set(variant) != {"name", "label", "overrides"}:
            raise lp.ExperimentError(f"recipe {path}: each variant needs exactly name, label and overrides, got "
                                     f"{sorted(variant)}")
        names.append(variant["name"])
    if len(set(names)) != len(names):
        raise lp.ExperimentError(f"recipe {path}: stage names repeat: {names}")
    unknown = [name for name in recipe["stage_order"] if name not in names]
    if unknown or len(set(recipe["stage_order"])) != len(recipe["stage_order"]):
        raise lp.ExperimentError(f"recipe {path}: stage_order lists unknown or repeated stages {unknown}; the stages "
                                 f"are {names}")
    return recipe


def labels(recipe: dict) -> dict:
    """Model name -> the label tables and the plot show."""
    return {CLAIM: "D interCTC + SD", DEDICATED: "E trained at that depth",
            **{v["name"]: v["label"] for v in recipe["variants"]}}


def plan_stages(recipe: dict) -> list:
    """Every stage in the recipe's `stage_order` (stages it does not list run last, in recipe order)."""
    base = dict(recipe["model_config"])
    depth = base["num_hidden_layers"]
    strategies = list(recipe["evaluation"]["strategies"])
    stages = [lp.Stage(CLAIM, CLAIM, depth, base, strategies)]
    stages += [lp.Stage(f"E_dedicated_d{k}", DEDICATED, k,
                        dict(lp.plain_ctc(base), num_hidden_layers=k, stochastic_depth_rate=0.0))
               for k in recipe["dedicated_depths"]]
    stages += [lp.Stage(v["name"], v["name"], depth, dict(base, **v["overrides"]), strategies)
               for v in recipe["variants"]]
    rank = {name: i for i, name in enumerate(recipe["stage_order"])}
    return sorted(stages, key=lambda s: rank.get(s.name, len(rank)))


def check_configs(stages: list) -> None:
    """Build each stage's model config before anything trains, so a bad override fails in seconds, not hours."""
    from hf_prunable_ctc import PrunableCTCConfig

    for stage in stages:
        try:
            PrunableCTCConfig(**stage.model_config)
        except ValueError as error:
            raise lp.ExperimentError(f"stage {stage.name}: its model config is refused: {error}") from None


def check_stage_configs(output_dir: Path, stages: list) -> None:
    """A finished stage must have been trained with the config the recipe now gives it."""
    planned = {s.name: s.model_config for s in stages}
    for path in sorted((output_dir / "stages").glob("*.json")):
        stage = json.loads(path.read_text())
        if stage["stage"] in planned and stage.get("model_config") != planned[stage["stage"]]:
            raise lp.ExperimentError(f"stage result {path} was trained with another model config than the recipe "
                                     "now gives it: move it away to re-run it, or restore the recipe")


# ---------------------------------------------------------------------------------------------- utterance errors


def write_utterance_errors(output_dir: Path, runs_dir: Path, data_dir: Path, recipe: dict, log=print) -> list:
    """For each finished stage without them, write `<output_dir>/utterance_errors/<stage>.json`:
    {split: {depth: {"strategy", "layers", "errors", "words"}}}, word edits and reference words per test utterance,
    at every depth of its records, each corpus WER checked against the record's. Returns the stages whose errors
    are missing because their weights are gone."""
    missing = []
    max_samples = recipe["data"].get("max_eval_samples")
    for path in sorted((output_dir / "stages").glob("*.json")):
        stage = json.loads(path.read_text())
        target = output_dir / "utterance_errors" / path.name
        if target.is_file():
            continue
        run_dir = runs_dir / stage["stage"]
        if not (run_dir / "model.safetensors").is_file():
            missing.append(stage["stage"])
            continue
        # Late: torch and transformers load only when a stage needs its errors written.
        from hf_prunable_ctc.evaluation.metrics import utterance_word_errors
        from layer_pruning_bootstrap import StageModel, check

        log(f"[{stage['stage']}] word errors per utterance")
        splits = sorted({r["split"] for r in stage["records"]})
        model = StageModel(run_dir, data_dir, {split: max_samples for split in splits})
        errors = {}
        for record in stage["records"]:
            references, predictions = model.transcribe(record["split"], record["layers"])
            edits, words = utterance_word_errors(references, predictions)
            check({"records": stage["records"]}, record["model"], record["depth"], record["strategy"],
                  record["split"], 100 * edits.sum() / words.sum())
            errors.setdefault(record["split"], {})[str(record["depth"])] = {
                "strategy": record["strategy"], "layers": record["layers"], "errors": edits.tolist(),
                "words": words.tolist()}
        lp.write_json_atomically(target, errors)
    return missing


def load_utterance_errors(output_dir: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in sorted((output_dir / "utterance_errors").glob("*.json"))}


def comparisons(stages: list, errors: dict, split: str, full_depth: int, resamples: int = RESAMPLES) -> list:
    """Paired bootstrap of every pruned model against the dedicated model at each dedicated depth, and of every
    variant against D at full depth: [{"model", "depth", "reference", **paired_bootstrap}]."""
    from hf_prunable_ctc.evaluation.significance import paired_bootstrap

    dedicated = {s["trained_depth"]: s["stage"] for s in stages if s["model"] == DEDICATED}
    pruned = [s for s in stages if s["model"] != DEDICATED]
    out = []

    def compare(stage, reference, depth, reference_model):
        a = errors.get(stage["stage"], {}).get(split, {}).get(str(depth))
        b = errors.get(reference, {}).get(split, {}).get(str(depth))
        if a and b:
            if a["words"] != b["words"]:
                raise RuntimeError(f"{stage['stage']} and {reference} were scored on different references ({split})")
            result = paired_bootstrap(a["errors"], b["errors"], a["words"], resamples, confidence=CONFIDENCE)
            out.append({"model": stage["model"], "depth": depth, "reference": reference_model, **result})

    for stage in pruned:
        for depth in sorted(dedicated):
            compare(stage, dedicated[depth], depth, DEDICATED)
        if stage["model"] != CLAIM:
            compare(stage, CLAIM, full_depth, CLAIM)
    return out


def layers_text(depth: int) -> str:
    return f"{depth} layer{'s' if depth > 1 else ''}"


def goal_verdict(model: str, compared: list, dedicated_depths: list, full_depth: int) -> str:
    """Whether `model` meets the goal, from its comparisons at the planned `dedicated_depths` (and at full depth
    against D); names the comparisons still missing when it cannot be judged yet."""
    rows = {(c["depth"], c["reference"]): c for c in compared if c["model"] == model}
    needed = [(d, DEDICATED) for d in dedicated_depths] + ([] if model == CLAIM else [(full_depth, CLAIM)])
    absent = [f"{layers_text(d)} vs {'D' if ref == CLAIM else 'E'}" for d, ref in needed if (d, ref) not in rows]
    failed = []
    for (depth, reference), c in sorted(rows.items()):
        limit = FULL_DEPTH_GOAL if reference == CLAIM else RELATIVE_GOAL
        if c["relative_ci"] is None or c["relative_ci"][1] > limit:
            failed.append(layers_text(depth))
    if failed:
        return "no: " + ", ".join(failed) + (" (not yet measured: " + ", ".join(absent) + ")" if absent else "")
    if absent:
        return "not yet known (missing: " + ", ".join(absent) + ")"
    return "yes"


# ---------------------------------------------------------------------------------------------- the report


def goal_table(compared: list, models: list, names: dict, dedicated_depths: list, full_depth: int) -> list:
    """A row per pruned model: relative WER (interval) at each dedicated depth against E, at full depth against D,
    and the verdict."""
    columns = [(d, DEDICATED) for d in sorted(dedicated_depths)] + [(full_depth, CLAIM)]
    rows = {(c["model"], c["depth"], c["reference"]): c for c in compared}
    lines = ["| model | " + " | ".join(f"{layers_text(d)} vs {'D' if ref == CLAIM else 'E'}" for d, ref in columns)
             + " | meets the goal |", "|---|" + "---:|" * len(columns) + "---|"]
    for model in models:
        cells = []
        for depth, reference in columns:
            c = rows.get((model, depth, reference))
            cells.append("" if c is None or c.get("relative") is None else
                         f"{c['relative']:+.0f}% ({c['relative_ci'][0]:+.0f} to {c['relative_ci'][1]:+.0f})")
        lines.append(f"| {names[model]} | " + " | ".join(cells) + " | "
                     + goal_verdict(model, compared, dedicated_depths, full_depth) + " |")
    return lines


def wer_table(records: list, split: str, models: list, names: dict, full_depth: int) -> list:
    lines = ["| depth | " + " | ".join(names[m] for m in models) + " | " + names[DEDICATED] + " |",
             "|---:|" + "---:|" * (len(models) + 1)]
    for depth in range(1, full_depth + 1):
        cells = [find(records, model=m, depth=depth, strategy="top", split=split) for m in models]
        cells.append(find(records, model=DEDICATED, depth=depth, split=split))
        lines.append(f"| {depth} | " + " | ".join(f"{r['wer']:.1f} / {r['cer']:.1f}" if r else "" for r in cells)
                     + " |")
    return lines


def comparison_table(compared: list, names: dict) -> list:
    lines = ["| model | depth | against | its WER % | reference WER % | difference, points (CI) | relative (CI) | "
             "share of resamples where it is better |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for c in compared:
        low, high = c["difference_ci"]
        rel = (f"{c['relative']:+.1f}% ({c['relative_ci'][0]:+.1f}% to {c['relative_ci'][1]:+.1f}%)"
               if c.get("relative_ci") else "n/a")
        lines.append(f"| {names[c['model']]} | {c['depth']} | {'D' if c['reference'] == CLAIM else 'E'} | "
                     f"{c['wer_a']:.1f} | {c['wer_b']:.1f} | {c['difference']:+.1f} ({low:+.1f} to {high:+.1f}) | "
                     f"{rel} | {c['share_a_better']:.2f} |")
    return lines


def cost_table(stages: list) -> list:
    lines = ["| stage | trained depth | parameters | steps | training (min) | seconds per step | evaluation (min) | "
             "trained on |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in stages:
        params = max((r["params"] for r in s["records"]), default=0)
        per_step = f"{s['train_wall_s'] / s['train_steps']:.2f}" if s.get("train_steps") else "-"
        lines.append(f"| {s['stage']} | {s['trained_depth']} | {params:,} | {s.get('train_steps')} | "
                     f"{minutes(s.get('train_wall_s'))} | {per_step} | {minutes(s.get('evaluate_wall_s'))} | "
                     f"{'; '.join(s.get('trained_on') or [])} |")
    return lines


def format_readme(results: dict, stages: list, stage_order: list, compared: dict, names: dict,
                  missing_errors: list, finding: str | None, plots: list) -> str:
    corpus, recipe = results["corpus"], results["recipe"]
    config, training = recipe["model_config"], recipe["training"]
    full_depth = config["num_hidden_layers"]
    done = [s["stage"] for s in stages]
    still = [name for name in stage_order if name not in done]
    models = [m for m in [CLAIM] + [v["name"] for v in recipe["variants"]] if any(s["model"] == m for s in stages)]
    dedicated_depths = sorted(s["trained_depth"] for s in stages if s["model"] == DEDICATED)
    lines = [
        f"# The shallow end: one model at every depth, 1 to {full_depth} layers",
        "",
        "Generated by `training/experiments/shallow_end.py` from the finished stages; rebuilt after every stage. "
        f"Stages finished: {len(done)} of {len(stage_order)}"
        + (f"; still to run: {', '.join(still)}." if still else "."),
        "",
        f"- Command: `{results['command']}`. Rerunning it resumes (finished stages are skipped, an unfinished one "
        f"resumes from its last checkpoint); `{results['command']} --rebuild_only` rebuilds this folder.",
        f"- Corpus: `{corpus['data_dir']}`, {corpus['hours']} h, manifest sha256 `{corpus['manifest_sha256'][:16]}`, "
        f"make_corpus seed {corpus['seed']}" + (f", subset {corpus['subset']}" if corpus.get("subset") else "")
        + "; " + ", ".join(f"{name} {s['utterances']} utterances / {s['voices']} voices / {s['hours']} h"
                           for name, s in corpus["splits"].items()) + ".",
        f"- Recipe `{recipe.get('path')}`: {config['encoder_type']}, {full_depth} layers, d={config['hidden_size']}; "
        f"{training['max_steps']} steps of {training['per_device_train_batch_size']} utterances, lr "
        f"{training['learning_rate']} ({training['lr_scheduler_type']}), the same for every stage. D: intermediate "
        f"CTC at {config['interctc_layers']} (weight {config['interctc_weight']}), stochastic depth "
        f"{config['stochastic_depth_rate']} ({config['stochastic_depth_schedule']}); E: plain CTC, no stochastic "
        "depth, trained at one depth. Pruned models keep their first k layers (`top`).",
        f"- Package version {results['package_version']}. The recipe's note: {recipe.get('description', '')}",
        "",
        "| variant | D's config with |", "|---|---|",
        *[f"| {v['label']} | `{json.dumps(v['overrides'])}` |" for v in recipe["variants"]],
        "",
        "## The goal",
        "",
        f"One model whose WER at every depth with a dedicated model is within +{RELATIVE_GOAL:g}% relative of that "
        f"model (the upper end of the {100 * CONFIDENCE:.0f}% interval), and at full depth within "
        f"+{FULL_DEPTH_GOAL:g}% of D. Dedicated models finished at depths {dedicated_depths or 'none yet'}.",
        "",
    ]
    for split in results["test_splits"][:1]:
        lines += [f"Split `{split}`, `top`: each cell is the WER relative to the reference, in percent of the "
                  f"reference's WER, with its {100 * CONFIDENCE:.0f}% interval (paired bootstrap, below).", "",
                  *goal_table(compared[split], models, names, recipe["dedicated_depths"], full_depth), ""]
    if missing_errors:
        lines += [f"No word errors per utterance for {', '.join(missing_errors)} (their weights are gone from the "
                  "runs folder), so no intervals for them.", ""]
    lines += [finding.strip() if finding else "_The interpretation is written by hand in `finding.md`._", ""]
    for split in results["test_splits"]:
        rows = compared[split]
        lines += [f"## Split `{split}`", "", "WER % / CER % by depth (pruned models: first k layers):", "",
                  *wer_table(results["records"], split, models, names, full_depth), ""]
        if rows:
            lines += [f"Paired bootstrap over the {rows[0]['utterances']} utterances ({rows[0]['resamples']:,} "
                      f"resamples, {100 * CONFIDENCE:.0f}% intervals; `hf_prunable_ctc.evaluation.significance`): "
                      "every pruned model against E at each dedicated depth, every variant against D at full depth. "
                      "Relative: in percent of the reference's WER.", "", *comparison_table(rows, names), ""]
    lines += ["## Training cost", "", *cost_table(stages), ""]
    if plots:
        lines += ["## Plot", ""] + [f"![{name}]({name})" for name in plots] + [""]
    return "\n".join(lines)


def plot_wer_by_depth(records: list, split: str, models: list, names: dict, path: Path) -> bool:
    """A line per pruned model (top), the dedicated models as points at their depth."""
    if not any(r["split"] == split for r in records):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in models:
        points = sorted((r["depth"], r["wer"]) for r in records
                        if r["model"] == model and r["strategy"] == "top" and r["split"] == split)
        if points:
            ax.plot(*zip(*points), marker="o", label=names[model])
    points = sorted((r["depth"], r["wer"]) for r in records if r["model"] == DEDICATED and r["split"] == split)
    if points:
        ax.plot(*zip(*points), linestyle="none", marker="*", markersize=14, color="black", label=names[DEDICATED])
    ax.set(xlabel="encoder layers kept", ylabel="WER (%)", title=f"WER by depth, no fine-tuning (split {split})")
    ax.set_xticks(sorted({r["depth"] for r in records}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def rebuild(output_dir: Path, runs_dir: Path, data_dir: Path, experiment: dict, recipe: dict,
            stage_order: list) -> list:
    """Utterance errors of new stages, then results.json, README.md and the plot; returns the paths written."""
    missing_errors = write_utterance_errors(output_dir, runs_dir, data_dir, recipe)
    stages = load_stages(output_dir, stage_order)
    results = {"corpus": experiment["corpus"], "recipe": experiment["recipe"], "package_version": package_version(),
               "test_splits": experiment["test_splits"], "command": experiment["command"],
               "stages": {s["stage"]: {k: s.get(k) for k in ("model", "trained_depth", "model_config",
                                                             "train_steps", "train_wall_s", "evaluate_wall_s",
                                                             "trained_on", "evaluated_on", "finished_at",
                                                             "git_commit")} for s in stages},
               "records": [r for s in stages for r in s["records"]]}
    errors = load_utterance_errors(output_dir)
    full_depth = recipe["model_config"]["num_hidden_layers"]
    compared = {split: comparisons(stages, errors, split, full_depth) for split in experiment["test_splits"]}
    results["paired_bootstrap"] = {"resamples": RESAMPLES, "confidence": CONFIDENCE, "comparisons": compared}
    names = labels(recipe)
    models = [CLAIM] + [v["name"] for v in recipe["variants"]]
    plots = [f"wer_vs_depth_{split}.png" for split in experiment["test_splits"]
             if plot_wer_by_depth(results["records"], split, models, names, output_dir / f"wer_vs_depth_{split}.png")]
    write_text_atomically(output_dir / "results.json", json.dumps(results, indent=1) + "\n")
    finding = output_dir / "finding.md"
    write_text_atomically(output_dir / "README.md", format_readme(
        results, stages, stage_order, compared, names, missing_errors,
        finding.read_text() if finding.is_file() else None, plots))
    return [output_dir / "results.json", output_dir / "README.md"] + [output_dir / p for p in plots]


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny model, a few steps on a subset of data/demo ({QUICK_RECIPE.name}); a minute")
    parser.add_argument("--recipe", type=Path, help=f"default {FULL_RECIPE.relative_to(ROOT)} "
                                                    f"({QUICK_RECIPE.relative_to(ROOT)} with --quick)")
    parser.add_argument("--data_dir", type=Path, default=lp.DEMO_CORPUS,
                        help="audiofolder corpus with train/validation/test* splits (training/make_corpus.py)")
    parser.add_argument("--corpus_seed", type=int, help="the make_corpus.py --seed of --data_dir, for the records")
    parser.add_argument("--output_dir", type=Path, help="default results/shallow_end (with --quick, "
                                                        "runs/shallow_end_quick/results)")
    parser.add_argument("--runs_dir", type=Path, help="default runs/shallow_end (with --quick, runs/shallow_end_quick)")
    parser.add_argument("--models", help="comma-separated stages or models to run now; default all")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="CPU threads per training/evaluation process (1 with --quick); "
                                                    "use 1 on a CPU shared with other jobs")
    parser.add_argument("--rebuild_only", action="store_true",
                        help="train nothing: utterance errors of finished stages, then results.json, README.md, plot")
    # The run's own command, which the rebuilds it starts record in results.json instead of theirs.
    parser.add_argument("--command", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    lp.set_child_threads(args.threads if args.threads is not None else (1 if args.quick else None))
    recipe_path = args.recipe or (QUICK_RECIPE if args.quick else FULL_RECIPE)
    output_dir, runs_dir = lp.experiment_folders("shallow_end", args.quick, args.output_dir, args.runs_dir)
    recipe = load_recipe(recipe_path)
    test_splits = lp.find_test_splits(args.data_dir)
    subset = {k: v for k, v in recipe["data"].items() if v}
    corpus = lp.describe_corpus(args.data_dir, ["train", "validation", *test_splits],
                                lp.corpus_seed(args.data_dir, args.corpus_seed), subset)
    fingerprint = lp.fingerprint_of(corpus, {k: recipe[k] for k in SHARED_KEYS}, test_splits)
    stages = plan_stages(recipe)
    order = [s.name for s in stages]
    previous = output_dir / "results.json"
    command = args.command or " ".join(["python", "training/experiments/shallow_end.py", *argv])
    if args.rebuild_only and not args.command and previous.is_file():
        command = json.loads(previous.read_text()).get("command", command)  # the run that made the stages
    experiment = {"corpus": corpus, "recipe": dict(recipe, path=os.path.relpath(Path(recipe_path).resolve(), ROOT)),
                  "test_splits": test_splits, "command": command}
    for path in sorted((output_dir / "stages").glob("*.json")):
        lp.check_same_experiment(path, fingerprint, "stage result")
    check_stage_configs(output_dir, stages)
    if args.rebuild_only:
        for path in rebuild(output_dir, runs_dir, args.data_dir, experiment, recipe, order):
            print("wrote", path)
        return 0
    check_configs(stages)
    rebuild_command = [sys.executable, str(SCRIPT), *argv, "--rebuild_only", "--output_dir", str(output_dir),
                       "--runs_dir", str(runs_dir), "--command", command]
    rebuilt = False
    for stage in lp.select_stages(stages, args.models):
        if (output_dir / "stages" / f"{stage.name}.json").is_file():
            print(f"[{stage.name}] finished earlier, skipped")
            continue
        lp.run_stage(stage, recipe, args.data_dir, test_splits, output_dir, runs_dir, fingerprint, args.device)
        # A failed rebuild must not stop the stages still to train: it is retried after the next one, or by hand.
        rebuilt = subprocess.run(rebuild_command, cwd=ROOT).returncode == 0
        if not rebuilt:
            print(f"warning: rebuilding the report after {stage.name} failed; rerun with --rebuild_only")
    return 0 if rebuilt else subprocess.run(rebuild_command, cwd=ROOT).returncode


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lp.stop_on_sigterm)
    try:
        sys.exit(main())
    except lp.ExperimentError as error:
        sys.exit(f"shallow_end: {error}")
