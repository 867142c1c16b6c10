"""A subword (BPE or Unigram) tokenizer for CTC: the `tokenizers` library's model, decoded the CTC way.

The vocabulary is a `tokenizers` model whose pre-tokenizer and decoder are Metaspace ("▁" marks the first piece of
each word: "HELLO WORLD" -> ``["▁HEL", "LO", "▁WORLD"]``), with ``<pad>`` = 0 as the CTC blank (the model's
`pad_token_id`) and ``<unk>`` = 1. `SubwordCTCTokenizer.decode` does what a CTC head needs of frame ids:

1. consecutive equal ids collapse into one emission (``group_tokens=True``, the default; give ``False`` for label
   ids, where "▁A", "▁A" is two words);
2. blanks are removed (after grouping, so "LO <pad> LO" stays two emissions);
3. with ``skip_special_tokens=True`` the other special tokens (``<unk>``) go too;
4. the pieces are joined into words by the Metaspace decoder.

``output_char_offsets=True`` / ``output_word_offsets=True`` also return frame offsets (start inclusive, end
exclusive, as `Wav2Vec2CTCTokenizer` counts them) per piece and per word, which the ASR pipeline turns into
``return_timestamps="char"`` (one chunk per piece) and ``"word"`` timestamps.

Remote code: this file imports only transformers and the standard library, so a model folder holding it (copied by
`save_pretrained`, named in ``tokenizer_config.json``'s ``auto_map``) loads with
``AutoTokenizer.from_pretrained(folder, trust_remote_code=True)`` where this package is not installed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from transformers import PreTrainedTokenizerFast
from transformers.utils import ModelOutput

# The Metaspace replacement character that starts each word's first piece.
WORD_BOUNDARY = "▁"


@dataclass
class SubwordCTCTokenizerOutput(ModelOutput):
    """`SubwordCTCTokenizer.decode` with offsets: the text, and per piece / per word
    ``{"char" or "word": str, "start_offset": int, "end_offset": int}`` in output frames (end exclusive)."""

    text: str | list[str] = None
    char_offsets: list[dict] | list[list[dict]] | None = None
    word_offsets: list[dict] | list[list[dict]] | None = None


class SubwordCTCTokenizer(PreTrainedTokenizerFast):
    """`PreTrainedTokenizerFast` over a Metaspace BPE/Unigram ``tokenizer.json``, whose decode collapses CTC frame
    ids (see the module docstring). Encoding is the fast tokenizer's: ``tokenizer("HELLO WORLD").input_ids`` are
    the CTC labels, with no bos/eos added.

    Build one with `hf_prunable_ctc.data.vocabulary.train_subword_tokenizer`; load a saved one with
    `AutoTokenizer.from_pretrained(folder)`.
    """

    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"
    # The ASR pipeline passes this to `_get_word_offsets` for word timestamps: here the character that opens a word.
    replace_word_delimiter_char = WORD_BOUNDARY

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None,
                group_tokens: bool = True, output_char_offsets: bool = False, output_word_offsets: bool = False,
                **kwargs):
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        token_ids = [int(i) for i in token_ids]
        if group_tokens:
            groups = [(key, len(list(run))) for key, run in itertools.groupby(token_ids)]
        else:
            groups = [(i, 1) for i in token_ids]
        # (id, first frame, end frame) of each emission, blanks and (optionally) other special tokens left out.
        skipped = set(self.all_special_ids) if skip_special_tokens else set()
        emissions, frame = [], 0
        for token_id, count in groups:
            if token_id != self.pad_token_id and token_id not in skipped:
                emissions.append((token_id, frame, frame + count))
            frame += count
        ids = [token_id for token_id, _, _ in emissions]
        text = super()._decode(ids, skip_special_tokens=skip_special_tokens,
                               clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs)
        if not (output_char_offsets or output_word_offsets):
            return text
        pieces = [{"char": token, "start_offset": start, "end_offset": end}
                  for token, (_, start, end) in zip(self.convert_ids_to_tokens(ids), emissions)]
        return SubwordCTCTokenizerOutput(
            text=text, char_offsets=pieces if output_char_offsets else None,
            word_offsets=self._get_word_offsets(pieces) if output_word_offsets else None)

    def _get_word_offsets(self, offsets: list[dict], word_delimiter_char: str = WORD_BOUNDARY) -> list[dict]:
        """Words of a list of piece offsets (`decode(..., output_char_offsets=True)["char_offsets"]`): a piece that
        starts with `word_delimiter_char` opens a word, the others continue it. Each word is spelt as `decode`
        spells it and spans the frames of its pieces that hold letters: a lone "▁" piece only marks the boundary
        (pyctcdecode's beam search times words the same way)."""
        words: list[list[dict]] = []
        for piece in offsets:
            if piece["char"].startswith(word_delimiter_char) or not words:
                words.append([])
            if piece["char"] != word_delimiter_char:
                words[-1].append(piece)
        result = []
        for pieces in words:
            word = self.convert_tokens_to_string([piece["char"] for piece in pieces]).strip()
            if word:
                result.append({"word": word, "start_offset": pieces[0]["start_offset"],
                               "end_offset": pieces[-1]["end_offset"]})
        return result


# save_pretrained then names this class in tokenizer_config.json's auto_map and copies this file beside it.
SubwordCTCTokenizer.register_for_auto_class("AutoTokenizer")
