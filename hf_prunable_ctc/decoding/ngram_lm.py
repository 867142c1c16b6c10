"""n-gram language models for beam search, built with KenLM's `lmplz` from sentences a caller chooses.

KenLM's estimator (modified Kneser-Ney) is not packaged by Debian and PyPI's `kenlm` builds only the query module,
so `training/install_lmplz.sh` compiles `lmplz` and `build_binary` from the source that PyPI's `kenlm` ships.

The folder written (`build_ngram_lm`):
    lm.bin          KenLM binary (trie), what `beam_decoder.build_beam_decoder` and `transcribe --lm` load
    unigrams.txt    the LM's words, which pyctcdecode needs beside a binary LM
    lm.json         what went in: text sources, sentences removed and why, order, pruning, counts, commands
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import Iterable, Sequence

from ..hub.output_folder import write_output_folder
from ..json_files import write_json
from .beam_decoder import UNIGRAMS_FILE

LM_BINARY = "lm.bin"
LM_ARPA = "lm.arpa"
LM_RECORD = "lm.json"
# Splits whose sentences an LM for this corpus must not contain: model selection and every test.
HELD_OUT_SPLITS = ("validation", "test", "test_unseen_engine", "test_unseen_text")
INSTALL_HINT = "build it with `bash training/install_lmplz.sh` (KenLM from PyPI's kenlm source; needs Boost)"


class KenLMNotFound(RuntimeError):
    """KenLM's `lmplz` or `build_binary` is not on PATH."""


def kenlm_tool(name: str, directory: str | None = None) -> str:
    """The path of KenLM's `name` (``lmplz``, ``build_binary``): in `directory` when given, else on PATH."""
    found = shutil.which(name, path=directory) if directory else shutil.which(name)
    if found is None:
        raise KenLMNotFound(f"KenLM's {name} not found {'in ' + directory if directory else 'on PATH'}: "
                            f"{INSTALL_HINT}")
    return found


def resolve_lm_file(path: str | os.PathLike) -> str:
    """The KenLM file `path` names: the file itself, or the ``lm.bin`` (else ``lm.arpa``) of an LM folder."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    for name in (LM_BINARY, LM_ARPA):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise FileNotFoundError(f"no KenLM file at {path!r} (an .arpa or KenLM binary file, or a folder holding "
                            f"{LM_BINARY} or {LM_ARPA})")


def split_transcripts(corpus_dir: str | os.PathLike, splits: Iterable[str]) -> dict[str, list[str]]:
    """The transcripts of each of `splits` that `corpus_dir` holds (its ``<split>/metadata.csv``, column
    ``transcription``, as `training/make_corpus.py` writes it); splits without a folder are left out."""
    found = {}
    for split in splits:
        path = os.path.join(corpus_dir, split, "metadata.csv")
        if os.path.isfile(path):
            with open(path, newline="", encoding="utf-8") as f:
                found[split] = [row["transcription"] for row in csv.DictReader(f)]
    return found


def without_held_out(sentences: Iterable[str], held_out: Iterable[str]) -> tuple[list[str], int]:
    """``(kept, removed)``: `sentences` with white space collapsed, minus empty ones and every one equal to a
    held-out transcript, in order; removed counts the held-out ones dropped."""
    banned = {" ".join(sentence.split()) for sentence in held_out}
    kept, removed = [], 0
    for sentence in sentences:
        sentence = " ".join(sentence.split())
        if sentence in banned:
            removed += 1
        elif sentence:
            kept.append(sentence)
    return kept, removed


def build_ngram_lm(sentences: Sequence[str], output_dir: str | os.PathLike, order: int = 4,
                   prune: Sequence[int] = (), record: dict | None = None, kenlm_bin: str | None = None,
                   memory: str = "20%") -> dict:
    """Estimate an `order`-gram LM (modified Kneser-Ney, `lmplz`) from `sentences` and write the folder described
    in the module docstring.

    Args:
        sentences: one utterance each, in the transcripts' spelling (the tokenizer's letters, words split by
            spaces); `lmplz` adds the sentence boundaries.
        output_dir: new, empty, or written by this package before (`hub.output_folder`).
        order: n-gram order; prune: `lmplz --prune` thresholds per order (e.g. ``(0, 0, 1)``: drop singleton
            trigrams and above).
        record: what the caller knows about the text (sources, held-out splits): stored in ``lm.json``.
        kenlm_bin: folder holding `lmplz` and `build_binary` (default: PATH). memory: `lmplz -S`.

    Returns:
        The ``lm.json`` record.
    """
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    if not sentences:
        raise ValueError("no sentences to build a language model from")
    lmplz, build_binary = kenlm_tool("lmplz", kenlm_bin), kenlm_tool("build_binary", kenlm_bin)
    text = "".join(sentence + "\n" for sentence in sentences)
    lmplz_args = ["-o", str(order), "-S", memory, "--discount_fallback"]
    if prune:
        lmplz_args += ["--prune", *[str(int(p)) for p in prune]]
    words = sorted({word for sentence in sentences for word in sentence.split()})
    result = dict(record or {})
    result.update(order=order, prune=list(prune), sentences=len(sentences),
                  words=sum(len(sentence.split()) for sentence in sentences), vocabulary=len(words),
                  text_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                  commands=[" ".join(["lmplz", *lmplz_args, "< text.txt > lm.arpa"]),
                            "build_binary trie lm.arpa lm.bin"])

    def fill(staging: str) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            arpa = os.path.join(scratch, LM_ARPA)
            with open(arpa, "w", encoding="utf-8") as out:
                run = subprocess.run([lmplz, *lmplz_args, "-T", scratch], input=text, stdout=out,
                                     stderr=subprocess.PIPE, text=True)
            if run.returncode:
                raise RuntimeError(f"lmplz failed: {run.stderr.strip().splitlines()[-1:]}")
            run = subprocess.run([build_binary, "trie", arpa, os.path.join(staging, LM_BINARY)],
                                 capture_output=True, text=True)
            if run.returncode:
                raise RuntimeError(f"build_binary failed: {run.stderr.strip().splitlines()[-1:]}")
        with open(os.path.join(staging, UNIGRAMS_FILE), "w", encoding="utf-8") as f:
            f.writelines(word + "\n" for word in words)
        write_json(os.path.join(staging, LM_RECORD), result, indent=2)

    write_output_folder(os.fspath(output_dir), fill)
    return result
