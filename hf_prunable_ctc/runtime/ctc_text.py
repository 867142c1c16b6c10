"""Greedy CTC token ids -> text, exactly as `Wav2Vec2CTCTokenizer.decode(ids)` returns it, in numpy.

Why: the stock decode walks the ids in Python (grouping repeats, a property lookup per character), about 0.9 ms for
the 250 output frames of 10 s of audio on one thread, as much as 7% of a pipeline call at depth 1, where pruning
should speed up what a user runs nearly as much as the model. The same string takes ~0.03 ms here:
collapse repeats, drop blanks, look the pieces up in a table, join.

Only `Wav2Vec2CTCTokenizer` itself (not a subclass, which may decode differently) gets the fast path, and only for
the call the CTC pipeline and `transcribe` make (`skip_special_tokens=False`, no offsets); everything else, and any
id outside the vocabulary, goes to the tokenizer's own `decode`.
"""

from __future__ import annotations

from typing import Any

import json
import os

import numpy as np

# What `PreTrainedTokenizerBase.clean_up_tokenization` replaces, for folders read without transformers.
CLEAN_UP_REPLACEMENTS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class CTCTextDecoder:
    """Decodes greedy CTC ids with a tokenizer's vocabulary: `decoder(ids)` equals `tokenizer.decode(ids)`.

    Args:
        tokenizer: the model's tokenizer; other classes than `Wav2Vec2CTCTokenizer` are decoded by the tokenizer.
            `CTCTextDecoder.from_folder` builds the same decoder from a saved tokenizer's files without transformers.
    """

    def __init__(self, tokenizer):
        from transformers import Wav2Vec2CTCTokenizer

        self.tokenizer = tokenizer
        self.fast = type(tokenizer) is Wav2Vec2CTCTokenizer
        if self.fast:
            self._tables(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))), tokenizer.pad_token,
                         tokenizer.word_delimiter_token, tokenizer.replace_word_delimiter_char,
                         tokenizer.do_lower_case, tokenizer.clean_up_tokenization_spaces)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "CTCTextDecoder":
        """The decoder of the `Wav2Vec2CTCTokenizer` saved in `folder` (``vocab.json``, ``tokenizer_config.json``),
        read with the standard library only (for runtimes without transformers)."""
        with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
            vocabulary = json.load(f)
        with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
            settings = json.load(f)
        if settings.get("tokenizer_class", "Wav2Vec2CTCTokenizer") != "Wav2Vec2CTCTokenizer":
            raise ValueError(f"{folder} holds a {settings['tokenizer_class']}, not a Wav2Vec2CTCTokenizer")
        for entry in settings.get("added_tokens_decoder", {}).values() if isinstance(vocabulary, dict) else ():
            vocabulary.setdefault(entry["content"], None)
        tokens = [token for token, _ in sorted(vocabulary.items(), key=lambda item: item[1])]
        decoder = cls.__new__(cls)
        decoder.tokenizer, decoder.fast = None, True
        decoder._tables(tokens, settings.get("pad_token", "<pad>"), settings.get("word_delimiter_token", "|"),
                        settings.get("replace_word_delimiter_char", " "), settings.get("do_lower_case", False),
                        settings.get("clean_up_tokenization_spaces", False))
        # What a beam search's alphabet needs (`decoding.beam_decoder.labels_for_tokens`).
        decoder.tokens = tokens
        decoder.special_tokens = (settings.get("pad_token", "<pad>"), settings.get("word_delimiter_token", "|"),
                                  settings.get("unk_token", "<unk>"))
        return decoder

    def _tables(self, tokens, pad_token, word_delimiter_token, replace_char, lower, clean_up) -> None:
        # The stock decode groups equal *tokens*, so ids that map to the same token (e.g. several to unk) group too.
        first_id = {}
        self.group_ids = np.array([first_id.setdefault(token, i) for i, token in enumerate(tokens)], dtype=np.int64)
        self.kept = np.array([token != pad_token for token in tokens])  # the pad token is CTC's blank
        self.pieces = np.array([replace_char if token == word_delimiter_token else token for token in tokens],
                               dtype=object)
        self.lower, self.clean_up = bool(lower), bool(clean_up)

    def __call__(self, ids: Any) -> str:
        """Text of a 1-D sequence of ids (list, numpy array or tensor), one id per output frame."""
        if not self.fast:
            return self.tokenizer.decode(ids)
        ids = np.asarray(ids.tolist() if hasattr(ids, "tolist") else ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.group_ids)):
            if self.tokenizer is None:
                raise ValueError(f"ids outside the vocabulary of {len(self.group_ids)} tokens")
            return self.tokenizer.decode(ids.tolist())
        groups = self.group_ids[ids]
        starts = np.ones(len(groups), dtype=bool)
        starts[1:] = groups[1:] != groups[:-1]
        groups = groups[starts]
        text = "".join(self.pieces[groups[self.kept[groups]]]).strip()
        if self.lower:
            text = text.lower()
        if self.clean_up:
            for before, after in CLEAN_UP_REPLACEMENTS:
                text = text.replace(before, after)
        return text


class FastDecodingTokenizer:
    """A tokenizer whose plain `decode(ids)` (what the ASR pipeline calls for CTC) goes through `CTCTextDecoder`;
    every other call and attribute is the wrapped tokenizer's (so saving, padding and offsets are unchanged). It
    is a wrapper, not a tokenizer subclass: `isinstance` checks see the class of `.wrapped`, the user's object,
    which is left untouched."""

    def __init__(self, tokenizer):
        self.wrapped = tokenizer
        self._decoder = CTCTextDecoder(tokenizer)

    def decode(self, token_ids, skip_special_tokens: bool = False, **kwargs):
        if skip_special_tokens or kwargs:
            return self.wrapped.decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)
        return self._decoder(token_ids)

    def __getattr__(self, name):
        if name == "wrapped":  # not set yet (copy and pickle build the object without __init__): no recursion
            raise AttributeError(name)
        return getattr(self.wrapped, name)
