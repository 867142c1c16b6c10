#!/usr/bin/env python
"""Drop from a corpus's training split every utterance whose sentence another corpus evaluates on.

    python training/experiments/exclude_sentences.py corpora/synth-6h-v3 --evaluated_on corpora/synth-6h-v2

A corpus made with a larger vocabulary (`make_corpus.py --vocabulary_size`) from the same text sources can draw
sentences that a smaller corpus holds out for validation and testing; a model trained on the larger one and
measured on the smaller one's splits would then be tested on sentences it has heard. This keeps those splits
unseen: the matching training rows leave `train/metadata.csv` and their audio files are deleted (the corpus
command makes them again). What was dropped is recorded in `train/excluded_sentences.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

EVALUATION_SPLITS = ("validation", "test", "test_unseen_engine", "test_unseen_text")


def read_rows(metadata: Path) -> tuple[list[str], list[dict]]:
    with open(metadata, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def evaluated_sentences(corpus: Path) -> set[str]:
    sentences = set()
    for split in EVALUATION_SPLITS:
        metadata = corpus / split / "metadata.csv"
        if metadata.exists():
            sentences.update(row["transcription"] for row in read_rows(metadata)[1])
    if not sentences:
        raise SystemExit(f"error: {corpus} has none of the splits {', '.join(EVALUATION_SPLITS)}")
    return sentences


def exclude(corpus: Path, evaluated_on: Path) -> dict:
    held_out = evaluated_sentences(evaluated_on)
    train = corpus / "train"
    fields, rows = read_rows(train / "metadata.csv")
    kept = [row for row in rows if row["transcription"] not in held_out]
    dropped = [row for row in rows if row["transcription"] in held_out]
    temporary = train / "metadata.csv.tmp"
    with open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    temporary.replace(train / "metadata.csv")  # the metadata never names a deleted file, even if interrupted
    for row in dropped:
        (train / row["file_name"]).unlink(missing_ok=True)
    record_path = train / "excluded_sentences.json"
    previous = json.loads(record_path.read_text()) if record_path.exists() else {"utterances": 0, "sentences": []}
    record = {"evaluated_on": str(evaluated_on), "splits": list(EVALUATION_SPLITS),
              "utterances": previous["utterances"] + len(dropped),
              "sentences": sorted(set(previous["sentences"]) | {row["transcription"] for row in dropped}),
              "kept_utterances": len(kept)}
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, help="corpus folder whose train split is filtered in place")
    parser.add_argument("--evaluated_on", type=Path, required=True,
                        help="corpus whose validation and test sentences must stay unheard")
    args = parser.parse_args()
    record = exclude(args.corpus, args.evaluated_on)
    print(f"{args.corpus}/train: {record['utterances']} utterances of {len(record['sentences'])} sentences "
          f"evaluated in {args.evaluated_on} dropped, {record['kept_utterances']} kept")


if __name__ == "__main__":
    main()
