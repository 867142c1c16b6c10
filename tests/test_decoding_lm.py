"""Beam search with an n-gram LM: the decoder, the processor saved with a model folder, the stock and the package's
pipelines, `transcribe --lm`, and LMs built with lmplz."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("pyctcdecode")
pytest.importorskip("kenlm")

from transformers import AutoProcessor, AutoTokenizer, pipeline  # noqa: E402

from conftest import save_model_folder  # noqa: E402
from hf_prunable_ctc.cli import main  # noqa: E402
from hf_prunable_ctc.decoding.beam_decoder import build_beam_decoder, decoder_labels  # noqa: E402
from hf_prunable_ctc.decoding.ngram_lm import (build_ngram_lm, resolve_lm_file,  # noqa: E402
                                               without_held_out)
from hf_prunable_ctc.decoding.processor_with_lm import PrunableCTCProcessorWithLM  # noqa: E402
from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline  # noqa: E402

# A bigram LM over three words, written out by hand: CAT is likely, KAT is not a word.
TINY_ARPA = """\\data\\
ngram 1=6
ngram 2=5

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-0.7\t</s>\t0
-0.5\tCAT\t-0.3
-0.9\tSAT\t-0.3
-0.9\tTHE\t-0.3

\\2-grams:
-0.2\t<s> THE
-0.2\tTHE CAT
-0.2\tCAT SAT
-0.2\tSAT </s>
-0.5\tCAT </s>

\\end\\
"""


@pytest.fixture
def tiny_arpa(tmp_path):
    path = tmp_path / "tiny.arpa"
    path.write_text(TINY_ARPA)
    return path


@pytest.fixture
def folder_with_lm(tmp_path, tiny_arpa):
    """A tiny random model's folder, saved again with a processor holding the tiny LM."""
    folder = tmp_path / "model"
    model = save_model_folder(folder)
    PrunableCTCProcessorWithLM.from_lm(folder, tiny_arpa).save_pretrained(folder)
    return folder, model


