"""Subword (BPE / Unigram) CTC vocabularies: training, the tokenizer's CTC decode and offsets, saving and loading
with the Auto classes, both ASR pipelines, and `--vocabulary` in the training script."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoProcessor, AutoTokenizer, pipeline

from conftest import tiny_model
from hf_prunable_ctc.data.features import make_feature_extractor, save_processor
from hf_prunable_ctc.data.vocabulary import (VocabularyChoice, count_out_of_vocabulary, make_ctc_tokenizer,
                                             parse_vocabulary_option, train_subword_tokenizer)
from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline
from hf_prunable_ctc.tokenization_subword_ctc import SubwordCTCTokenizer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
TEXTS = ["THE BAT SAT", "THE HAT SAT", "THE RAT SAT ON THE MAT", "THE CAT", "A KAT"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_subword_tokenizer(TEXTS, "bpe", 20)


def model_folder(path, tokenizer, seed=0):
    """A tiny random model saved with `tokenizer` and the package's feature extractor, as training leaves it."""
    model = tiny_model(seed=seed, num_mel_bins=80, vocab_size=len(tokenizer))
    model.save_pretrained(path)
    save_processor(make_feature_extractor(), tokenizer, path)
    return model


def test_option_values_parse_and_bad_ones_say_what_is_accepted():
    assert parse_vocabulary_option("characters") == VocabularyChoice()
    assert parse_vocabulary_option("bpe:256") == VocabularyChoice("bpe", 256)
    assert parse_vocabulary_option("Unigram:500") == VocabularyChoice("unigram", 500)
    assert str(parse_vocabulary_option("bpe:256")) == "bpe:256"
    for bad, reason in [("bpe:0", "at least 3 tokens"), ("foo:12", "unknown kind 'foo'"),
                        ("bpe:abc", "must be a whole number"), ("bpe", "must be a whole number"),
                        ("bpe:-5", "must be a whole number"), ("", "unknown kind")]:
        with pytest.raises(ValueError, match=reason) as error:
            parse_vocabulary_option(bad)
        assert "'bpe:N' or 'unigram:N'" in str(error.value)


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_trained_vocabulary_has_the_ctc_special_ids_and_round_trips_text(kind):
    texts = [row["transcription"] for row in csv.DictReader(open(DEMO / "train" / "metadata.csv"))][:400]
    tokenizer = train_subword_tokenizer(texts, kind, 128)
    assert isinstance(tokenizer, SubwordCTCTokenizer)
    assert tokenizer.pad_token_id == 0 and tokenizer.unk_token_id == 1
    assert tokenizer.convert_ids_to_tokens([0, 1]) == ["<pad>", "<unk>"]
    assert tokenizer.bos_token is None and tokenizer.eos_token is None
    assert 30 < len(tokenizer) <= 128
    vocab = tokenizer.get_vocab()
    assert sorted(vocab.values()) == list(range(len(tokenizer)))
    # Every character of the text is a piece, so no training transcript has an <unk>.
    assert set("".join(texts)) - {" "} <= set(vocab)
    assert count_out_of_vocabulary(texts, vocab) == {}
    for text in texts[:50]:
        ids = tokenizer(text).input_ids
        assert tokenizer.unk_token_id not in ids and tokenizer.pad_token_id not in ids
        assert tokenizer.decode(ids, group_tokens=False) == text
    lengths = [len(tokenizer(text).input_ids) for text in texts]
    assert sum(lengths) < 0.7 * sum(len(text) for text in texts)  # subwords: much shorter labels than characters
    # A character never seen in training becomes <unk>, and is counted as out of vocabulary.
    assert tokenizer.unk_token_id in tokenizer("THE Q9").input_ids
    assert count_out_of_vocabulary(["THE 9"], vocab) == {"9": 1}


def test_size_is_at_least_the_alphabet_and_kind_and_text_are_checked():
    tokenizer = train_subword_tokenizer(TEXTS, "bpe", 3)
    letters = set("".join(TEXTS)) - {" "}
    assert len(tokenizer) == 2 + 1 + len(letters)  # specials, the word marker, each letter
    with pytest.raises(ValueError, match="kind"):
        train_subword_tokenizer(TEXTS, "wordpiece", 30)
    with pytest.raises(ValueError, match="no text"):
        train_subword_tokenizer(["", "  "], "bpe", 30)
    with pytest.raises(ValueError, match="marker"):
        train_subword_tokenizer(["THE ▁CAT"], "bpe", 30)
    assert type(make_ctc_tokenizer(TEXTS, "characters")).__name__ == "Wav2Vec2CTCTokenizer"
    assert len(make_ctc_tokenizer(TEXTS, "bpe:20")) == 20


