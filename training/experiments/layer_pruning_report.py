"""results.json, README.md and plots of the layer-pruning experiment, rebuilt from whatever stages are finished.

Reads `<output_dir>/stages/*.json` (one file per finished stage, written by layer_pruning.py) and writes:
- `results.json`: {"corpus", "recipe", "package_version", "test_splits", "stages", "svcca_matrix", "records"}, each
  record {"model", "trained_depth", "depth", "strategy", "split", "wer", "cer", "params", ...}, WER/CER in percent;
- `README.md`: the claim at the dedicated depths (D pruned vs E trained there, relative WER difference), WER per
  depth for every pruned model and strategy, training cost; `finding.md` in the same folder, if present, is the
  hand-written interpretation and is included as is (it survives every rebuild), and `paired_bootstrap.json`
  (layer_pruning_bootstrap.py), if present, adds confidence intervals to the claim;
- `wer_vs_depth_<split>.png` (one panel per strategy, a line per model, dedicated models as points) and
  `svcca_A_vs_D_<split>.png` (SVCCA heatmaps of A and D side by side).
"""

from __future__ import annotations

import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PRUNED_MODELS = ("A_baseline", "B_interctc", "C_stochastic_depth", "D_interctc_sd", "F_selfcond_sd",
                 "G_interctc_every_sd")
DEDICATED_MODELS = ("E_dedicated", "E_dedicated_interctc")
ALL_MODELS = PRUNED_MODELS + DEDICATED_MODELS
MODEL_LABELS = {
    "A_baseline": "A plain CTC", "B_interctc": "B interCTC", "C_stochastic_depth": "C stoch. depth",
    "D_interctc_sd": "D interCTC + SD", "F_selfcond_sd": "F self-cond + SD",
    "G_interctc_every_sd": "G interCTC every layer + SD",
    "E_dedicated": "E trained at that depth", "E_dedicated_interctc": "E + interCTC",
}
CLAIM = "D_interctc_sd"
FOLLOW_UPS = ("F_selfcond_sd", "G_interctc_every_sd")  # variants of D, shown next to it where they ran
HEADLINE_BASELINE = "E_dedicated"


def package_version() -> str:
    try:
        return version("hf-prunable-ctc")
    except PackageNotFoundError:
        return "unknown (package not installed)"


def load_stages(output_dir: Path, stage_order: list) -> list:
    """Finished stage results, in the experiment's stage order (unknown stage names last, by name)."""
    stages = [json.loads(p.read_text()) for p in sorted((output_dir / "stages").glob("*.json"))]
    rank = {name: i for i, name in enumerate(stage_order)}
    return sorted(stages, key=lambda s: (rank.get(s["stage"], len(rank)), s["stage"]))


def build_results(stages: list, experiment: dict) -> dict:
    """The results.json document from the finished stages."""
    return {
        "corpus": experiment["corpus"],
        "recipe": experiment["recipe"],
        "package_version": package_version(),
        "test_splits": experiment["test_splits"],
        "command": experiment["command"],
        "stages": {s["stage"]: {k: s.get(k) for k in ("model", "trained_depth", "train_steps", "train_wall_s",
                                                       "evaluate_wall_s", "trained_on", "evaluated_on",
                                                       "finished_at", "git_commit")}
                   for s in stages},
        "svcca_matrix": {s["model"]: s["svcca_matrix"] for s in stages if s.get("svcca_matrix")
                         and s["model"] in PRUNED_MODELS},
        "records": [r for s in stages for r in s["records"]],
    }


def find(records, **where):
    """The one record matching all of `where`, or None."""
    hits = [r for r in records if all(r.get(k) == v for k, v in where.items())]
    return hits[0] if hits else None


def relative(wer: float, reference: float) -> str:
    """Relative WER difference in percent of the reference ("+12%" = 12% more errors than the reference)."""
    if reference == 0:
        return "n/a"
    return f"{100 * (wer - reference) / reference:+.0f}%"


