"""Character vocabulary and CTC tokenizer, in the convention of Transformers' `run_speech_recognition_ctc.py`.

Ids: ``<pad>`` = 0, which is also the CTC blank (the model's `pad_token_id`), ``<unk>`` = 1, then the characters
of the training text in sorted order with the space written as the word delimiter ``|``. The tokenizer is the stock
`Wav2Vec2CTCTokenizer`, so a saved model folder needs no remote code for its tokenizer.

Two behaviours of `Wav2Vec2CTCTokenizer.decode` matter:
- the default (``group_tokens=True``) collapses repeats and then drops ``<pad>``: right for CTC frame ids
  (``[H, H, <pad>, E, L, <pad>, L, O]`` -> ``"HELLO"``), wrong for label ids, which must be decoded with
  ``group_tokens=False`` (else ``"HELLO"`` comes back as ``"HELO"``);
- ``skip_special_tokens=True`` removes ``<pad>`` *before* collapsing repeats, which merges the two L's of
  ``L <pad> L``: decode CTC ids with the default ``skip_special_tokens=False`` (as the ASR pipeline does).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from transformers import Wav2Vec2CTCTokenizer

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

    A space counts as known when the vocabulary has the word delimiter ``|``.

    Returns:
        ``Counter`` of ``{character: occurrences}``; empty when every character is covered.
    """
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(text)
    known = set(vocab)
    if WORD_DELIMITER_TOKEN in known:
        known.add(" ")
    return Counter({character: n for character, n in counts.items() if character not in known})
