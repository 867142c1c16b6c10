"""Vocabulary convention (<pad>=0=blank, <unk>=1, sorted chars, space -> "|") and the stock CTC tokenizer."""

import json
from collections import Counter

import pytest
from transformers import AutoTokenizer, Wav2Vec2CTCTokenizer

from hf_prunable_ctc.data.vocabulary import (DEFAULT_VOCABULARY, build_vocabulary, count_out_of_vocabulary,
                                             make_tokenizer)


def test_build_vocabulary_convention():
    vocab = build_vocabulary(["HELLO WORLD", "IT'S"])
    assert vocab == {
        "<pad>": 0, "<unk>": 1, "|": 2, "'": 3, "D": 4, "E": 5, "H": 6, "I": 7, "L": 8, "O": 9, "R": 10, "S": 11,
        "T": 12, "W": 13,
    }
    # The delimiter is there even without a space in the text.
    assert build_vocabulary(["AB"]) == {"<pad>": 0, "<unk>": 1, "|": 2, "A": 3, "B": 4}
    with pytest.raises(ValueError):
        build_vocabulary(["A|B"])


def test_default_vocabulary():
    assert len(DEFAULT_VOCABULARY) == 30
    assert DEFAULT_VOCABULARY["<pad>"] == 0 and DEFAULT_VOCABULARY["<unk>"] == 1 and DEFAULT_VOCABULARY["|"] == 2
    assert set(DEFAULT_VOCABULARY) == {"<pad>", "<unk>", "|", "'"} | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert sorted(DEFAULT_VOCABULARY.values()) == list(range(30))


def test_tokenizer_special_tokens_and_round_trip():
    tokenizer = make_tokenizer()
    assert isinstance(tokenizer, Wav2Vec2CTCTokenizer)
    assert tokenizer.pad_token_id == 0 and tokenizer.unk_token_id == 1
    assert tokenizer.word_delimiter_token == "|" and tokenizer.word_delimiter_token_id == 2
    assert tokenizer.bos_token is None and tokenizer.eos_token is None
    assert tokenizer.get_vocab() == DEFAULT_VOCABULARY

    ids = tokenizer("HELLO WORLD").input_ids
    v = DEFAULT_VOCABULARY
    assert ids == [v[c] for c in "HELLO|WORLD"]  # no bos/eos added
    # Label ids are decoded without grouping; grouping would collapse the double L.
    assert tokenizer.decode(ids, group_tokens=False) == "HELLO WORLD"
    assert tokenizer.decode(ids) == "HELO WORLD"
    # Unknown characters (lower case is not folded) become <unk>.
    assert tokenizer("Hi").input_ids == [v["H"], 1]


def test_decode_collapses_ctc_repeats_and_drops_blanks():
    tokenizer = make_tokenizer()
    v, blank = DEFAULT_VOCABULARY, 0
    frames = [blank, v["H"], v["H"], blank, v["E"], v["L"], blank, v["L"], v["O"], v["O"], v["|"], v["|"],
              v["W"], blank, v["O"], v["R"], v["L"], v["L"], v["D"], blank, blank]
    assert tokenizer.decode(frames) == "HELLO WORLD"
    assert tokenizer.batch_decode([frames, [blank] * 5]) == ["HELLO WORLD", ""]
    # The trap documented in vocabulary.py: skipping special tokens removes blanks before collapsing.
    assert tokenizer.decode(frames, skip_special_tokens=True) == "HELO WORLD"


def test_save_and_auto_tokenizer(tmp_path):
    vocab = build_vocabulary(["ABC D"])
    tokenizer = make_tokenizer(vocab, save_dir=tmp_path)
    assert json.loads((tmp_path / "vocab.json").read_text()) == vocab
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is Wav2Vec2CTCTokenizer
    assert loaded.get_vocab() == vocab and loaded.pad_token_id == 0 and loaded.word_delimiter_token == "|"
    assert loaded("AB D").input_ids == tokenizer("AB D").input_ids


def test_make_tokenizer_rejects_incomplete_vocabulary():
    with pytest.raises(ValueError):
        make_tokenizer({"<pad>": 0, "A": 1})
    with pytest.raises(ValueError):
        make_tokenizer({"<pad>": 0, "<unk>": 1, "|": 3})


def test_count_out_of_vocabulary():
    counts = count_out_of_vocabulary(["HELLO, WORLD!", "née"], DEFAULT_VOCABULARY)
    assert counts == Counter({",": 1, "!": 1, "n": 1, "é": 1, "e": 1})
    assert count_out_of_vocabulary(["IT'S OK"], DEFAULT_VOCABULARY) == Counter()