def claim_table(records: list, split: str) -> list:
    """D pruned (top, and its best strategy) vs E trained at each dedicated depth, on one split."""
    depths = sorted({r["trained_depth"] for r in records if r["model"] == HEADLINE_BASELINE and r["split"] == split})
    has_interctc_e = any(r["model"] == "E_dedicated_interctc" for r in records)
    head = "| depth | E trained there: WER % | D pruned, top: WER % (vs E) | D pruned, best strategy: WER % (vs E) |"
    rule = "|---:|---:|---:|---:|"
    if has_interctc_e:
        head += " E with interCTC: WER % | D top vs E with interCTC |"
        rule += "---:|---:|"
    follow_ups = [m for m in FOLLOW_UPS if any(r["model"] == m and r["split"] == split for r in records)]
    for model in follow_ups:
        head += f" {MODEL_LABELS[model]} pruned, top: WER % (vs E) |"
        rule += "---:|"
    head += " A pruned, top: WER % (vs E) |"
    rule += "---:|"
    lines = [head, rule]
    for depth in depths:
        e = find(records, model=HEADLINE_BASELINE, depth=depth, split=split)
        top = find(records, model=CLAIM, depth=depth, strategy="top", split=split)
        candidates = [r for r in records if r["model"] == CLAIM and r["depth"] == depth and r["split"] == split]
        best = min(candidates, key=lambda r: r["wer"]) if candidates else None
        a_top = find(records, model="A_baseline", depth=depth, strategy="top", split=split)
        cells = [str(depth), f"{e['wer']:.1f}",
                 f"{top['wer']:.1f} ({relative(top['wer'], e['wer'])})" if top else "not run yet",
                 f"{best['wer']:.1f} ({best['strategy']}, {relative(best['wer'], e['wer'])})" if best
                 else "not run yet"]
        if has_interctc_e:
            ei = find(records, model="E_dedicated_interctc", depth=depth, split=split)
            cells += [f"{ei['wer']:.1f}" if ei else "not run yet",
                      relative(top["wer"], ei["wer"]) if ei and top else ""]
        for model in follow_ups:
            r = find(records, model=model, depth=depth, strategy="top", split=split)
            cells.append(f"{r['wer']:.1f} ({relative(r['wer'], e['wer'])})" if r else "not run yet")
        cells.append(f"{a_top['wer']:.1f} ({relative(a_top['wer'], e['wer'])})" if a_top else "not run yet")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def per_depth_tables(records: list, split: str) -> list:
    """One table per strategy: WER % by depth for every pruned model, with the dedicated models at their depth."""
    models = [m for m in PRUNED_MODELS if any(r["model"] == m and r["split"] == split for r in records)]
    dedicated = [m for m in DEDICATED_MODELS if any(r["model"] == m and r["split"] == split for r in records)]
    if not models:
        return []
    strategies = list(dict.fromkeys(r["strategy"] for r in records if r["model"] in models))
    depths = sorted({r["depth"] for r in records if r["model"] in models and r["split"] == split})
    lines = []
    for strategy in strategies:
        lines += [f"**{strategy}** (WER % / CER %)", "",
                  "| depth | " + " | ".join(MODEL_LABELS[m] for m in models + dedicated) + " |",
                  "|---:|" + "---:|" * len(models + dedicated)]
        for depth in depths:
            cells = []
            for model in models:
                r = find(records, model=model, depth=depth, strategy=strategy, split=split)
                cells.append(f"{r['wer']:.1f} / {r['cer']:.1f}" if r else "")
            for model in dedicated:
                r = find(records, model=model, depth=depth, split=split)
                cells.append(f"{r['wer']:.1f} / {r['cer']:.1f}" if r else "")
            lines.append(f"| {depth} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def minutes(seconds) -> str:
    return f"{seconds / 60:.1f}" if seconds else "-"


def cost_table(stages: list) -> list:
    lines = ["| stage | trained depth | parameters | steps | training (min) | evaluation (min) | trained on |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for s in stages:
        full = max((r for r in s["records"] if r["depth"] == s["trained_depth"]), key=lambda r: r["params"],
                   default=None)
        lines.append(f"| {s['stage']} | {s['trained_depth']} | {full['params']:,} | {s.get('train_steps')} | "
                     f"{minutes(s.get('train_wall_s'))} | {minutes(s.get('evaluate_wall_s'))} | "
                     f"{'; '.join(s.get('trained_on') or [])} |" if full else f"| {s['stage']} | | | | | | |")
    d = [s for s in stages if s["model"] == CLAIM]
    e = [s for s in stages if s["model"] == HEADLINE_BASELINE]
    if d and e:
        e_minutes = minutes(sum(s.get("train_wall_s") or 0 for s in e))
        lines += ["", f"One D model ({minutes(d[0].get('train_wall_s'))} min of training) serves every depth; the "
                      f"{len(e)} dedicated E models finished so far took {e_minutes} min together and serve one "
                      "depth each."]
    return lines


def bootstrap_table(bootstrap: dict, split: str) -> list:
    """The paired-bootstrap comparisons of one split (layer_pruning_bootstrap.py) as a Markdown table."""
    rows = [c for c in bootstrap["comparisons"] if c["split"] == split]
    if not rows:
        return []
    lines = [f"Uncertainty on `{split}` ({rows[0]['utterances']} utterances; paired bootstrap over utterances, "
             f"{bootstrap['resamples']:,} resamples, {100 * rows[0]['confidence']:.0f}% intervals; "
             "`python training/experiments/layer_pruning_bootstrap.py`). D's second row, where there is one, is the "
             "strategy with the lowest WER on the validation split at that depth.", "",
             "| depth | pruned model (strategy) | its WER % | E's WER % | difference, points (CI) | relative (CI) | "
             "share of resamples where it beats E |", "|---:|---|---:|---:|---:|---:|---:|"]
    for c in rows:
        low, high = c["difference_ci"]
        relative_ci = (f" ({c['relative_ci'][0]:+.0f}% to {c['relative_ci'][1]:+.0f}%)" if c.get("relative_ci")
                       else "")
        relative_text = f"{c['relative']:+.0f}%{relative_ci}" if c.get("relative") is not None else "n/a"
        lines.append(f"| {c['depth']} | {MODEL_LABELS.get(c['a']['model'], c['a']['model'])} ({c['a']['strategy']}) "
                     f"| {c['wer_a']:.1f} | {c['wer_b']:.1f} | {c['difference']:+.1f} ({low:+.1f} to {high:+.1f}) | "
                     f"{relative_text} | {c['share_a_better']:.2f} |")
    return lines + [""]


def format_readme(results: dict, stages: list, stage_order: list, finding: str | None, plots: list,
                  bootstrap: dict | None = None) -> str:
    corpus, recipe = results["corpus"], results["recipe"]
    done = [s["stage"] for s in stages]
    missing = [name for name in stage_order if name not in done]
    planned = len(stage_order) + len([name for name in done if name not in stage_order])
    config = recipe["model_config"]
    training = recipe["training"]
    lines = [
        "# Layer pruning on demand: does it hold without fine-tuning?",
        "",
        "Generated by `training/experiments/layer_pruning.py` from the finished stages; rebuilt after every stage. "
        f"Stages finished: {len(done)} of {planned}"
        + (f" (still to run: {', '.join(missing)})." if missing else "."),
        "",
        f"- Command: `{results['command']}`",
        f"- Corpus: `{corpus['data_dir']}` ({corpus['name']}), {corpus['hours']} h in all, manifest sha256 "
        f"`{corpus['manifest_sha256'][:16]}`, make_corpus seed {corpus['seed']}"
        + (f", subset {corpus['subset']}" if corpus.get("subset") else "") + "; per split: "
        + ", ".join(f"{name} {s['utterances']} utterances / {s['voices']} voices / {s['hours']} h"
                    for name, s in corpus["splits"].items()) + ".",
        f"- Recipe `{recipe.get('path')}`: {config['encoder_type']}, {config['num_hidden_layers']} layers, "
        f"d={config['hidden_size']}; {training['max_steps']} steps of {training['per_device_train_batch_size']} "
        f"utterances, lr {training['learning_rate']} ({training['lr_scheduler_type']}), SpecAugment "
        f"{config.get('spec_augment_freq_masks', 0)} frequency masks + "
        f"{config.get('spec_augment_time_masks_per_second', 0)} time masks/s, the same for every model. D: "
        f"intermediate CTC at {config['interctc_layers']} (weight {config['interctc_weight']}), stochastic depth "
        f"{config['stochastic_depth_rate']} ({config['stochastic_depth_schedule']}); A, B, C, E turn these off "
        "as their names say. Greedy and SVCCA schedules are searched on the validation split; every number below "
        "is on a test split (voices never heard in training).",
        f"- Package version {results['package_version']}; where each stage ran: the cost table below.",
        "",
        "## Does pruning on demand work?",
        "",
    ]
    for split in results["test_splits"]:
        if any(r["model"] == HEADLINE_BASELINE and r["split"] == split for r in results["records"]):
            lines += [f"Split `{split}`: WER of D (one model, pruned with no fine-tuning) and A (plain CTC, pruned) "
                      "against E (a model trained at that depth on its own); the relative difference is in percent "
                      "of E's WER (+10% = 10% more word errors than E). \"Best strategy\" is the lowest test WER of "
                      "the four strategies, an oracle choice.", ""]
            lines += claim_table(results["records"], split) + [""]
            if bootstrap:
                lines += bootstrap_table(bootstrap, split)
    lines += [finding.strip() if finding else
              "_The interpretation is written by hand in `finding.md` once the full run has finished._", ""]
    for split in results["test_splits"]:
        tables = per_depth_tables(results["records"], split)
        if tables:
            lines += [f"## WER per depth, split `{split}`", "", *tables]
    lines += ["## Training cost and where each stage ran", "", *cost_table(stages), ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    return "\n".join(lines)


def plot_wer_vs_depth(records: list, split: str, path: Path) -> bool:
    """One panel per strategy; a line per pruned model; dedicated models as points at their depth."""
    models = [m for m in PRUNED_MODELS if any(r["model"] == m and r["split"] == split for r in records)]
    if not models and not any(r["model"] in DEDICATED_MODELS for r in records):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = list(dict.fromkeys(r["strategy"] for r in records if r["model"] in models)) or ["top"]
    columns = min(2, len(strategies))
    rows = (len(strategies) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows), squeeze=False, sharey=True)
    for ax, strategy in zip(axes.flat, strategies):
        for model in models:
            points = sorted((r["depth"], r["wer"]) for r in records
                            if r["model"] == model and r["strategy"] == strategy and r["split"] == split)
            ax.plot(*zip(*points), marker="o", label=MODEL_LABELS[model])
        for model, marker in zip(DEDICATED_MODELS, ("*", "P")):
            points = sorted((r["depth"], r["wer"]) for r in records if r["model"] == model and r["split"] == split)
            if points:
                ax.plot(*zip(*points), linestyle="none", marker=marker, markersize=13, color="black",
                        label=MODEL_LABELS[model])
        ax.set(title=f"pruned with '{strategy}'", xlabel="encoder layers kept", ylabel="WER (%)")
        ax.set_xticks(sorted({r["depth"] for r in records}))
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)  # the same models in every panel
    for ax in list(axes.flat)[len(strategies):]:
        ax.axis("off")
    fig.suptitle(f"WER by depth, no fine-tuning (split {split})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_svcca(matrices: dict, split: str, path: Path) -> bool:
    """SVCCA heatmaps of A and D (whichever are finished) side by side."""
    shown = [(m, matrices[m][split]) for m in ("A_baseline", "D_interctc_sd")
             if matrices.get(m, {}).get(split) is not None]
    if not shown:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4.3), squeeze=False)
    for ax, (model, matrix) in zip(axes.flat, shown):
        size = len(matrix)
        labels = ["in"] + [str(i) for i in range(1, size)]
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(size), labels)
        ax.set_yticks(range(size), labels)
        ax.set(title=MODEL_LABELS[model], xlabel="layer output", ylabel="layer output")
    fig.colorbar(image, ax=list(axes.flat), label="SVCCA similarity (mean canonical correlation)")
    fig.suptitle(f"Similarity between layer outputs (split {split})")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_text_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def rebuild_outputs(output_dir: Path, experiment: dict, stage_order: list) -> list:
    """Rebuild results.json, README.md and the plots in `output_dir` from its finished stages; return the paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stages = load_stages(output_dir, stage_order)
    results = build_results(stages, experiment)
    written = []
    plots = []
    for split in experiment["test_splits"]:
        name = f"wer_vs_depth_{split}.png"
        if plot_wer_vs_depth(results["records"], split, output_dir / name):
            plots.append(name)
        name = f"svcca_A_vs_D_{split}.png"
        if plot_svcca(results["svcca_matrix"], split, output_dir / name):
            plots.append(name)
    write_text_atomically(output_dir / "results.json", json.dumps(results, indent=1) + "\n")
    finding_path = output_dir / "finding.md"
    finding = finding_path.read_text() if finding_path.is_file() else None
    bootstrap_path = output_dir / "paired_bootstrap.json"
    bootstrap = json.loads(bootstrap_path.read_text()) if bootstrap_path.is_file() else None
    write_text_atomically(output_dir / "README.md",
                          format_readme(results, stages, stage_order, finding, plots, bootstrap))
    written += [output_dir / "results.json", output_dir / "README.md"] + [output_dir / p for p in plots]
    return written
