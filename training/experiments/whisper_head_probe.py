#!/usr/bin/env python
"""How much real speech does Whisper's frozen encoder keep under a CTC head trained on synthetic speech?

    python training/experiments/whisper_head_probe.py --model runs/whisper-tiny-ctc-init \
        --debian_root /tmp/debian-speech

The encoder (front end and every layer) stays exactly as pretrained; its raw layer outputs are computed once for
the training split and cached, then only the final LayerNorm and the CTC head train on them (no augmentation:
the cached states are of the clean audio). Two heads are compared: one shared by every exit (the package's
layout: intermediate CTC reads every exit through the same norm and head) and one per exit. Every exit is then
decoded greedily on the real recordings and the synthetic test splits. This measures what the pretrained layers
already carry, before any of them is fine-tuned, and so tells the fine-tuning recipe how far from them it may move.
Writes `head_probe.json` and `head_probe.md` (rendered from it) to --output_dir.
"""

from __future__ import annotations

import argparse
import csv
import copy
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("test", "test_unseen_engine", "test_unseen_text")


def render(result: dict) -> str:
    depths = result["depths"]
    lines = ["# Whisper tiny.en's frozen encoder under a CTC head trained on synthetic speech", "",
             f"Rendered from `head_probe.json`, written by `{result['command']}`.", "",
             f"The encoder is frozen as pretrained; the final LayerNorm and CTC head train on its cached layer "
             f"outputs for {result['train_utterances']} utterances of `{result['data_dir']}/train` "
             f"({result['epochs']} epochs, no augmentation). Greedy decoding; WER after `normalize_transcript`.", "",
             "| head | set | utterances | " + " | ".join(f"WER {d} layers" for d in depths) + " |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in depths) + " |"]
    for head, sets in result["wer"].items():
        for name, row in sets.items():
            lines.append(f"| {head} | {name} | {row['utterances']} | "
                         + " | ".join(f"{100 * row['per_depth'][str(d)]:.1f}%" for d in depths) + " |")
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a folder written by `hf-prunable-ctc from-whisper`")
    parser.add_argument("--data_dir", default="corpora/synth-6h-v2")
    parser.add_argument("--max_train", type=int, default=4000)
    parser.add_argument("--max_utterances", type=int, default=200, help="per synthetic test split")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--debian_root", default="/")
    parser.add_argument("--output_dir", default=str(ROOT / "results" / "real_speech"))
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from transformers import AutoFeatureExtractor, AutoTokenizer

    from hf_prunable_ctc.conversion.whisper_agreement import word_error_rates
    from hf_prunable_ctc.data.audio import load_audio
    from hf_prunable_ctc.data.debian_recordings import debian_recordings
    from hf_prunable_ctc.json_files import write_json
    from hf_prunable_ctc.modeling_prunable_ctc import PrunableCTCForCTC

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = PrunableCTCForCTC.from_pretrained(args.model).eval()
    extractor = AutoFeatureExtractor.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    depths = list(range(1, model.config.num_hidden_layers + 1))

    @torch.no_grad()
    def layer_states(audio):
        features = extractor(audio, sampling_rate=16000, return_tensors="pt")
        out = model.model(features["input_features"], output_hidden_states=True)
        return [h[0].half() for h in out.hidden_states[1:]]

    def rows(split, limit):
        with open(Path(args.data_dir) / split / "metadata.csv", newline="") as f:
            return [(Path(args.data_dir) / split / r["file_name"], r["transcription"])
                    for r in list(csv.DictReader(f))[:limit]]

    start = time.time()
    train = []
    for path, text in rows("train", args.max_train):
        train.append((layer_states(load_audio(str(path))), torch.tensor(tokenizer(text).input_ids)))
    print(f"cached {len(train)} utterances in {time.time() - start:.0f} s", flush=True)
    sets = {"real speech (Debian)": [(r.samples(), r.transcript) for r in debian_recordings(args.debian_root)]}
    for split in SPLITS:
        sets[f"synthetic {split}"] = [(load_audio(str(p)), t) for p, t in rows(split, args.max_utterances)]
    eval_states = {name: [(layer_states(a), t) for a, t in items] for name, items in sets.items()}

    def make_head():
        return torch.nn.Sequential(copy.deepcopy(model.model.final_norm), copy.deepcopy(model.lm_head)).float()

    heads = {"shared": {d: h for h in [make_head()] for d in depths},
             "per exit": {d: make_head() for d in depths}}
    blank = model.config.pad_token_id
    result_wer = {}
    for name, per_depth in heads.items():
        params = list({id(p): p for h in per_depth.values() for p in h.parameters()}.values())
        optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=0.01)
        steps = args.epochs * ((len(train) + 15) // 16)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.learning_rate, total_steps=steps)
        order = sorted(range(len(train)), key=lambda i: train[i][0][0].shape[0])
        batches = [order[i:i + 16] for i in range(0, len(order), 16)]
        for epoch in range(args.epochs):
            total = 0.0
            for b in torch.randperm(len(batches)).tolist():
                items = [train[i] for i in batches[b]]
                lengths = torch.tensor([s[0].shape[0] for s, _ in items])
                labels = torch.nn.utils.rnn.pad_sequence([t for _, t in items], batch_first=True)
                label_lengths = torch.tensor([len(t) for _, t in items])
                loss = 0.0
                for d in depths:
                    states = torch.nn.utils.rnn.pad_sequence([s[d - 1].float() for s, _ in items], batch_first=True)
                    log_probs = per_depth[d](states).log_softmax(-1).transpose(0, 1)
                    loss = loss + F.ctc_loss(log_probs, labels, lengths, label_lengths, blank=blank,
                                             zero_infinity=True) / len(depths)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss)
            print(f"{name} epoch {epoch + 1}: loss {total / len(batches):.3f}", flush=True)
        result_wer[name] = {}
        with torch.no_grad():
            for set_name, items in eval_states.items():
                refs = [t for _, t in items]
                scores = {}
                for d in depths:
                    preds = []
                    for states, _ in items:
                        ids = per_depth[d](states[d - 1].float()).argmax(-1)
                        preds.append(tokenizer.decode(ids.tolist()))
                    scores[str(d)] = word_error_rates(refs, preds)["normalized"]
                result_wer[name][set_name] = {"utterances": len(items), "per_depth": scores}
                print(name, set_name, {d: round(100 * v, 1) for d, v in scores.items()}, flush=True)

    command = (f"python training/experiments/whisper_head_probe.py --model {args.model} --max_train {args.max_train}"
               f" --epochs {args.epochs} --debian_root {args.debian_root}")
    result = {"command": command, "model": args.model, "data_dir": args.data_dir, "train_utterances": len(train),
              "epochs": args.epochs, "learning_rate": args.learning_rate, "depths": depths, "wer": result_wer}
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "head_probe.json", result, indent=1)
    (output / "head_probe.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
