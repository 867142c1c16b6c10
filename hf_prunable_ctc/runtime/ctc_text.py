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

import numpy as np
from transformers import Wav2Vec2CTCTokenizer


class CTCTextDecoder:
    """Decodes greedy CTC ids with a tokenizer's vocabulary: `decoder(ids)` equals `tokenizer.decode(ids)`.

    Args:
        tokenizer: the model's tokenizer; other classes than `Wav2Vec2CTCTokenizer` are decoded by the tokenizer.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.fast = type(tokenizer) is Wav2Vec2CTCTokenizer
        if not self.fast:
            return
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        # The stock decode groups equal *tokens*, so ids that map to the same token (e.g. several to unk) group too.
        first_id = {}
        self.group_ids = np.array([first_id.setdefault(token, i) for i, token in enumerate(tokens)], dtype=np.int64)
        self.kept = np.array([token != tokenizer.pad_token for token in tokens])  # the pad token is CTC's blank
        self.pieces = np.array([tokenizer.replace_word_delimiter_char if token == tokenizer.word_delimiter_token
                                else token for token in tokens], dtype=object)

    def __call__(self, ids: Any) -> str:
        """Text of a 1-D sequence of ids (list, numpy array or tensor), one id per output frame."""
        if not self.fast:
            return self.tokenizer.decode(ids)
        ids = np.asarray(ids.tolist() if hasattr(ids, "tolist") else ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.group_ids)):
            return self.tokenizer.decode(ids.tolist())
        groups = self.group_ids[ids]
        starts = np.ones(len(groups), dtype=bool)
        starts[1:] = groups[1:] != groups[:-1]
        groups = groups[starts]
        text = "".join(self.pieces[groups[self.kept[groups]]]).strip()
        if self.tokenizer.do_lower_case:
            text = text.lower()
        if self.tokenizer.clean_up_tokenization_spaces:
            text = self.tokenizer.clean_up_tokenization(text)
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
