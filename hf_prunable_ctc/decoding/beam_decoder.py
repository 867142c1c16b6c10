"""pyctcdecode beam search for a CTC tokenizer's vocabulary, with or without a KenLM n-gram language model.

pyctcdecode is numpy (no torch): the same decoder runs behind the Transformers pipeline, the package's pipeline and
the torch-free device runtime. This module imports only numpy and pyctcdecode, so it also works as remote code copied
next to the weights (with `processor_with_lm`).
"""

from __future__ import annotations

import os
from typing import Iterable, List

# pyctcdecode's spelling of the unknown token (what it turns "<unk>" into when it builds an alphabet), and of the
# unknown token of a BPE alphabet, a word of its own.
DECODER_UNK = "⁇"
DECODER_BPE_UNK = "▁⁇▁"
# The marker of a word's first piece; pyctcdecode reads an alphabet with any label starting with it as BPE.
WORD_BOUNDARY = "▁"
# The LM's vocabulary beside a binary KenLM file (an ARPA file lists its own).
UNIGRAMS_FILE = "unigrams.txt"


def decoder_labels(tokenizer) -> list[str]:
    """pyctcdecode's alphabet for a CTC tokenizer, one label per token id: "" for the pad token (CTC's blank),
    " " for the word delimiter, "⁇" for the unknown token, every other token as it is spelt.

    A subword vocabulary (`SubwordCTCTokenizer`: pieces, a word's first one starting with "▁") has no delimiter:
    its pieces keep their "▁", which is how pyctcdecode finds word boundaries in a BPE alphabet (Unigram pieces
    read the same way), and the unknown token becomes "▁⁇▁", a word of its own.

    Spelling the special tokens out (rather than letting pyctcdecode guess them from "<pad>" and "|") keeps the
    alphabet right for any pad or delimiter token a vocabulary uses.
    """
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return labels_for_tokens(tokens, tokenizer.pad_token, getattr(tokenizer, "word_delimiter_token", None),
                             tokenizer.unk_token)


def labels_for_tokens(tokens: list[str], pad_token: str, word_delimiter_token: str | None,
                      unk_token: str) -> list[str]:
    """`decoder_labels` from the tokens in id order and the special tokens (for runtimes without a tokenizer
    object: the device runtime reads them from the saved tokenizer's files)."""
    if any(token.startswith(WORD_BOUNDARY) for token in tokens):
        special = {pad_token: "", unk_token: DECODER_BPE_UNK}
    else:
        special = {pad_token: "", word_delimiter_token: " ", unk_token: DECODER_UNK}
    return [special.get(token, token) for token in tokens]


def read_unigrams(path: str | os.PathLike) -> list[str]:
    """The words of a unigram list (one per line, as `build_ngram_lm` writes it beside a binary LM)."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def build_beam_decoder(tokenizer, lm_path: str | os.PathLike | None = None,
                       unigrams: Iterable[str] | None = None, alpha: float = 0.5, beta: float = 1.0):
    """A `pyctcdecode.BeamSearchDecoderCTC` over `tokenizer`'s vocabulary.

    Args:
        tokenizer: the model's CTC tokenizer (`Wav2Vec2CTCTokenizer`, or `SubwordCTCTokenizer` for BPE/Unigram),
            or its `decoder_labels` as a list.
        lm_path: a KenLM model (ARPA, or KenLM binary); None: beam search without a language model.
        unigrams: the LM's vocabulary; read from an ARPA file when None. A binary LM needs it (without it
            pyctcdecode cannot tell unknown words, and scores them like known ones): `build_ngram_lm` writes
            ``unigrams.txt`` beside the LM, read here when present.
        alpha: weight of the LM log10 probability (pyctcdecode's scale); beta: bonus per word (length reward).
    """
    from pyctcdecode import build_ctcdecoder

    if lm_path is not None:
        lm_path = os.fspath(lm_path)
        beside = os.path.join(os.path.dirname(lm_path), UNIGRAMS_FILE)
        if unigrams is None and not lm_path.endswith(".arpa") and os.path.isfile(beside):
            unigrams = read_unigrams(beside)
    # pyctcdecode reads an ARPA file's unigrams itself, and loads the model with the `kenlm` module.
    labels = tokenizer if isinstance(tokenizer, list) else decoder_labels(tokenizer)
    return build_ctcdecoder(labels, kenlm_model_path=lm_path,
                            unigrams=None if unigrams is None else list(unigrams), alpha=alpha, beta=beta)


def decoder_matches_tokenizer(decoder, tokenizer) -> List[str]:
    """The labels of `tokenizer` that `decoder`'s alphabet lacks or puts at another id (empty when they agree)."""
    expected = decoder_labels(tokenizer)
    labels = list(decoder._alphabet.labels)
    return [label for i, label in enumerate(expected) if i >= len(labels) or labels[i] != label]