def test_saved_tokenizer_loads_back_with_auto_tokenizer_with_and_without_remote_code(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json", "tokenization_subword_ctc.py"} <= set(os.listdir(tmp_path))
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "SubwordCTCTokenizer"
    assert config["auto_map"]["AutoTokenizer"][0] == "tokenization_subword_ctc.SubwordCTCTokenizer"
    loaded = AutoTokenizer.from_pretrained(tmp_path)  # this package is imported: its registered class
    assert type(loaded) is SubwordCTCTokenizer
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded("THE CAT SAT").input_ids == tokenizer("THE CAT SAT").input_ids
    # Where the package is not installed, the copied file is the class: torch, transformers, tokenizers only.
    script = ("import sys; from transformers import AutoTokenizer; "
              "t = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True); "
              "assert 'hf_prunable_ctc' not in sys.modules; "
              "print(type(t).__name__, t('THE CAT SAT').input_ids, repr(t.decode([0, 5, 5, 0, 5])))")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    expected = tokenizer.decode([0, 5, 5, 0, 5])
    assert out.stdout.split("\n")[0] == (f"SubwordCTCTokenizer {tokenizer('THE CAT SAT').input_ids} "
                                         f"{expected!r}")


def test_ctc_decode_of_hand_made_frames_gives_the_words_and_their_offsets(tokenizer):
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("THE CAT SAT").input_ids)
    assert pieces == ["▁THE", "▁", "C", "AT", "▁", "SAT"]  # what the frames below spell
    the, space, c, at, sat = tokenizer.convert_tokens_to_ids(["▁THE", "▁", "C", "AT", "SAT"])
    blank = tokenizer.pad_token_id
    # frame:  0      1    2    3      4      5  6      7   8      9    10     11   12   13
    frames = [blank, the, the, blank, space, c, blank, at, blank, blank, space, sat, sat, blank]
    assert tokenizer.decode(frames) == "THE CAT SAT"
    # Words span the frames of their letters: a lone "▁" marks where a word starts but is not part of it.
    out = tokenizer.decode(frames, output_char_offsets=True, output_word_offsets=True)
    assert out.text == out["text"] == "THE CAT SAT"
    assert [(p["char"], p["start_offset"], p["end_offset"]) for p in out.char_offsets] == [
        ("▁THE", 1, 3), ("▁", 4, 5), ("C", 5, 6), ("AT", 7, 8), ("▁", 10, 11), ("SAT", 11, 13)]
    assert out.word_offsets == [{"word": "THE", "start_offset": 1, "end_offset": 3},
                                {"word": "CAT", "start_offset": 5, "end_offset": 8},
                                {"word": "SAT", "start_offset": 11, "end_offset": 13}]
    # The same piece twice is one emission unless a blank separates it; label ids are read without grouping.
    word = tokenizer.convert_tokens_to_ids("▁THE")
    assert tokenizer.decode([word, word, blank, word]) == "THE THE"
    assert tokenizer.decode([word, word]) == "THE"
    assert tokenizer.decode([word, word], group_tokens=False) == "THE THE"
    # Blanks go after grouping even when special tokens are skipped (unlike Wav2Vec2CTCTokenizer's decode).
    assert tokenizer.decode([word, blank, word], skip_special_tokens=True) == "THE THE"
    assert tokenizer.decode([word, tokenizer.unk_token_id, word], skip_special_tokens=True) == "THE THE"
    assert tokenizer.decode([blank] * 5) == "" and tokenizer.decode([]) == ""
    assert tokenizer.batch_decode([frames, [blank, word]]) == ["THE CAT SAT", "THE"]
    assert tokenizer.decode(np.array(frames)) == tokenizer.decode(torch.tensor(frames)) == "THE CAT SAT"


