"""Build an n-gram LM for beam search from a synthetic corpus's training text only.

    python training/build_lm.py --corpus corpora/synth-6h-v2 --output_dir runs/lm/synth-6h-v2
    python training/build_lm.py --corpus corpora/synth-6h-v2 --text transcripts --output_dir runs/lm/train-text

Text (`--text`):
- `sources` (default): every clean sentence of the corpus's training text sources (the `text_sources` of the
  corpus README's settings, less its `unseen_text_sources`), read and cleaned as `make_corpus.py` reads them; the
  held-out text source (`test_unseen_text`'s) never enters.
- `transcripts`: the train split's transcripts only.
Either way every sentence that is a transcript of the validation or a test split is removed first (exact match after
white-space normalisation), so no held-out utterance is in the LM. `lm.json` in the output records the sources, the
splits removed, the counts and the order. Needs KenLM's lmplz (`bash training/install_lmplz.sh`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from hf_prunable_ctc.decoding.ngram_lm import (HELD_OUT_SPLITS, KenLMNotFound, build_ngram_lm, split_transcripts,
                                               without_held_out)
from hf_prunable_ctc.hub.output_folder import OutputFolderError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_corpus  # noqa: E402  (the corpus's own text readers, so the LM text is cleaned exactly as it was)


def corpus_settings(corpus_dir: str) -> dict:
    """The settings `make_corpus.py` wrote into the corpus README (its first ```json block)."""
    readme = Path(corpus_dir, "README.md").read_text(encoding="utf-8")
    match = re.search(r"```json\n(.*?)\n```", readme, re.S)
    if match is None:
        raise ValueError(f"{corpus_dir}/README.md has no settings block: not a corpus written by make_corpus.py")
    return json.loads(match.group(1))


def training_sentences(corpus_dir: str, text: str) -> tuple[list[str], dict]:
    """The sentences `--text` names, before held-out sentences are removed, and what to record about them."""
    if text == "transcripts":
        return split_transcripts(corpus_dir, ["train"]).get("train", []), {"text": "train split transcripts"}
    settings = corpus_settings(corpus_dir)
    held_out_sources = set(settings.get("unseen_text_sources") or ())
    sources = [source for source in settings["text_sources"] if source not in held_out_sources]
    # Every length: the LM gains from long sentences too (the corpus kept min_words..max_words for synthesis).
    sentences, notes = make_corpus.load_sentences(sources, min_words=1, max_words=None)
    if notes:
        raise SystemExit("error: " + "; ".join(notes))
    counts = {source: sum(1 for s in sentences if s.source == source) for source in sources}
    return [s.transcript for s in sentences], {
        "text": "training text sources", "text_sources": sources, "sentences_per_source": counts,
        "excluded_text_sources": sorted(held_out_sources),
        "reader": "training/make_corpus.py load_sentences(min_words=1, max_words=None), one line per distinct "
                  "transcript, in source order"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="corpus folder written by training/make_corpus.py")
    parser.add_argument("--output_dir", required=True, help="new or empty folder for lm.bin, unigrams.txt, lm.json")
    parser.add_argument("--text", choices=["sources", "transcripts"], default="sources")
    parser.add_argument("--order", type=int, default=4, help="n-gram order (default 4)")
    parser.add_argument("--prune", type=int, nargs="*", default=[], help="lmplz --prune thresholds per order")
    parser.add_argument("--kenlm_bin", help="folder holding lmplz and build_binary (default: PATH)")
    args = parser.parse_args(argv)
    print("settings: " + json.dumps(vars(args)))
    sentences, record = training_sentences(args.corpus, args.text)
    held_out = split_transcripts(args.corpus, HELD_OUT_SPLITS)
    kept, removed = without_held_out(sentences, [t for texts in held_out.values() for t in texts])
    record.update(corpus=os.path.normpath(args.corpus), removed_splits=sorted(held_out),
                  removed_sentences=removed, command="python training/build_lm.py " + " ".join(argv or sys.argv[1:]))
    try:
        result = build_ngram_lm(kept, args.output_dir, order=args.order, prune=args.prune, record=record,
                                kenlm_bin=args.kenlm_bin)
    except (KenLMNotFound, OutputFolderError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output_dir}: {args.order}-gram LM from {result['sentences']} sentences "
          f"({result['words']} words, {result['vocabulary']} distinct), {removed} held-out sentences removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
