"""Greedy vs beam search vs beam search + n-gram LM at every depth of a model, on a corpus's test splits.

    python training/build_lm.py --corpus corpora/synth-6h-v2 --output_dir runs/lm/synth-6h-v2
    OMP_NUM_THREADS=1 nice python training/experiments/decoding.py --model model_cards/prunable-ctc-small-synth \
        --corpus corpora/synth-6h-v2 --lm runs/lm/synth-6h-v2 --output_dir results/decoding

Writes results.json (every number), README.md (rendered from it) and wer_by_depth.png into --output_dir. The LM
weight and word bonus are chosen on validation utterances at full depth, never on a test split. Each split is a
seeded random sample of --max_utterances utterances (all of them with 0). One thread throughout: decoding cost is
reported per thread, as a device would run it.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
import sys

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoTokenizer

from hf_prunable_ctc import PrunableCTCForCTC
from hf_prunable_ctc.data.audio import load_audio
from hf_prunable_ctc.decoding.beam_decoder import build_beam_decoder
from hf_prunable_ctc.decoding.ngram_lm import LM_RECORD, resolve_lm_file
from hf_prunable_ctc.evaluation.decoding_comparison import (compare_decoders, decode_timed, depth_gaps,
                                                            plot_decoding, render_decoding_readme)
from hf_prunable_ctc.evaluation.depth_evaluation import per_depth_logits
from hf_prunable_ctc.evaluation.metrics import word_error_rate
from hf_prunable_ctc.json_files import write_json
from hf_prunable_ctc.runtime.ctc_text import CTCTextDecoder

ALPHAS = (0.3, 0.5, 0.8, 1.2)
BETAS = (0.0, 1.0, 2.0)


def sampled_rows(corpus: str, split: str, count: int, seed: int) -> list[dict]:
    with open(os.path.join(corpus, split, "metadata.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if count and count < len(rows):
        rows = sorted(random.Random(f"{seed}-{split}").sample(rows, count), key=lambda row: row["file_name"])
    return rows


@torch.no_grad()
def split_logits(model, feature_extractor, corpus: str, split: str, rows: list[dict], batch_size: int = 16):
    """depth -> one (frames, vocab) float32 array per utterance, and the total audio seconds."""
    depths = list(range(1, model.config.num_hidden_layers + 1))
    schedule = model.pruning_schedule()
    by_depth = {depth: [] for depth in depths}
    seconds = 0.0
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        audio = [load_audio(os.path.join(corpus, split, row["file_name"]), sampling_rate=16000) for row in batch]
        seconds += sum(len(a) for a in audio) / 16000
        features = feature_extractor(audio, sampling_rate=16000, return_tensors="pt", padding=True)
        columns, full = per_depth_logits(model, features["input_features"], features["attention_mask"], depths,
                                         schedule)
        lengths = full.output_lengths.tolist()
        for depth, logits in zip(depths, columns):
            by_depth[depth] += [row[:n].float().numpy() for row, n in zip(logits, lengths)]
    return by_depth, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="model_cards/prunable-ctc-small-synth")
    parser.add_argument("--corpus", default="corpora/synth-6h-v2")
    parser.add_argument("--lm", required=True, help="LM folder from training/build_lm.py (or a KenLM file)")
    parser.add_argument("--splits", nargs="+", default=["test", "test_unseen_engine", "test_unseen_text"])
    parser.add_argument("--max_utterances", type=int, default=300, help="per split; 0 = all")
    parser.add_argument("--tune_utterances", type=int, default=100, help="validation utterances for alpha/beta")
    parser.add_argument("--beam_width", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="results/decoding")
    args = parser.parse_args(argv)
    print("settings: " + json.dumps(vars(args)), flush=True)
    torch.set_num_threads(1)

    model = PrunableCTCForCTC.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    feature_extractor = AutoFeatureExtractor.from_pretrained(args.model)
    lm_file = resolve_lm_file(args.lm)
    greedy_text = CTCTextDecoder(tokenizer)
    beam = build_beam_decoder(tokenizer)
    width = args.beam_width

    # The LM weight and word bonus: the best validation WER at full depth.
    rows = sampled_rows(args.corpus, "validation", args.tune_utterances, args.seed)
    logits, _ = split_logits(model, feature_extractor, args.corpus, "validation", rows)
    full = logits[model.config.num_hidden_layers]
    references = [row["transcription"] for row in rows]
    grid = {}
    for alpha, beta in itertools.product(ALPHAS, BETAS):
        decoder = build_beam_decoder(tokenizer, lm_file, alpha=alpha, beta=beta)
        texts, _ = decode_timed(lambda x: decoder.decode(x, beam_width=width), full)
        grid[f"{alpha},{beta}"] = round(100 * word_error_rate(references, texts), 2)
        print(f"validation alpha {alpha} beta {beta}: WER {grid[f'{alpha},{beta}']}", flush=True)
    alpha, beta = (float(v) for v in min(grid, key=grid.get).split(","))
    with_lm = build_beam_decoder(tokenizer, lm_file, alpha=alpha, beta=beta)

    decoders = {"greedy": lambda x: greedy_text(x.argmax(-1)),
                "beam": lambda x: beam.decode(x, beam_width=width),
                "beam_lm": lambda x: with_lm.decode(x, beam_width=width)}
    with open(os.path.join(os.path.dirname(lm_file), LM_RECORD), encoding="utf-8") as f:
        lm_record = json.load(f)
    record = {"settings": dict(vars(args), alpha=alpha, beta=beta, lm_file=lm_file, threads=1),
              "alpha_beta_grid_validation_wer": grid, "lm": lm_record, "splits": {},
              "commands": [f"python training/build_lm.py {lm_record.get('command', '').split('build_lm.py ')[-1]}",
                           "OMP_NUM_THREADS=1 nice python training/experiments/decoding.py "
                           + " ".join(argv if argv is not None else sys.argv[1:])]}
    for split in args.splits:
        rows = sampled_rows(args.corpus, split, args.max_utterances, args.seed)
        logits, seconds = split_logits(model, feature_extractor, args.corpus, split, rows)
        results = compare_decoders(logits, [row["transcription"] for row in rows], seconds, decoders)
        gaps = depth_gaps({d: r["wer"] for d, r in results["greedy"].items()},
                          {d: r["wer"] for d, r in results["beam_lm"].items()})
        record["splits"][split] = {"utterances": len(rows), "audio_seconds": round(seconds, 1),
                                   **{name: {str(d): r for d, r in per.items()} for name, per in results.items()},
                                   "gaps": {str(d): g for d, g in gaps.items()}}
        print(split, json.dumps({d: [results[n][d]["wer"] for n in decoders] for d in results["greedy"]}),
              flush=True)
    os.makedirs(args.output_dir, exist_ok=True)
    write_json(os.path.join(args.output_dir, "results.json"), record, indent=2)
    with open(os.path.join(args.output_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(render_decoding_readme(record))
    plot_decoding(record, os.path.join(args.output_dir, "wer_by_depth.png"))
    print(f"wrote {args.output_dir}/results.json, README.md, wer_by_depth.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