def test_a_model_folder_transcribes_with_word_timestamps_in_both_pipelines(tokenizer, tmp_path):
    model = model_folder(tmp_path, tokenizer)
    assert type(AutoProcessor.from_pretrained(tmp_path).tokenizer) is SubwordCTCTokenizer
    audio = (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)
    extractor = make_feature_extractor()
    features = extractor(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    with torch.no_grad():
        ids = model(features["input_features"], attention_mask=features["attention_mask"]).logits[0].argmax(-1)
    expected = tokenizer.decode(ids, output_word_offsets=True)
    assert expected.text.strip(), "a random model that emits nothing would not test the decoding"
    seconds = model.config.inputs_to_logits_ratio / 16000
    stock = pipeline("automatic-speech-recognition", model=str(tmp_path))
    package = prunable_asr_pipeline(model=str(tmp_path))
    for asr in (stock, package):
        assert asr(audio)["text"] == expected.text
        chunks = asr(audio, return_timestamps="word")["chunks"]
        assert [chunk["text"] for chunk in chunks] == [w["word"] for w in expected.word_offsets]
        assert [chunk["timestamp"] for chunk in chunks] == [
            (w["start_offset"] * seconds, w["end_offset"] * seconds) for w in expected.word_offsets]
        assert " ".join(chunk["text"] for chunk in chunks) == expected.text
        pieces = asr(audio, return_timestamps="char")["chunks"]
        assert "".join(p["text"] for p in pieces).replace("▁", " ").strip() == expected.text
    with torch.no_grad():
        shallow = model(features["input_features"], attention_mask=features["attention_mask"], num_layers=2)
    assert package(audio, num_layers=2)["text"] == tokenizer.decode(shallow.logits[0].argmax(-1))


def test_training_with_a_bpe_vocabulary_saves_a_folder_the_stock_pipeline_transcribes(tmp_path):
    sys.path.insert(0, str(ROOT / "training"))
    import train

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, subsampling_conv_channels=32, interctc_layers=[1])))
    out = tmp_path / "run"
    train.main(["--model_config", str(config), "--dataset_name", "audiofolder", "--data_dir", str(DEMO),
                "--output_dir", str(out), "--do_train", "--max_train_samples", "24", "--max_eval_samples", "4",
                "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "4", "--report_to", "none",
                "--seed", "1", "--use_cpu", "--max_steps", "2", "--vocabulary", "bpe:48"])
    assert {"tokenizer.json", "tokenizer_config.json", "tokenization_subword_ctc.py", "model.safetensors"} <= set(
        os.listdir(out))
    assert not (out / "vocab.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(tokenizer) is SubwordCTCTokenizer and len(tokenizer) == 48
    model_config = json.loads((out / "config.json").read_text())
    assert model_config["vocab_size"] == 48 and model_config["pad_token_id"] == 0
    # The vocabulary is the training split's: the first 24 training transcripts alone, as --max_train_samples says.
    rows = list(csv.DictReader(open(DEMO / "train" / "metadata.csv")))[:24]
    assert tokenizer.get_vocab() == train_subword_tokenizer([r["transcription"] for r in rows], "bpe", 48).get_vocab()
    asr = pipeline("automatic-speech-recognition", model=str(out))
    clip = DEMO / "test" / next(csv.DictReader(open(DEMO / "test" / "metadata.csv")))["file_name"]
    audio, rate = sf.read(clip, dtype="float32")
    result = asr({"raw": audio, "sampling_rate": rate}, return_timestamps="word")
    assert isinstance(result["text"], str)
    assert " ".join(chunk["text"] for chunk in result["chunks"]) == result["text"]


@pytest.mark.parametrize("value,message", [("bpe:0", "at least 3 tokens"), ("foo:12", "unknown kind"),
                                           ("bpe:abc", "whole number")])
def test_training_refuses_a_bad_vocabulary_option(tmp_path, capsys, value, message):
    sys.path.insert(0, str(ROOT / "training"))
    import train

    with pytest.raises(SystemExit) as exit_info:
        train.parse_arguments(["--model_config", "x.json", "--dataset_name", "audiofolder",
                               "--output_dir", str(tmp_path / "run"), "--vocabulary", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--vocabulary {value!r}" in err and message in err
    assert not (tmp_path / "run").exists()


def test_training_refuses_a_new_vocabulary_with_a_given_tokenizer(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "training"))
    import train

    with pytest.raises(SystemExit):
        train.parse_arguments(["--model_name_or_path", "some/model", "--dataset_name", "audiofolder",
                               "--output_dir", str(tmp_path / "run"), "--vocabulary", "bpe:64"])
    assert "bring their own tokenizer" in capsys.readouterr().err


def test_a_pruned_copy_keeps_the_subword_tokenizer(tokenizer, tmp_path):
    from hf_prunable_ctc.cli import main

    model_folder(tmp_path / "model", tokenizer)
    assert main(["prune", str(tmp_path / "model"), str(tmp_path / "pruned"), "--depth", "2"]) == 0
    assert {"tokenizer.json", "tokenization_subword_ctc.py"} <= set(os.listdir(tmp_path / "pruned"))
    audio = (0.1 * np.random.default_rng(1).standard_normal(24000)).astype(np.float32)
    pruned = pipeline("automatic-speech-recognition", model=str(tmp_path / "pruned"))
    assert type(pruned.tokenizer) is SubwordCTCTokenizer
    assert pruned(audio)["text"] == prunable_asr_pipeline(model=str(tmp_path / "model"))(audio, num_layers=2)["text"]
