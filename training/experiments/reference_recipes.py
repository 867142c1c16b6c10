#!/usr/bin/env python
"""The reference model under the two recipes, depth by depth: the paper's recipe (intermediate CTC + stochastic
depth) against the shallow-end recipe (sandwich sampling with shallow exit weights, `results/shallow_end`)
fine-tuned from it, on the reference corpus's three test splits, with paired-bootstrap intervals.

    python training/train.py training/recipes/reference_sandwich.json     # from runs/reference-augmented
    python training/experiments/reference_recipes.py --paper runs/reference-augmented \\
        --sandwich runs/reference-sandwich --data_dir corpora/synth-6h-v2

Every depth 1..N keeps the first k layers (`top`). Word errors per utterance are kept in
`<output_dir>/utterance_errors/<model>.json`, written split by split, so an interrupted run resumes; the results
(`results.json`, `README.md`, `wer_by_depth.png`) are rebuilt from them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from layer_pruning import write_json_atomically  # noqa: E402

SPLITS = ("test", "test_unseen_engine", "test_unseen_text")
MODELS = {"paper": "paper recipe: intermediate CTC + stochastic depth",
          "sandwich": "shallow-end recipe: + sandwich sampling, shallow exit weights (fine-tuned from it)"}
CONFIG_FIELDS = ("interctc_layers", "interctc_weight", "interctc_weights", "stochastic_depth_rate",
                 "depth_sampling", "sandwich_random_depths", "sandwich_weight", "distillation_weight")
RESAMPLES = 10_000
CONFIDENCE = 0.95


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", type=Path, required=True, help="model trained with the paper's recipe")
    parser.add_argument("--sandwich", type=Path, required=True, help="model trained with the shallow-end recipe")
    parser.add_argument("--data_dir", type=Path, required=True, help="audiofolder corpus with the test splits")
    parser.add_argument("--splits", default=",".join(SPLITS))
    parser.add_argument("--max_samples", type=int, help="utterances per split (default: all)")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "results" / "shallow_end" / "reference_model")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return parser.parse_args(argv)


def weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    with open(folder / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def write_utterance_errors(name: str, folder: Path, data_dir: Path, splits: list, max_samples, output_dir: Path,
                           log=print) -> dict:
    """{split: {depth: {"layers", "errors", "words"}}} for `folder`'s model at every depth, resuming per split."""
    path = output_dir / "utterance_errors" / f"{name}.json"
    errors = json.loads(path.read_text()) if path.is_file() else {}
    todo = [split for split in splits if split not in errors]
    if not todo:
        return errors
    # Late: torch and transformers load only when something is left to transcribe.
    from layer_pruning_bootstrap import StageModel

    from hf_prunable_ctc.evaluation.metrics import utterance_word_errors

    model = StageModel(folder, data_dir, {split: max_samples for split in splits})
    depth = model.model.config.num_hidden_layers
    for split in todo:
        errors[split] = {}
        for k in range(1, depth + 1):
            layers = list(range(1, k + 1))
            references, predictions = model.transcribe(split, layers)
            edits, words = utterance_word_errors(references, predictions)
            errors[split][str(k)] = {"layers": layers, "errors": edits.tolist(), "words": words.tolist()}
            log(f"[{name}] {split} {k} layers: WER {100 * edits.sum() / words.sum():.2f}%")
        write_json_atomically(path, errors)
    return errors


def compare(errors: dict, splits: list) -> tuple[list, list]:
    """Corpus WER records per model, split and depth, and the sandwich model against the paper's at each."""
    from hf_prunable_ctc.evaluation.significance import paired_bootstrap

    records, comparisons = [], []
    for split in splits:
        for name in MODELS:
            for depth, e in errors[name][split].items():
                records.append({"model": name, "split": split, "depth": int(depth), "layers": e["layers"],
                                "wer": round(100 * sum(e["errors"]) / sum(e["words"]), 2),
                                "utterances": len(e["words"])})
        for depth in errors["sandwich"][split]:
            a, b = errors["sandwich"][split][depth], errors["paper"][split][depth]
            if a["words"] != b["words"]:
                raise RuntimeError(f"the two models were scored on different references ({split})")
            result = paired_bootstrap(a["errors"], b["errors"], a["words"], RESAMPLES, confidence=CONFIDENCE)
            comparisons.append({"split": split, "depth": int(depth), **result})
    return records, comparisons


