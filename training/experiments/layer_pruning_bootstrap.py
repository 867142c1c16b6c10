#!/usr/bin/env python
"""Confidence intervals for the layer-pruning experiment's headline comparisons (a paired bootstrap).

    python training/experiments/layer_pruning_bootstrap.py              # after (some) stages of layer_pruning.py
    python training/experiments/layer_pruning.py --rebuild_only         # README.md then shows the intervals

The test splits hold a few dozen utterances, so "D pruned to 4 layers is 6% worse than E trained at 4" needs its
uncertainty. For every dedicated depth k with finished stages, this re-transcribes each test split with the
trained models kept under `--runs_dir` (their final weights; nothing is retrained) and compares, utterance by
utterance, D pruned to k (`top`, and the strategy with the lowest WER on the **validation** split, so the choice
does not peek at the test split) and A pruned to k against E trained at k, with
`hf_prunable_ctc.evaluation.significance.paired_bootstrap`. The recomputed corpus WERs must match the stages'
records (a check that the right weights and layers were run). Output: `<output_dir>/paired_bootstrap.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from transformers import AutoFeatureExtractor, AutoTokenizer

from hf_prunable_ctc import PrunableCTCForCTC
from hf_prunable_ctc.data.speech_data import collated_batches, load_prepared_split
from hf_prunable_ctc.evaluation.depth_evaluation import subnetwork_transcripts
from hf_prunable_ctc.evaluation.metrics import utterance_word_errors
from hf_prunable_ctc.evaluation.significance import paired_bootstrap
from layer_pruning_report import CLAIM, PRUNED_MODELS, find

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=ROOT / "results" / "layer_pruning",
                        help="the experiment's results folder (reads results.json, writes paired_bootstrap.json)")
    parser.add_argument("--runs_dir", type=Path, default=ROOT / "runs" / "layer_pruning",
                        help="the experiment's checkpoints (one folder per stage)")
    parser.add_argument("--data_dir", type=Path, help="the corpus (default: results.json's corpus data_dir)")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=16)
    return parser.parse_args(argv)


class StageModel:
    """A finished stage's trained model, transcribing prepared splits at given layers (cached per split)."""

    def __init__(self, run_dir: Path, data_dir: Path, max_samples: dict):
        if not (run_dir / "model.safetensors").is_file():
            raise FileNotFoundError(f"no trained model in {run_dir}: the stage's checkpoints are gone, rerun it")
        self.model = PrunableCTCForCTC.from_pretrained(run_dir).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(run_dir)
        self.extractor = AutoFeatureExtractor.from_pretrained(run_dir)
        self.data_dir = data_dir
        self.max_samples = max_samples  # per split, as the experiment evaluated it (None: all)
        self._batches = {}

    def batches(self, split: str):
        if split not in self._batches:
            dataset, _ = load_prepared_split("audiofolder", split, self.extractor, self.tokenizer,
                                             data_dir=str(self.data_dir), max_samples=self.max_samples.get(split))
            self._batches[split] = collated_batches(dataset, self.extractor, self.tokenizer)
        return self._batches[split]

    def transcribe(self, split: str, layers: list) -> tuple[list, list]:
        """(references, predictions) of `split` running `layers`, decoded as evaluate_depths.py scores them."""
        return subnetwork_transcripts(self.model, self.batches(split), self.tokenizer, layers)


def best_strategy_on_validation(schedules: dict, depth: int, model: StageModel) -> tuple[str, dict]:
    """The strategy whose schedule (`schedules`: {strategy: {depth: layers}}) has the lowest validation WER at
    `depth` (ties: the first listed), and every strategy's validation WER."""
    from hf_prunable_ctc.evaluation.metrics import word_error_rate

    scores = {}
    for strategy, schedule in schedules.items():
        layers = schedule[str(depth)]
        references, predictions = model.transcribe("validation", layers)
        scores[strategy] = 100 * word_error_rate(references, predictions)
    best = min(scores, key=scores.get)
    return best, scores


