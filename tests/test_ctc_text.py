"""CTCTextDecoder gives the tokenizer's own text for greedy CTC ids (the pipeline and `transcribe` rely on it)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2CTCTokenizer

from hf_prunable_ctc.runtime.ctc_text import CTCTextDecoder

MODEL = Path(__file__).resolve().parents[1] / "model_cards" / "prunable-ctc-small-synth"


def random_ids(rng, size, length, blank):
    ids = rng.integers(0, size, length)
    ids[rng.random(length) < 0.4] = blank  # CTC output is mostly blanks, with runs of repeats
    return np.repeat(ids, rng.integers(1, 4, length))


def tokenizer_variant(tmp_path, **options):
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, "A": 3, "B": 4, "'": 5, ".": 6, "?": 7}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    return Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), **options)


@pytest.mark.parametrize("options", [{}, {"do_lower_case": True}, {"clean_up_tokenization_spaces": True},
                                     {"replace_word_delimiter_char": "_"}])
def test_same_text_as_the_tokenizer_on_random_ctc_outputs(tmp_path, options):
    tokenizer = tokenizer_variant(tmp_path, **options)
    tokenizer.add_tokens(["<x>"])  # an added token is decoded like a vocabulary one
    decoder = CTCTextDecoder(tokenizer)
    rng = np.random.default_rng(0)
    for length in [0, 1, 2, 3, 50] * 100:
        ids = random_ids(rng, len(tokenizer), length, tokenizer.pad_token_id)
        assert decoder(ids) == tokenizer.decode(ids), ids
        assert decoder(torch.from_numpy(ids)) == decoder(ids.tolist()) == decoder(ids)


def test_reference_tokenizer_and_ids_outside_the_vocabulary(tmp_path):
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(MODEL)
    decoder = CTCTextDecoder(tokenizer)
    rng = np.random.default_rng(1)
    for _ in range(300):
        ids = random_ids(rng, len(tokenizer), 80, tokenizer.pad_token_id)
        assert decoder(ids) == tokenizer.decode(ids)
    outside = [3, 4, len(tokenizer) + 5, 4]  # the tokenizer's own answer (its unknown token), not an IndexError
    assert decoder(outside) == tokenizer.decode(outside)


def test_other_tokenizer_classes_decode_themselves(tmp_path):
    class Shouting(Wav2Vec2CTCTokenizer):
        def decode(self, token_ids, **kwargs):
            return "OVERRIDDEN"

    tokenizer = tokenizer_variant(tmp_path)
    subclass = Shouting(str(tmp_path / "vocab.json"))
    assert CTCTextDecoder(subclass)([3, 4]) == "OVERRIDDEN"
    assert CTCTextDecoder(tokenizer)([3, 0, 3, 2, 4]) == "AA B"


def test_pipeline_wrapper_decodes_fast_and_delegates_the_rest(tmp_path):
    import copy
    import pickle

    from hf_prunable_ctc.runtime.ctc_text import FastDecodingTokenizer

    tokenizer = tokenizer_variant(tmp_path)
    wrapper = FastDecodingTokenizer(tokenizer)
    ids = [3, 3, 0, 3, 2, 2, 4, 1]
    assert wrapper.decode(ids) == tokenizer.decode(ids) == "AA B<unk>"
    assert wrapper.decode(ids, output_char_offsets=True) == tokenizer.decode(ids, output_char_offsets=True)
    assert wrapper.pad_token_id == tokenizer.pad_token_id and wrapper.wrapped is tokenizer
    for clone in (copy.deepcopy(wrapper), pickle.loads(pickle.dumps(wrapper))):
        assert clone.decode(ids) == "AA B<unk>"
