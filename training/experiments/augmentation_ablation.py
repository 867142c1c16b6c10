#!/usr/bin/env python
"""Augmentation ablation: the reference recipe with and without augmentation, side by side.

    python training/experiments/augmentation_ablation.py --augmented runs/reference-augmented \
        --plain runs/reference-v2 --output_dir results/augmentation_ablation

Each folder holds what `training/evaluate_depths.py --extra_splits ... --conditions silence,long_form` wrote for
that model: `depth_report.json` (the `--split`), `depth_report_<split>.json` per further split and
`conditions.json`. Writes `results.json` and `README.md` to `--output_dir`: WER/CER per split and depth for both
models (the `--strategy` layers, by default `top`, the stored schedule of the reference model), what augmentation
changes, the WER points that silence and minute-long recordings add at each depth, and the recipe's targets at full
depth. Only numbers are read: nothing is retrained or re-evaluated.

When the folders are the training runs' output folders, their `trainer_state.json` (or that of their last
checkpoint) gives the validation WER by step, plotted to `training_curves.png` with any further runs given as
`--curves NAME=FOLDER` (e.g. an abandoned variant), and their `averaging/result.json` whether the checkpoint average
became the final model.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from pathlib import Path

from hf_prunable_ctc.hub.publish import EXTRA_SPLIT_PREFIX
from hf_prunable_ctc.training.trainer import last_complete_checkpoint

REPORT = "depth_report.json"
CONDITIONS = "conditions.json"
# The augmented recipe's targets at full depth: WER on each split, and WER points a listening condition may add.
WER_TARGETS = {"test": 20.0, "test_unseen_engine": 40.0, "test_unseen_text": 40.0}
CONDITION_COST_TARGET = 2.0
MODELS = ("augmented", "plain")


def load_reports(folder: str, strategy: str) -> dict:
    """{"splits": {split: {depth: {"wer", "cer"}}}, "utterances": {split: n}, "conditions": {depth: {...}} or None}
    from the report files in `folder`; a missing main report or a strategy the report lacks is a `ValueError`."""
    main = os.path.join(folder, REPORT)
    if not os.path.isfile(main):
        raise ValueError(f"{folder!r} has no {REPORT}: run training/evaluate_depths.py with --output_dir {folder}")
    paths = [main] + sorted(glob.glob(os.path.join(folder, EXTRA_SPLIT_PREFIX + "*.json")))
    splits, utterances = {}, {}
    for path in paths:
        report = json.loads(Path(path).read_text())
        rows = {r["depth"]: {"wer": r["wer"], "cer": r["cer"]} for r in report["records"]
                if r["strategy"] == strategy}
        if not rows:
            found = sorted({r["strategy"] for r in report["records"]})
            raise ValueError(f"{path} has no records of strategy {strategy!r} (it has {', '.join(found)})")
        splits[report["split"]] = rows
        utterances[report["split"]] = report["utterances"]
    conditions = None
    if os.path.isfile(os.path.join(folder, CONDITIONS)):
        result = json.loads(Path(folder, CONDITIONS).read_text())
        conditions = {"utterances": result["utterances"], "settings": result["settings"], "by_depth": {},
                      "cost": {int(depth): costs for depth, costs in result["cost"].items()}}
        for r in result["records"]:
            conditions["by_depth"].setdefault(r["depth"], {})[r["condition"]] = r["wer"]
    return {"splits": splits, "utterances": utterances, "conditions": conditions}


def validation_curve(folder: str) -> list[tuple[int, float]]:
    """[(step, validation WER % at full depth)] from the run's `trainer_state.json`, or its last checkpoint's when
    the run has not finished; [] when there is neither."""
    path = os.path.join(folder, "trainer_state.json")
    if not os.path.isfile(path):
        checkpoint = last_complete_checkpoint(folder)
        if checkpoint is None:
            return []
        path = os.path.join(checkpoint, "trainer_state.json")
    history = json.loads(Path(path).read_text())["log_history"]
    return [(e["step"], round(100 * e["eval_wer"], 2)) for e in history if "eval_wer" in e]


def averaging_outcome(folder: str) -> dict | None:
    """The run's `averaging/result.json` (checkpoint averaging, `train.py --average_checkpoints`), if any."""
    path = os.path.join(folder, "averaging", "result.json")
    return json.loads(Path(path).read_text()) if os.path.isfile(path) else None


