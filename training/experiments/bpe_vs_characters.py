"""Subword (BPE) against character vocabularies, per depth: greedy, beam search and beam search + n-gram LM.

The models are trained alike (same recipe, schedule and seed; only `--vocabulary` differs), e.g. on the demo corpus:

    for v in characters bpe:96 bpe:256; do OMP_NUM_THREADS=1 nice python training/train.py training/recipes/demo.json \
        --vocabulary $v --num_train_epochs 8 --output_dir runs/bpe_vs_characters/${v/:/}; done
    python training/build_lm.py --corpus data/demo --text transcripts --order 3 --output_dir runs/lm/demo-transcripts
    OMP_NUM_THREADS=1 nice python training/experiments/bpe_vs_characters.py --corpus data/demo \
        --models runs/bpe_vs_characters/characters runs/bpe_vs_characters/bpe96 runs/bpe_vs_characters/bpe256 \
        --lm runs/lm/demo-transcripts --output_dir results/decoding --training_command "..." (one per model)

Writes bpe_vs_characters.json (every number) and bpe_vs_characters.md (rendered from it by `render_markdown`). Each
model's LM weight and word bonus are chosen on its validation split at full depth (the same grid for every model),
never on the test split. One thread throughout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import torch
from transformers import AutoFeatureExtractor, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decoding import ALPHAS, BETAS, sampled_rows, split_logits  # noqa: E402  (the per-depth decoding experiment)

from hf_prunable_ctc import PrunableCTCForCTC  # noqa: E402
from hf_prunable_ctc.decoding.beam_decoder import build_beam_decoder  # noqa: E402
from hf_prunable_ctc.decoding.ngram_lm import LM_RECORD, resolve_lm_file  # noqa: E402
from hf_prunable_ctc.evaluation.decoding_comparison import compare_decoders, decode_timed  # noqa: E402
from hf_prunable_ctc.evaluation.metrics import word_error_rate  # noqa: E402
from hf_prunable_ctc.json_files import write_json  # noqa: E402

DECODERS = ("greedy", "beam", "beam_lm")
DECODER_NAMES = {"greedy": "greedy", "beam": "beam", "beam_lm": "beam+LM"}


def vocabulary_name(tokenizer) -> str:
    """"characters" for a `Wav2Vec2CTCTokenizer`, else "subwords"; with the token count."""
    kind = "characters" if type(tokenizer).__name__ == "Wav2Vec2CTCTokenizer" else "subwords"
    return f"{kind} ({len(tokenizer)} tokens)"


def label_lengths(tokenizer, texts) -> float:
    """Mean label ids per utterance of `texts` (what CTC must fit into the output frames)."""
    return round(sum(len(tokenizer(text).input_ids) for text in texts) / len(texts), 2)


def evaluate_model(folder: str, corpus: str, lm_file: str, split: str, beam_width: int, seed: int) -> dict:
    """Per decoder and depth WER/CER/cost on `split`, with the LM weights chosen on validation at full depth."""
    model = PrunableCTCForCTC.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    feature_extractor = AutoFeatureExtractor.from_pretrained(folder)
    full_depth = model.config.num_hidden_layers
    rows = sampled_rows(corpus, "validation", 0, seed)
    logits, _ = split_logits(model, feature_extractor, corpus, "validation", rows)
    references = [row["transcription"] for row in rows]
    grid = {}
    for alpha, beta in itertools.product(ALPHAS, BETAS):
        decoder = build_beam_decoder(tokenizer, lm_file, alpha=alpha, beta=beta)
        texts, _ = decode_timed(lambda x: decoder.decode(x, beam_width=beam_width), logits[full_depth])
        grid[f"{alpha},{beta}"] = round(100 * word_error_rate(references, texts), 2)
    alpha, beta = (float(v) for v in min(grid, key=grid.get).split(","))
    beam, with_lm = build_beam_decoder(tokenizer), build_beam_decoder(tokenizer, lm_file, alpha=alpha, beta=beta)
    decoders = {"greedy": lambda x: tokenizer.decode(x.argmax(-1).tolist()),
                "beam": lambda x: beam.decode(x, beam_width=beam_width),
                "beam_lm": lambda x: with_lm.decode(x, beam_width=beam_width)}
    rows = sampled_rows(corpus, split, 0, seed)
    logits, seconds = split_logits(model, feature_extractor, corpus, split, rows)
    references = [row["transcription"] for row in rows]
    results = compare_decoders(logits, references, seconds, decoders)
    with open(os.path.join(folder, "train_results.json"), encoding="utf-8") as f:
        train_results = json.load(f)
    with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as f:
        state = json.load(f)
    return {"folder": folder, "vocabulary": vocabulary_name(tokenizer), "vocab_size": len(tokenizer),
            "parameters": model.num_parameters(), "mean_label_length": label_lengths(tokenizer, references),
            "mean_output_frames": round(sum(len(x) for x in logits[full_depth]) / len(rows), 1),
            "train_runtime_s": round(train_results.get("train_runtime", 0.0), 1),
            "train_steps": state["global_step"], "train_batch_size": state["train_batch_size"],
            "train_epochs": state["num_train_epochs"], "alpha": alpha, "beta": beta,
            "alpha_beta_grid_validation_wer": grid, "utterances": len(rows), "audio_seconds": round(seconds, 1),
            **{name: {str(d): r for d, r in per.items()} for name, per in results.items()}}


def render_markdown(record: dict) -> str:
    """The Markdown page of a `bpe_vs_characters.json` record: one WER table and one CER table over depths, a
    column per model and decoder, the models' settings, and the commands."""
    models = record["models"]
    names = list(models)
    depths = sorted({int(d) for m in models.values() for d in m["greedy"]})
    lines = ["<!-- rendered from bpe_vs_characters.json by training/experiments/bpe_vs_characters.py -->",
             "# Subword (BPE) against character vocabularies, per depth", "",
             f"Corpus `{record['settings']['corpus']}`, split `{record['settings']['split']}` "
             f"({next(iter(models.values()))['utterances']} utterances); beam width "
             f"{record['settings']['beam_width']}; LM `{record['settings']['lm']}` "
             f"({record['lm']['order']}-gram, {record['lm']['sentences']} sentences, {record['lm']['vocabulary']} "
             "words). The models were trained alike: same recipe, schedule and seed, only `--vocabulary` differs.", "",
             "| model | vocabulary | parameters | labels per utterance | output frames per utterance | LM alpha, beta "
             "| training steps (epochs) | training s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        m = models[name]
        lines.append(f"| {name} | {m['vocabulary']} | {m['parameters']:,d} | {m['mean_label_length']} | "
                     f"{m['mean_output_frames']} | {m['alpha']}, {m['beta']} | {m['train_steps']} "
                     f"({m['train_epochs']}) | {m['train_runtime_s']} |")
    for metric in ("wer", "cer"):
        lines += ["", f"## {metric.upper()} (%)", "",
                  "| depth | " + " | ".join(f"{name} {DECODER_NAMES[d]}" for d in DECODERS for name in names) + " |",
                  "|---:|" + "---:|" * (len(DECODERS) * len(names))]
        for depth in depths:
            cells = [f"{models[name][d][str(depth)][metric]:.2f}" for d in DECODERS for name in names]
            lines.append(f"| {depth} | " + " | ".join(cells) + " |")
    lines += ["", "## Commands", "", "```bash", *record["commands"], "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="model folders trained alike")
    parser.add_argument("--corpus", default="data/demo")
    parser.add_argument("--lm", required=True, help="LM folder from training/build_lm.py (or a KenLM file)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--beam_width", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="results/decoding")
    parser.add_argument("--training_command", action="append", default=[],
                        help="the command that trained a model (repeat per model): recorded with the results")
    args = parser.parse_args(argv)
    print("settings: " + json.dumps(vars(args)), flush=True)
    torch.set_num_threads(1)
    lm_file = resolve_lm_file(args.lm)
    with open(os.path.join(os.path.dirname(lm_file), LM_RECORD), encoding="utf-8") as f:
        lm_record = json.load(f)
    models = {}
    for folder in args.models:
        name = os.path.basename(os.path.normpath(folder))
        models[name] = evaluate_model(folder, args.corpus, lm_file, args.split, args.beam_width, args.seed)
        print(name, json.dumps({d: [models[name][n][d]["wer"] for n in DECODERS] for d in models[name]["greedy"]}),
              flush=True)
    settings = {k: v for k, v in vars(args).items() if k != "training_command"}
    own = (f"OMP_NUM_THREADS=1 nice python training/experiments/bpe_vs_characters.py --models {' '.join(args.models)} "
           f"--corpus {args.corpus} --lm {args.lm} --split {args.split} --beam_width {args.beam_width} "
           f"--seed {args.seed} --output_dir {args.output_dir}")
    record = {"settings": settings | {"threads": 1}, "lm": lm_record, "models": models,
              "commands": [*args.training_command, lm_record.get("command", ""), own]}
    os.makedirs(args.output_dir, exist_ok=True)
    write_json(os.path.join(args.output_dir, "bpe_vs_characters.json"), record, indent=2)
    with open(os.path.join(args.output_dir, "bpe_vs_characters.md"), "w", encoding="utf-8") as f:
        f.write(render_markdown(record))
    print(f"wrote {args.output_dir}/bpe_vs_characters.json, bpe_vs_characters.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