def interval(values, digits: int = 1, unit: str = "") -> str:
    low, high = values
    return f"{low:+.{digits}f}{unit} to {high:+.{digits}f}{unit}"


def format_readme(results: dict) -> str:
    by = {(c["split"], c["depth"]): c for c in results["comparisons"]}
    lines = ["# The reference model: the paper's recipe against the shallow-end recipe", "",
             "Generated by `training/experiments/reference_recipes.py` from the word errors it stores; synthetic "
             "speech.", "",
             f"- Command: `{results['command']}`",
             f"- Corpus: `{results['data_dir']}`, "
             + ", ".join(f"{n:,} utterances of `{split}`" for split, n in results["utterances"].items())
             + "; greedy decoding, "
             "the first k layers (`top`).", ""]
    lines += ["| model | folder | weights sha256 | how the depths were trained |", "|---|---|---|---|"]
    for name, label in MODELS.items():
        model = results["models"][name]
        lines.append(f"| {label} | `{model['folder']}` | `{model['weights_sha256']}` | "
                     f"`{json.dumps(model['config'])}` |")
    for split in results["splits"]:
        lines += ["", f"## Split `{split}`", "",
                  f"WER %; the difference is the shallow-end model's minus the paper's, with its "
                  f"{100 * CONFIDENCE:.0f}% interval (paired bootstrap over the utterances, {RESAMPLES:,} "
                  "resamples).", "",
                  "| layers | paper recipe | shallow-end recipe | difference, points (CI) | relative (CI) |",
                  "|---:|---:|---:|---:|---:|"]
        for depth in sorted({c["depth"] for c in results["comparisons"] if c["split"] == split}):
            c = by[(split, depth)]
            lines.append(f"| {depth} | {c['wer_b']:.1f} | {c['wer_a']:.1f} | {c['difference']:+.1f} "
                         f"({interval(c['difference_ci'])}) | {c['relative']:+.1f}% "
                         f"({interval(c['relative_ci'], unit='%')}) |")
    lines += ["", "![WER by depth](wer_by_depth.png)", ""]
    return "\n".join(lines)


def plot(records: list, splits: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 4), sharey=True, squeeze=False)
    for ax, split in zip(axes[0], splits):
        for name, label in MODELS.items():
            points = sorted((r["depth"], r["wer"]) for r in records if r["model"] == name and r["split"] == split)
            ax.plot(*zip(*points), marker="o", label=label.split(":")[0])
        ax.set(title=split, xlabel="encoder layers kept")
        ax.set_xticks(sorted({r["depth"] for r in records}))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("WER (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    splits = [s for s in args.splits.split(",") if s]
    folders = {"paper": args.paper, "sandwich": args.sandwich}
    for name, folder in folders.items():
        if not (folder / "model.safetensors").is_file():
            sys.exit(f"reference_recipes: --{name} {folder}: no model.safetensors there")
    from hf_prunable_ctc import PrunableCTCConfig

    # With the defaults of fields a saved config predates.
    configs = {name: PrunableCTCConfig.from_pretrained(folder) for name, folder in folders.items()}
    depths = {name: config.num_hidden_layers for name, config in configs.items()}
    if len(set(depths.values())) > 1:
        sys.exit(f"reference_recipes: the models must have the same number of layers to compare them depth by depth, "
                 f"got {depths}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    errors = {name: write_utterance_errors(name, folder, args.data_dir, splits, args.max_samples, args.output_dir)
              for name, folder in folders.items()}
    records, comparisons = compare(errors, splits)
    models = {name: {"folder": str(folder), "weights_sha256": weights_digest(folder),
                     "config": {k: getattr(configs[name], k) for k in CONFIG_FIELDS}}
              for name, folder in folders.items()}
    command = "python training/experiments/reference_recipes.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results = {"command": command, "data_dir": str(args.data_dir), "splits": splits, "models": models,
               "utterances": {split: len(errors["paper"][split]["1"]["words"]) for split in splits},
               "confidence": CONFIDENCE, "resamples": RESAMPLES, "records": records, "comparisons": comparisons}
    write_json_atomically(args.output_dir / "results.json", results)
    (args.output_dir / "README.md").write_text(format_readme(results))
    plot(records, splits, args.output_dir / "wer_by_depth.png")
    print(f"reference_recipes: wrote {args.output_dir}/results.json, README.md, wer_by_depth.png")
    return results


if __name__ == "__main__":
    main()