def plot_curves(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, points in curves.items():
        if points:
            ax.plot(*zip(*points), marker=".", label=name)
    ax.set(xlabel="training step", ylabel="validation WER % (full depth)", ylim=(0, 110),
           title="Validation WER during training (synthetic speech)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(augmented: dict, plain: dict) -> dict:
    """Per split and depth both models' WER/CER and the difference (augmented - plain, negative = augmentation
    helps); per depth each model's condition costs; the targets at full depth."""
    splits = [s for s in augmented["splits"] if s in plain["splits"]]
    result = {"splits": {}, "conditions": {}, "targets": {}}
    for split in splits:
        depths = sorted(set(augmented["splits"][split]) & set(plain["splits"][split]))
        result["splits"][split] = {
            "utterances": augmented["utterances"][split],
            "depths": {depth: {"augmented": augmented["splits"][split][depth], "plain": plain["splits"][split][depth],
                               "wer_difference": augmented["splits"][split][depth]["wer"]
                               - plain["splits"][split][depth]["wer"]} for depth in depths},
        }
    for name, model in zip(MODELS, (augmented, plain)):
        if model["conditions"] is None:
            continue
        result["conditions"][name] = {"wer": model["conditions"]["by_depth"], "cost": model["conditions"]["cost"],
                                      "utterances": model["conditions"]["utterances"]}
    for name, model in zip(MODELS, (augmented, plain)):
        checks = {}
        for split, limit in WER_TARGETS.items():
            rows = model["splits"].get(split)
            if rows:
                wer = rows[max(rows)]["wer"]
                checks[f"{split} WER <= {limit:g}%"] = {"value": wer, "met": wer <= limit}
        if name in result["conditions"]:
            cost = result["conditions"][name]["cost"]
            full = cost[max(cost)]
            for condition, points in full.items():
                checks[f"{condition} adds <= {CONDITION_COST_TARGET:g} WER points"] = {
                    "value": points, "met": points <= CONDITION_COST_TARGET}
        result["targets"][name] = checks
    return result


def markdown(result: dict, sources: dict, strategy: str) -> str:
    lines = ["# Augmentation ablation (synthetic speech)", "",
             f"The reference recipe with augmentation (`{sources['augmented']}`) and without (`{sources['plain']}`), "
             f"same model, steps and corpus; layers kept by `{strategy}`; greedy CTC. WER % (CER %); difference = "
             "augmented - plain in WER points (negative: augmentation helps). Written by "
             "`python training/experiments/augmentation_ablation.py` from the models' reports.", ""]
    for split, entry in result["splits"].items():
        lines += [f"## `{split}` ({entry['utterances']} utterances)", "",
                  "| depth | augmented | plain | difference |", "|---:|---:|---:|---:|"]
        for depth, row in sorted(entry["depths"].items(), reverse=True):
            a, p = row["augmented"], row["plain"]
            lines.append(f"| {depth} | {a['wer']:.1f} ({a['cer']:.1f}) | {p['wer']:.1f} ({p['cer']:.1f}) | "
                         f"{row['wer_difference']:+.1f} |")
        lines.append("")
    if result["conditions"]:
        names = [name for name in MODELS if name in result["conditions"]]
        conditions = sorted({c for name in names for costs in result["conditions"][name]["cost"].values()
                             for c in costs})
        lines += ["## Listening conditions: WER points added", "",
                  "| depth | " + " | ".join(f"{name}: {c}" for name in names for c in conditions) + " |",
                  "|---:|" + "---:|" * (len(names) * len(conditions))]
        depths = sorted({d for name in names for d in result["conditions"][name]["cost"]}, reverse=True)
        for depth in depths:
            cells = [f"{result['conditions'][name]['cost'].get(depth, {}).get(c, float('nan')):+.1f}"
                     for name in names for c in conditions]
            lines.append(f"| {depth} | " + " | ".join(cells) + " |")
        lines.append("")
    averaging = {name: result.get("averaging", {}).get(name) for name in MODELS}
    if any(averaging.values()):
        lines += ["## Checkpoint averaging", "", "| model | steps averaged | validation metric: best single | "
                  "average | final model |", "|---|---|---:|---:|---|"]
        for name, outcome in averaging.items():
            if outcome and "metric_averaged" in outcome:
                steps = ", ".join(str(e["step"]) for e in sorted(outcome["snapshots"], key=lambda e: e["step"]))
                lines.append(f"| {name} | {steps} | {outcome['metric_before']:.4f} | {outcome['metric_averaged']:.4f}"
                             f" | {'the average' if outcome['adopted'] else 'the single best'} |")
        lines.append("")
    if result.get("curves"):
        lines += ["## Training", "", "![validation WER by step](training_curves.png)", "",
                  "Validation WER % at full depth (evaluation during training):", "",
                  "| step | " + " | ".join(result["curves"]) + " |", "|---:|" + "---:|" * len(result["curves"])]
        steps = sorted({step for points in result["curves"].values() for step, _ in points if step % 1000 == 0})
        for step in steps:
            cells = [next((f"{w:.1f}" for s, w in points if s == step), "-") for points in result["curves"].values()]
            lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## The augmented recipe's targets at full depth", "", "| target | augmented | plain |", "|---|---:|---:|"]
    targets = list(dict.fromkeys(t for name in MODELS for t in result["targets"].get(name, {})))
    for target in targets:
        cells = []
        for name in MODELS:
            check = result["targets"].get(name, {}).get(target)
            cells.append("-" if check is None else f"{check['value']:.1f} ({'met' if check['met'] else 'not met'})")
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--augmented", required=True, help="report folder of the model trained with augmentation")
    parser.add_argument("--plain", required=True, help="report folder of its twin trained without")
    parser.add_argument("--output_dir", default="results/augmentation_ablation")
    parser.add_argument("--strategy", default="top", help="which layers each depth keeps (a strategy of the reports)")
    parser.add_argument("--curves", nargs="*", default=[], metavar="NAME=FOLDER",
                        help="further training runs whose validation WER by step joins the plot")
    args = parser.parse_args(argv)
    further = {}
    for item in args.curves:
        name, _, folder = item.partition("=")
        if not name or not folder:
            parser.error(f"--curves takes NAME=FOLDER, got {item!r}")
        further[name] = folder
    try:
        augmented, plain = load_reports(args.augmented, args.strategy), load_reports(args.plain, args.strategy)
    except ValueError as error:
        parser.error(str(error))
    result = compare(augmented, plain)
    result["sources"] = {"augmented": args.augmented, "plain": args.plain, "strategy": args.strategy, **further}
    result["averaging"] = {name: averaging_outcome(folder) for name, folder in (("augmented", args.augmented),
                                                                                 ("plain", args.plain))}
    curves = {name: validation_curve(folder) for name, folder in
              {"augmented": args.augmented, "plain": args.plain, **further}.items()}
    result["curves"] = {name: points for name, points in curves.items() if points}
    os.makedirs(args.output_dir, exist_ok=True)
    if result["curves"]:
        plot_curves(result["curves"], os.path.join(args.output_dir, "training_curves.png"))
    Path(args.output_dir, "results.json").write_text(json.dumps(result, indent=2) + "\n")
    Path(args.output_dir, "README.md").write_text(markdown(result, result["sources"], args.strategy))
    print(f"wrote {args.output_dir}/results.json and README.md")
    return result


if __name__ == "__main__":
    main()