def main(argv=None) -> dict:
    args = parse_args(argv)
    results_path = args.output_dir / "results.json"
    if not results_path.is_file():
        sys.exit(f"layer_pruning_bootstrap: no {results_path}: run training/experiments/layer_pruning.py first")
    results = json.loads(results_path.read_text())
    data_dir = args.data_dir or Path(results["corpus"]["data_dir"])
    if not data_dir.is_absolute():
        data_dir = ROOT / data_dir
    stages = {p.stem: json.loads(p.read_text()) for p in sorted((args.output_dir / "stages").glob("*.json"))}
    # The utterances the experiment scored: test splits cut to the recipe's max_eval_samples, the validation split
    # (the strategies' search split) to max_search_samples.
    recipe = results["recipe"]
    max_samples = {split: recipe["data"].get("max_eval_samples") for split in results["test_splits"]}
    max_samples["validation"] = recipe["evaluation"].get("max_search_samples")
    records = results["records"]
    models = {}

    def stage_model(name):
        if name not in models:
            models[name] = StageModel(args.runs_dir / name, data_dir, max_samples)
        return models[name]

    comparisons = []
    dedicated = sorted({r["trained_depth"] for r in records if r["model"] == "E_dedicated"})
    for depth in dedicated:
        e_name = f"E_dedicated_d{depth}"
        if e_name not in stages:
            continue
        e_stage = stages[e_name]
        for split in results["test_splits"]:
            # A stage's schedules are kept per reported split ({split: {strategy: {depth: layers}}}); the
            # data-driven ones were searched on the validation split either way.
            candidates = []
            if CLAIM in stages:
                schedules = stages[CLAIM]["schedules"][split]
                best, validation = best_strategy_on_validation(schedules, depth, stage_model(CLAIM))
                candidates.append((CLAIM, "top", None))
                if best != "top":
                    candidates.append((CLAIM, best, validation))
            # Every other pruned model the report knows, with the schedule that needs no search.
            candidates += [(name, "top", None) for name in PRUNED_MODELS if name != CLAIM and name in stages]
            e_layers = next(r["layers"] for r in e_stage["records"] if r["split"] == split)
            references, e_predictions = stage_model(e_name).transcribe(split, e_layers)
            e_errors, words = utterance_word_errors(references, e_predictions)
            check(results, "E_dedicated", depth, "none", split, 100 * e_errors.sum() / words.sum())
            for name, strategy, validation in candidates:
                layers = stages[name]["schedules"][split][strategy][str(depth)]
                refs, predictions = stage_model(name).transcribe(split, layers)
                if refs != references:
                    raise RuntimeError(f"{name} and {e_name} read different references on {split}")
                errors, _ = utterance_word_errors(refs, predictions)
                check(results, stages[name]["model"], depth, strategy, split, 100 * errors.sum() / words.sum())
                comparison = {"split": split, "depth": depth, "a": {"model": stages[name]["model"],
                              "strategy": strategy, "layers": layers},
                              "b": {"model": "E_dedicated", "strategy": "none", "layers": e_layers},
                              **paired_bootstrap(errors, e_errors, words, args.resamples, args.seed)}
                if validation:
                    comparison["a"]["chosen_on_validation"] = {k: round(v, 2) for k, v in validation.items()}
                comparisons.append(comparison)
                print(f"{split} depth {depth}: {name} {strategy} {comparison['wer_a']:.1f} vs E "
                      f"{comparison['wer_b']:.1f}: {comparison['difference']:+.1f} points, 95% CI "
                      f"[{comparison['difference_ci'][0]:+.1f}, {comparison['difference_ci'][1]:+.1f}]")
    out = {"method": "paired bootstrap over test utterances of the corpus WER difference a - b "
                     "(hf_prunable_ctc.evaluation.significance)",
           "resamples": args.resamples, "seed": args.seed, "comparisons": comparisons}
    tmp = args.output_dir / "paired_bootstrap.json.tmp"
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, args.output_dir / "paired_bootstrap.json")
    print("wrote", args.output_dir / "paired_bootstrap.json")
    return out


def check(results: dict, model: str, depth: int, strategy: str, split: str, wer: float) -> None:
    """The recomputed WER must be the stage's recorded one (same weights, same layers, same scoring)."""
    recorded = find(results["records"], model=model, depth=depth, strategy=strategy, split=split)
    if recorded and abs(recorded["wer"] - wer) > 0.05:
        raise RuntimeError(f"{model} at depth {depth} ({strategy}) on {split}: recomputed WER {wer:.2f} but the "
                           f"stage recorded {recorded['wer']:.2f}: the checkpoint under --runs_dir is not the "
                           "evaluated one")


if __name__ == "__main__":
    main()
