"""CTC vocabularies and tokenizers: characters (the default) or subwords (BPE / Unigram), chosen by `--vocabulary`.

Characters follow the convention of Transformers' `run_speech_recognition_ctc.py`.

Ids: ``<pad>`` = 0, which is also the CTC blank (the model's `pad_token_id`), ``<unk>`` = 1, then the characters
of the training text in sorted order with the space written as the word delimiter ``|``. The tokenizer is the stock
`Wav2Vec2CTCTokenizer`, so a saved model folder needs no remote code for its tokenizer.

Two behaviours of `Wav2Vec2CTCTokenizer.decode` matter:
- the default (``group_tokens=True``) collapses repeats and then drops ``<pad>``: right for CTC frame ids
  (``[H, H, <pad>, E, L, <pad>, L, O]`` -> ``"HELLO"``), wrong for label ids, which must be decoded with
  ``group_tokens=False`` (else ``"HELLO"`` comes back as ``"HELO"``);
- ``skip_special_tokens=True`` removes ``<pad>`` *before* collapsing repeats, which merges the two L's of
  ``L <pad> L``: decode CTC ids with the default ``skip_special_tokens=False`` (as the ASR pipeline does).

Subwords (`train_subword_tokenizer`, ``--vocabulary bpe:N`` or ``unigram:N``): a `tokenizers` BPE or Unigram model
trained on the training transcripts, with the same ``<pad>`` = 0 = blank and ``<unk>`` = 1, words marked by the
Metaspace "▁" on their first piece, wrapped as `SubwordCTCTokenizer` (`tokenization_subword_ctc`), whose decode
collapses repeats and drops blanks in that order, also with ``skip_special_tokens=True``. Fewer, longer labels per
utterance; the CTC head has one output per piece.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from transformers import Wav2Vec2CTCTokenizer

from ..tokenization_subword_ctc import WORD_BOUNDARY, SubwordCTCTokenizer

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
WORD_DELIMITER_TOKEN = "|"


def build_vocabulary(texts: Iterable[str]) -> dict[str, int]:
    """Map every character of `texts` to an id: ``<pad>`` 0 (CTC blank), ``<unk>`` 1, then sorted characters.

    The space becomes the word delimiter ``|`` and is always included, so a tokenizer built on single-word text can
    still decode word boundaries. Texts are taken as they are: normalise them (case, punctuation) first.

    Args:
        texts: transcripts, e.g. the training split's text column.

    Returns:
        ``{token: id}`` with ids ``0 .. len - 1``.

    Raises:
        ValueError: a text contains ``|`` itself, which would decode as a space.
    """
    characters = {" "}
    for text in texts:
        characters.update(text)
    if WORD_DELIMITER_TOKEN in characters:
        raise ValueError(f"transcripts contain the word delimiter {WORD_DELIMITER_TOKEN!r}; remove it first")
    vocab = {PAD_TOKEN: 0, UNK_TOKEN: 1}
    for character in sorted(characters):
        vocab[WORD_DELIMITER_TOKEN if character == " " else character] = len(vocab)
    return vocab


# Used when no training text is given: upper-case English letters, apostrophe, space (30 tokens).
DEFAULT_VOCABULARY: dict[str, int] = build_vocabulary(["ABCDEFGHIJKLMNOPQRSTUVWXYZ' "])


def make_tokenizer(
    vocab: Mapping[str, int] | None = None, save_dir: str | os.PathLike | None = None
) -> Wav2Vec2CTCTokenizer:
    """Build the stock `Wav2Vec2CTCTokenizer` over `vocab` (default `DEFAULT_VOCABULARY`).

    Special tokens: ``pad_token="<pad>"`` (the CTC blank), ``unk_token="<unk>"``, ``word_delimiter_token="|"``, no
    bos/eos (CTC labels have none). Lower case is not folded (``do_lower_case=False``).

    Args:
        vocab: ``{token: id}`` as from `build_vocabulary`; must contain ``<pad>``, ``<unk>`` and ``|``.
        save_dir: if given, the tokenizer is saved there (``vocab.json``, ``tokenizer_config.json``) so that
            ``AutoTokenizer.from_pretrained(save_dir)`` loads it back.

    Returns:
        The tokenizer; ``tokenizer.pad_token_id`` is ``vocab["<pad>"]``.
    """
    vocab = dict(DEFAULT_VOCABULARY if vocab is None else vocab)
    missing = [token for token in (PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER_TOKEN) if token not in vocab]
    if missing:
        raise ValueError(f"vocabulary lacks the special tokens {missing}")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError("vocabulary ids must be 0 .. len(vocab) - 1 without gaps or duplicates")

    # The tokenizer only reads its vocabulary from a file; it keeps it in memory, so a temporary file is enough.
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False, indent=2), encoding="utf-8")
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file),
            pad_token=PAD_TOKEN,
            unk_token=UNK_TOKEN,
            word_delimiter_token=WORD_DELIMITER_TOKEN,
            bos_token=None,
            eos_token=None,
            do_lower_case=False,
        )
    if save_dir is not None:
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer


def count_out_of_vocabulary(texts: Iterable[str], vocab: Mapping[str, int]) -> Counter[str]:
    """Count the characters of `texts` that the tokenizer will map to ``<unk>``.

    A space counts as known when the vocabulary has the word delimiter ``|`` (characters) or the Metaspace marker
    ``▁`` (subwords, whose every character is also a piece of its own).

    Returns:
        ``Counter`` of ``{character: occurrences}``; empty when every character is covered.
    """
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(text)
    known = set(vocab)
    if WORD_DELIMITER_TOKEN in known or WORD_BOUNDARY in known:
        known.add(" ")
    return Counter({character: n for character, n in counts.items() if character not in known})


# --- Subword vocabularies -------------------------------------------------------------------------------------------

SUBWORD_KINDS = ("bpe", "unigram")
CHARACTERS = "characters"


@dataclass(frozen=True)
class VocabularyChoice:
    """What `--vocabulary` asks for: ``kind`` "characters", "bpe" or "unigram", and for subwords ``size``, the
    most tokens the vocabulary may have (special tokens included)."""

    kind: str = CHARACTERS
    size: int | None = None

    def __str__(self) -> str:
        return self.kind if self.size is None else f"{self.kind}:{self.size}"


def parse_vocabulary_option(value: str) -> VocabularyChoice:
    """`VocabularyChoice` of a ``--vocabulary`` value: ``"characters"``, ``"bpe:N"`` or ``"unigram:N"``.

    Raises:
        ValueError: any other value, with the accepted forms in the message (``"bpe:0"``, ``"foo:12"``,
            ``"bpe:abc"``, ``"bpe"``).
    """
    accepted = "'characters', 'bpe:N' or 'unigram:N' with N a whole number of tokens >= 3 (e.g. bpe:256)"
    text = value.strip().lower()
    if text == CHARACTERS:
        return VocabularyChoice()
    kind, colon, size = text.partition(":")
    if kind not in SUBWORD_KINDS:
        raise ValueError(f"--vocabulary {value!r}: unknown kind {kind!r}; give {accepted}")
    size = size.strip()
    if not colon or not (size.isascii() and size.isdigit()):
        raise ValueError(f"--vocabulary {value!r}: the size after '{kind}:' must be a whole number; give {accepted}")
    # Below 3 a vocabulary holds the two special tokens and at most one piece.
    if int(size) < 3:
        raise ValueError(f"--vocabulary {value!r}: a vocabulary needs at least 3 tokens (<pad>, <unk> and one "
                         f"piece), got {int(size)}; give {accepted}")
    return VocabularyChoice(kind, int(size))


def train_subword_tokenizer(texts: Iterable[str], kind: str = "bpe", vocab_size: int = 256,
                            save_dir: str | os.PathLike | None = None):
    """Train a BPE or Unigram vocabulary on `texts` and wrap it as a `SubwordCTCTokenizer`.

    Ids: ``<pad>`` 0 (the CTC blank), ``<unk>`` 1, then the pieces. Words are split at spaces and their first
    piece carries the Metaspace marker "▁", which is how decoding finds word boundaries (and how pyctcdecode
    recognises a BPE alphabet). Every character of `texts` is kept as a piece of its own, so no training
    transcript maps to ``<unk>``; a `vocab_size` smaller than those characters plus the two special tokens is
    raised to it, and a small corpus may give fewer pieces than `vocab_size`: ``len(tokenizer)`` is what the
    model's ``vocab_size`` must be. Texts are taken as they are: normalise them first (`text.normalize_transcript`).

    Args:
        texts: transcripts, e.g. the training split's (never evaluation text: the vocabulary is part of the model).
        kind: "bpe" or "unigram".
        vocab_size: the most tokens, special tokens included.
        save_dir: if given, the tokenizer is saved there (``tokenizer.json``, ``tokenizer_config.json`` and the
            class's file for remote code) so that ``AutoTokenizer.from_pretrained(save_dir)`` loads it back.

    Returns:
        The `SubwordCTCTokenizer`; its ``pad_token_id`` is 0.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


    if kind not in SUBWORD_KINDS:
        raise ValueError(f"kind must be one of {SUBWORD_KINDS}, got {kind!r}")
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise ValueError("no text to train a subword vocabulary on")
    if any(WORD_BOUNDARY in text for text in texts):
        raise ValueError(f"transcripts contain the word-boundary marker {WORD_BOUNDARY!r}; remove it first")
    specials = [PAD_TOKEN, UNK_TOKEN]
    alphabet = sorted({character for text in texts for character in text if not character.isspace()})
    # Words start with the marker: the marker and every character must be pieces, or some words could not be spelt.
    vocab_size = max(vocab_size, len(specials) + len(alphabet) + 1)
    if kind == "bpe":
        model = models.BPE(unk_token=UNK_TOKEN)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=[WORD_BOUNDARY, *alphabet], show_progress=False)
    else:
        model = models.Unigram()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=UNK_TOKEN,
                                          initial_alphabet=[WORD_BOUNDARY, *alphabet], show_progress=False)
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always")
    backend.train_from_iterator(texts, trainer=trainer)
    if backend.token_to_id(PAD_TOKEN) != 0 or backend.token_to_id(UNK_TOKEN) != 1:
        raise RuntimeError("the trained vocabulary does not start with <pad>, <unk>")
    tokenizer = SubwordCTCTokenizer(tokenizer_object=backend, pad_token=PAD_TOKEN, unk_token=UNK_TOKEN,
                                    bos_token=None, eos_token=None, clean_up_tokenization_spaces=False)
    if save_dir is not None:
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer


def make_ctc_tokenizer(texts: Iterable[str], vocabulary: str | VocabularyChoice = CHARACTERS):
    """The CTC tokenizer `--vocabulary` names, built from `texts` (the training transcripts): the stock
    `Wav2Vec2CTCTokenizer` over `build_vocabulary(texts)` for "characters", else `train_subword_tokenizer`."""
    choice = parse_vocabulary_option(vocabulary) if isinstance(vocabulary, str) else vocabulary
    if choice.kind == CHARACTERS:
        return make_tokenizer(build_vocabulary(texts))
    return train_subword_tokenizer(texts, choice.kind, choice.size)
