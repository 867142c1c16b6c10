"""WER of the reference model on data/reference_test_subset with the stock and the torch feature extractor.

    python benchmarks/compare_extractors.py [--depths 1 2 ... 8]

Prints one line per depth: WER with each extractor and how many transcripts differ. Used to check that
`PrunableCTCFeatureExtractor` can replace `Speech2TextFeatureExtractor` under published checkpoints.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import soundfile
import torch
from transformers import AutoTokenizer, Speech2TextFeatureExtractor

from hf_prunable_ctc import PrunableCTCFeatureExtractor, PrunableCTCForCTC
from hf_prunable_ctc.evaluation.metrics import character_error_rate, word_error_rate

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "model_cards" / "prunable-ctc-small-synth"
TEST_DIR = ROOT / "data" / "reference_test_subset" / "test"


def transcribe_all(model, tokenizer, extractor, audios, depth: int) -> list[str]:
    """Greedy transcripts of each clip alone (no padding), at `depth` layers."""
    texts = []
    with torch.inference_mode():
        for audio in audios:
            batch = extractor(audio, sampling_rate=16000, return_tensors="pt")
            logits = model(batch["input_features"], attention_mask=batch["attention_mask"], num_layers=depth).logits
            texts.append(tokenizer.decode(logits.argmax(-1)[0]))
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=None, help="depths to compare (default: all)")
    parser.add_argument("--output", type=Path, default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = PrunableCTCForCTC.from_pretrained(MODEL_DIR).eval()
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    rows = list(csv.DictReader(open(TEST_DIR / "metadata.csv", newline="")))
    audios = [soundfile.read(TEST_DIR / row["file_name"], dtype="float32")[0] for row in rows]
    references = [row["transcription"] for row in rows]
    stock = Speech2TextFeatureExtractor.from_pretrained(MODEL_DIR)
    fast = PrunableCTCFeatureExtractor(**{k: v for k, v in stock.to_dict().items() if k != "feature_extractor_type"})
    results = {}
    for depth in args.depths or range(1, model.config.num_hidden_layers + 1):
        stock_texts = transcribe_all(model, tokenizer, stock, audios, depth)
        fast_texts = transcribe_all(model, tokenizer, fast, audios, depth)
        results[depth] = {
            "wer_stock": word_error_rate(references, stock_texts),
            "wer_torch": word_error_rate(references, fast_texts),
            "cer_stock": character_error_rate(references, stock_texts),
            "cer_torch": character_error_rate(references, fast_texts),
            "transcripts_differing": sum(a != b for a, b in zip(stock_texts, fast_texts)),
            "utterances": len(rows),
        }
        print(f"depth {depth}: " + json.dumps(results[depth]), flush=True)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
