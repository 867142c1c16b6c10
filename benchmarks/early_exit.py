"""Early exit by confidence on the reference model's test subset: average depth, speed-up and WER vs fixed depths.

    python benchmarks/early_exit.py [--model model_cards/prunable-ctc-small-synth] \
        [--data data/reference_test_subset/test] [--output_dir reports/early_exit] [--threads 2] [--repeats 3]

Utterances are run one at a time (batch 1, the on-device case), features computed once beforehand, so times are
model-only. Every fixed depth (`num_layers=k`) and early-exit threshold runs each utterance `--repeats` times,
interleaved per utterance (the machine is shared and noisy); `seconds` is the sum over utterances of each one's
fastest call, and `speedup` is full-depth seconds / that. WER uses the transcripts of those same runs.

It also measures which confidence predicts errors better, from one full-depth pass with every exit's logits
(`output_intermediate_logits=True`; each exit's logits equal early exit's, see tests/test_early_exit.py):
- `max_posterior`: mean max posterior over non-blank frames (what the model uses);
- `agreement`: 1 - character error rate between this exit's greedy transcript and the previous exit's (0 at the
  first exit, which has no previous one).
For each, the Spearman rank correlation between the confidence and the utterance's WER at that exit, over all
(utterance, exit) pairs (more negative = better error predictor), and the AUROC of the confidence for telling
error-free transcripts from the rest.

Writes ``early_exit.json``, ``early_exit.md`` and ``wer_vs_depth.png`` (when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoTokenizer

from hf_prunable_ctc import PrunableCTCForCTC
from hf_prunable_ctc.data.audio import load_audio
from hf_prunable_ctc.early_exit import exit_layers, max_posterior_confidence
from hf_prunable_ctc.evaluation.metrics import character_error_rate, word_error_rate

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = [0.0, 0.85, 0.9, 0.93, 0.96, 1.01]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "model_cards" / "prunable-ctc-small-synth"))
    parser.add_argument("--data", default=str(ROOT / "data" / "reference_test_subset" / "test"),
                        help="folder with metadata.csv (file_name, transcription) and the audio files")
    parser.add_argument("--output_dir", default=str(ROOT / "reports" / "early_exit"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="first N utterances only (smoke runs)")
    return parser.parse_args(argv)


def in_repository(path: str) -> str:
    """`path` relative to the repository when it lies inside it (no machine-specific prefix in the report)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if ROOT in resolved.parents else path


def greedy_text(tokenizer, logits: torch.Tensor, length: int) -> str:
    return tokenizer.decode(logits[:length].argmax(-1).tolist())


def spearman(x, y) -> float:
    rank_x, rank_y = (np.argsort(np.argsort(v, kind="stable"), kind="stable") for v in (x, y))
    return float(np.corrcoef(rank_x, rank_y)[0, 1])