def noise(seconds=1.5, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def spelled_logits(tokenizer, frames):
    """Logits (frames, vocab) where each frame is a dict token -> probability (the rest spread evenly)."""
    vocab = tokenizer.get_vocab()
    out = np.full((len(frames), len(tokenizer)), 1e-4, dtype=np.float32)
    for i, probabilities in enumerate(frames):
        for token, p in probabilities.items():
            out[i, vocab[token]] = p
    return np.log(out / out.sum(axis=1, keepdims=True))


def test_decoder_labels_follow_token_ids(tmp_path):
    save_model_folder(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    labels = decoder_labels(tokenizer)
    assert len(labels) == len(tokenizer)
    assert labels[tokenizer.pad_token_id] == ""
    assert labels[tokenizer.convert_tokens_to_ids("|")] == " "
    assert labels[tokenizer.convert_tokens_to_ids("A")] == "A"


def test_lm_turns_a_non_word_into_the_word_it_knows(tmp_path, tiny_arpa):
    save_model_folder(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    # Greedy reads "THE KAT": K beats C by a little on the one ambiguous frame.
    frames = [{"T": 0.9}, {"H": 0.9}, {"E": 0.9}, {"|": 0.9}, {"K": 0.5, "C": 0.45}, {"A": 0.9}, {"T": 0.9}]
    logits = spelled_logits(tokenizer, frames)
    greedy = tokenizer.decode(logits.argmax(-1).tolist())
    assert greedy == "THE KAT"
    assert build_beam_decoder(tokenizer).decode(logits, beam_width=8) == "THE KAT"
    assert build_beam_decoder(tokenizer, tiny_arpa).decode(logits, beam_width=8) == "THE CAT"


def test_saved_folder_with_lm_loads_with_auto_processor_and_decodes_through_the_stock_pipeline(folder_with_lm):
    folder, model = folder_with_lm
    assert (folder / "alphabet.json").is_file() and (folder / "language_model" / "tiny.arpa").is_file()
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor) is PrunableCTCProcessorWithLM
    asr = pipeline("automatic-speech-recognition", model=str(folder))
    assert asr.type == "ctc_with_lm"
    audio = noise()
    features = processor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = model(features["input_features"], attention_mask=features["attention_mask"]).logits[0]
    expected = processor.decode(logits, beam_width=8)
    assert asr(audio, decoder_kwargs={"beam_width": 8})["text"] == expected


def test_processor_refuses_a_decoder_over_another_vocabulary(tmp_path):
    from pyctcdecode import build_ctcdecoder

    save_model_folder(tmp_path)
    processor = PrunableCTCProcessorWithLM.from_lm(tmp_path)
    with pytest.raises(ValueError, match="alphabet"):
        PrunableCTCProcessorWithLM(processor.feature_extractor, processor.tokenizer, build_ctcdecoder(["", "A", "B"]))


def test_package_pipeline_decodes_every_depth_option_with_the_lm(folder_with_lm):
    folder, model = folder_with_lm
    asr = prunable_asr_pipeline(model=str(folder))
    assert asr.type == "ctc_with_lm"
    processor = AutoProcessor.from_pretrained(folder)
    audio = noise(seed=1)
    features = processor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = model(features["input_features"], attention_mask=features["attention_mask"], num_layers=2).logits
    assert asr(audio, num_layers=2)["text"] == processor.decode(logits[0])
    assert asr(audio, layers=[1, 2])["text"] == processor.decode(logits[0])
    exited = asr(audio, early_exit_threshold=0.0)
    assert exited["exit_depths"] and isinstance(exited["text"], str)
    long_audio = np.concatenate([noise(seed=s) for s in range(4)])
    assert isinstance(asr(long_audio, chunk_length_s=2.0, num_layers=3)["text"], str)
    assert isinstance(asr(audio, return_timestamps="word", num_layers=2)["chunks"], list)


def test_decoder_given_to_the_package_pipeline_replaces_the_folders_lm(folder_with_lm):
    folder, _ = folder_with_lm
    given = build_beam_decoder(AutoTokenizer.from_pretrained(folder))
    asr = prunable_asr_pipeline(model=str(folder), decoder=given)
    assert asr.decoder is given


def test_transcribe_with_lm_prints_the_pipelines_beam_search_text(folder_with_lm, tmp_path, tiny_arpa, capsys):
    folder, _ = folder_with_lm
    path = tmp_path / "a.wav"
    sf.write(path, noise(seed=2), 16000)
    assert main(["transcribe", str(folder), str(path), "--lm", str(tiny_arpa), "--beam_width", "8", "--depth", "2",
                 "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    asr = prunable_asr_pipeline(model=str(folder))
    assert record["text"] == asr(str(path), num_layers=2, decoder_kwargs={"beam_width": 8})["text"]
    assert record["depth"] == 2


def test_beam_width_without_an_lm_is_refused_for_a_folder_without_one(tmp_path, capsys):
    save_model_folder(tmp_path / "plain")
    path = tmp_path / "a.wav"
    sf.write(path, noise(), 16000)
    assert main(["transcribe", str(tmp_path / "plain"), str(path), "--beam_width", "8"]) == 2
    assert "--beam_width needs --lm" in capsys.readouterr().err


def test_held_out_sentences_are_removed_after_normalising_spaces():
    kept, removed = without_held_out(["THE CAT SAT", " THE  DOG ", "", "A CAT"], ["THE DOG", "NOT THERE"])
    assert kept == ["THE CAT SAT", "A CAT"]
    assert removed == 1


@pytest.mark.skipif(shutil.which("lmplz") is None or shutil.which("build_binary") is None,
                    reason="KenLM's lmplz is not installed: bash training/install_lmplz.sh")
def test_lm_built_with_lmplz_is_recorded_and_decodes(tmp_path):
    save_model_folder(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    record = build_ngram_lm(["THE CAT SAT", "THE CAT RAN", "A DOG SAT"], tmp_path / "lm", order=3,
                            record={"text": "test sentences"})
    assert record["order"] == 3 and record["sentences"] == 3 and record["vocabulary"] == 6
    assert json.loads((tmp_path / "lm" / "lm.json").read_text()) == record
    assert (tmp_path / "lm" / "unigrams.txt").read_text().split() == ["A", "CAT", "DOG", "RAN", "SAT", "THE"]
    frames = [{"T": 0.9}, {"H": 0.9}, {"E": 0.9}, {"|": 0.9}, {"K": 0.5, "C": 0.45}, {"A": 0.9}, {"T": 0.9}]
    decoder = build_beam_decoder(tokenizer, resolve_lm_file(tmp_path / "lm"))
    assert decoder.decode(spelled_logits(tokenizer, frames), beam_width=8) == "THE CAT"


# A BPE vocabulary trained on these, at a size where "THE CAT SAT" is the pieces ▁THE ▁ C AT ▁ SAT.
BPE_TEXTS = ["THE BAT SAT", "THE HAT SAT", "THE RAT SAT ON THE MAT", "THE CAT", "A KAT"]


def bpe_tokenizer():
    from hf_prunable_ctc.data.vocabulary import train_subword_tokenizer

    return train_subword_tokenizer(BPE_TEXTS, "bpe", 20)


def test_bpe_alphabet_keeps_the_word_marker_and_spells_the_unknown_token_as_a_word():
    tokenizer = bpe_tokenizer()
    labels = decoder_labels(tokenizer)
    assert len(labels) == len(tokenizer)
    assert labels[tokenizer.pad_token_id] == "" and labels[tokenizer.unk_token_id] == "▁⁇▁"
    assert labels[tokenizer.convert_tokens_to_ids("▁THE")] == "▁THE"
    assert labels[tokenizer.convert_tokens_to_ids("AT")] == "AT"
    assert " " not in labels  # a BPE alphabet has no space label: pyctcdecode refuses one
    decoder = build_beam_decoder(tokenizer)
    assert decoder._alphabet.is_bpe and list(decoder._alphabet.labels) == labels


def test_bpe_beam_search_with_and_without_the_lm(tiny_arpa):
    tokenizer = bpe_tokenizer()
    assert tokenizer.convert_ids_to_tokens(tokenizer("THE KAT").input_ids) == ["▁THE", "▁", "K", "AT"]
    # Greedy reads "THE KAT SAT": the piece K beats C by a little on the one ambiguous frame.
    frames = [{"▁THE": 0.9}, {"<pad>": 0.9}, {"▁": 0.9}, {"K": 0.5, "C": 0.45}, {"AT": 0.9}, {"<pad>": 0.9},
              {"▁": 0.9}, {"SAT": 0.9}]
    logits = spelled_logits(tokenizer, frames)
    assert tokenizer.decode(logits.argmax(-1).tolist()) == "THE KAT SAT"
    assert build_beam_decoder(tokenizer).decode(logits, beam_width=8) == "THE KAT SAT"
    with_lm = build_beam_decoder(tokenizer, tiny_arpa)
    assert with_lm.decode(logits, beam_width=8) == "THE CAT SAT"
    # Word frames as the greedy decode times them (a lone "▁" is not part of the word).
    assert with_lm.decode_beams(logits, beam_width=8)[0][2] == [("THE", (0, 1)), ("CAT", (3, 5)), ("SAT", (7, 8))]
    greedy = tokenizer.decode(logits.argmax(-1).tolist(), output_word_offsets=True).word_offsets
    assert [(w["start_offset"], w["end_offset"]) for w in greedy] == [(0, 1), (3, 5), (7, 8)]


def test_bpe_folder_with_lm_decodes_through_the_stock_and_the_package_pipelines(tmp_path, tiny_arpa):
    from conftest import tiny_model
    from hf_prunable_ctc.data.features import make_feature_extractor, save_processor

    tokenizer = bpe_tokenizer()
    model = tiny_model(num_mel_bins=80, vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path)
    save_processor(make_feature_extractor(), tokenizer, tmp_path)
    PrunableCTCProcessorWithLM.from_lm(tmp_path, tiny_arpa).save_pretrained(tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(processor) is PrunableCTCProcessorWithLM and processor.decoder._alphabet.is_bpe
    audio = noise(seed=3)
    features = processor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = model(features["input_features"], attention_mask=features["attention_mask"]).logits[0]
    expected = processor.decode(logits, beam_width=8)
    stock = pipeline("automatic-speech-recognition", model=str(tmp_path))
    assert stock.type == "ctc_with_lm"
    result = stock(audio, decoder_kwargs={"beam_width": 8}, return_timestamps="word")
    assert result["text"] == expected
    assert " ".join(chunk["text"] for chunk in result["chunks"]) == expected
    assert prunable_asr_pipeline(model=str(tmp_path))(audio, decoder_kwargs={"beam_width": 8})["text"] == expected