def auroc(scores, positive) -> float:
    """Probability that a random positive (error-free) scores above a random negative; ties count half."""
    scores, positive = np.asarray(scores), np.asarray(positive, dtype=bool)
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model = PrunableCTCForCTC.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    extractor = AutoFeatureExtractor.from_pretrained(args.model)
    rows = list(csv.DictReader(open(Path(args.data) / "metadata.csv")))[: args.limit]
    references = [r["transcription"] for r in rows]
    inputs = []
    for row in rows:
        audio = load_audio(Path(args.data) / row["file_name"])
        feats = extractor(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
        inputs.append((feats["input_features"], feats["attention_mask"]))
    audio_seconds = sum(float(r["duration"]) for r in rows)
    exits = exit_layers(model.config)
    full = model.config.num_hidden_layers

    # Confidence measures vs errors, from every exit's logits of one full pass.
    per_exit = {k: {"max_posterior": [], "agreement": [], "wer": []} for k in exits}
    with torch.inference_mode():
        for (features, mask), reference in zip(inputs, references):
            out = model(features, attention_mask=mask, output_intermediate_logits=True)
            length = int(out.output_lengths[0])
            logits_at = dict(zip(out.intermediate_layers.tolist(), out.intermediate_logits))
            logits_at[full] = out.logits
            previous = None
            for k in exits:
                text = greedy_text(tokenizer, logits_at[k][0], length)
                conf = float(max_posterior_confidence(logits_at[k], out.output_lengths, model.config.pad_token_id))
                agreement = 0.0 if previous is None else float(text == previous) if not previous else \
                    max(0.0, 1.0 - character_error_rate([previous], [text]))
                per_exit[k]["max_posterior"].append(conf)
                per_exit[k]["agreement"].append(agreement)
                per_exit[k]["wer"].append(word_error_rate([reference], [text]))
                previous = text
    error_prediction = {}
    for measure in ("max_posterior", "agreement"):
        scores = [s for k in exits for s in per_exit[k][measure]]
        wers = [w for k in exits for w in per_exit[k]["wer"]]
        error_prediction[measure] = {
            "spearman_vs_wer": spearman(scores, wers),
            "auroc_error_free": auroc(scores, [w == 0 for w in wers]),
            "per_exit_spearman": {k: spearman(per_exit[k][measure], per_exit[k]["wer"]) for k in exits
                                  if len(set(per_exit[k][measure])) > 1},
        }

    # Timed runs, interleaved per utterance: every configuration runs each utterance back to back (in a rotating
    # order), and each (configuration, utterance) keeps its fastest of `--repeats` calls. On a shared machine
    # another process's burst then slows one call of one configuration, not a whole configuration's pass.
    configs = [("depth", k) for k in exits] + [("threshold", t) for t in THRESHOLDS]
    best = {c: [float("inf")] * len(inputs) for c in configs}
    outputs = {c: ([""] * len(inputs), [0] * len(inputs)) for c in configs}
    with torch.inference_mode():
        for kind, value in configs:  # warm-up: first calls of each configuration allocate and pick kernels
            call = {"num_layers": value} if kind == "depth" else {"early_exit_threshold": value}
            for features, mask in inputs[:2]:
                model(features, attention_mask=mask, **call)
        for repeat in range(args.repeats):
            for i, (features, mask) in enumerate(inputs):
                shift = (i + repeat) % len(configs)
                for kind, value in configs[shift:] + configs[:shift]:
                    call = {"num_layers": value} if kind == "depth" else {"early_exit_threshold": value}
                    start = time.perf_counter()
                    out = model(features, attention_mask=mask, **call)
                    best[(kind, value)][i] = min(best[(kind, value)][i], time.perf_counter() - start)
                    texts, depths = outputs[(kind, value)]
                    texts[i] = greedy_text(tokenizer, out.logits[0], int(out.output_lengths[0]))
                    depths[i] = int(out.exit_depths[0]) if kind == "threshold" else value
    times = {c: sum(t) for c, t in best.items()}
    full_time = times[("depth", full)]
    results = []
    for kind, value in configs:
        texts, depths = outputs[(kind, value)]
        seconds = times[(kind, value)]
        results.append({
            "kind": kind, kind: value,
            "average_depth": sum(depths) / len(depths),
            "depth_histogram": {k: depths.count(k) for k in exits},
            "wer": round(100 * word_error_rate(references, texts), 2),
            "cer": round(100 * character_error_rate(references, texts), 2),
            "seconds": round(seconds, 4),
            "rtf": seconds / audio_seconds,
            "speedup": full_time / seconds,
        })

    command = "python benchmarks/early_exit.py " + " ".join(sys.argv[1:] if argv is None else argv)
    record = {
        "command": command.strip(),
        "model": in_repository(args.model), "data": in_repository(args.data), "utterances": len(rows), "audio_seconds": round(audio_seconds, 2),
        "environment": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                        "torch": torch.__version__, "batch_size": 1, "repeats": args.repeats},
        "exit_layers": exits,
        "confidence": "max_posterior (mean max posterior over non-blank frames)",
        "error_prediction": error_prediction,
        "results": results,
    }
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "early_exit.json").write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / "early_exit.md").write_text(markdown(record))
    plot(record, out_dir / "wer_vs_depth.png")
    print(markdown(record))


def markdown(record) -> str:
    lines = [
        "# Early exit by confidence vs fixed depth",
        "",
        f"Model `{record['model']}`, {record['utterances']} utterances ({record['audio_seconds']} s) of "
        f"`{record['data']}`, batch 1, {record['environment']['threads']} CPU threads, torch "
        f"{record['environment']['torch']}, sum of each utterance's fastest of {record['environment']['repeats']} "
        "calls, configurations interleaved per utterance; model-only time "
        "(features computed beforehand). Exit layers: " + ", ".join(map(str, record["exit_layers"])) + ".",
        "",
        f"Command: `{record['command']}`",
        "",
        "| run | average depth | WER % | CER % | seconds | speed-up vs full depth | exits per layer |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        name = f"depth {r['depth']}" if r["kind"] == "depth" else f"threshold {r['threshold']}"
        hist = " ".join(f"{k}:{n}" for k, n in r["depth_histogram"].items())
        lines.append(f"| {name} | {r['average_depth']:.2f} | {r['wer']:.2f} | {r['cer']:.2f} | {r['seconds']:.3f} "
                     f"| {r['speedup']:.2f}x | {hist if r['kind'] == 'threshold' else ''} |")
    lines += ["", "## Which confidence predicts errors", "",
              "Over every (utterance, exit layer) pair of one full-depth pass: Spearman correlation with the "
              "utterance's WER at that exit (more negative is better) and AUROC for picking error-free transcripts.",
              "", "| confidence | Spearman vs WER | AUROC (error-free) |", "|---|---|---|"]
    for name, m in record["error_prediction"].items():
        lines.append(f"| {name} | {m['spearman_vs_wer']:.3f} | {m['auroc_error_free']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(record, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, style in (("depth", "o-"), ("threshold", "s--")):
        points = [r for r in record["results"] if r["kind"] == kind]
        ax.plot([r["average_depth"] for r in points], [r["wer"] for r in points], style,
                label="fixed depth" if kind == "depth" else "early exit (thresholds)")
        if kind == "threshold":
            for r in points:
                ax.annotate(f"{r['threshold']:g}", (r["average_depth"], r["wer"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("average layers run")
    ax.set_ylabel("WER %")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
