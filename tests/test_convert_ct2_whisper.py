"""CTranslate2 Whisper -> Transformers: a small random Whisper goes to CTranslate2 with CTranslate2's own converter
and comes back through ours. Every weight must come back as CTranslate2 stored it (float32 exactly, float16 and
bfloat16 as their rounding of the original, int8 within half a quantisation step), and the converted model must
encode and decode greedily exactly like the original and like CTranslate2 itself."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ctranslate2 = pytest.importorskip("ctranslate2", reason="the round trip needs ctranslate2's converter and runtime")

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,  # noqa: E402
                          WhisperForConditionalGeneration, WhisperTokenizer, pipeline)

from hf_prunable_ctc.cli import main  # noqa: E402
from hf_prunable_ctc.conversion import (CT2FormatError, ct2_model_folder, load_ct2_whisper,  # noqa: E402
                                        read_ct2_model, whisper_state_dict)
from hf_prunable_ctc.conversion.ct2_whisper import whisper_generation_settings  # noqa: E402
from hf_prunable_ctc.conversion.whisper_agreement import (ct2_greedy, ct2_prompt, log_mel_features,  # noqa: E402
                                                          transformers_greedy)
from hf_prunable_ctc.hub.output_folder import MARKER  # noqa: E402

# Whisper's special tokens in Whisper's order; with the 256 byte tokens before them the ids are small.
SPECIAL_TOKENS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
                  "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
NUM_TIMESTAMPS = 12  # left out of tokenizer.json, as in many Whisper tokenizers: the converter must add them
QUANTIZATIONS = ("float32", "float16", "bfloat16", "int8")
MAX_NEW_TOKENS = 20


def tiny_whisper_tokenizer() -> WhisperTokenizer:
    """Byte-level BPE without merges (one token per byte) plus Whisper's special tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    return WhisperTokenizer(tokenizer_object=backend, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                            eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A random Whisper (d_model 64, 2+2 layers, 4 heads) saved as a Transformers folder, every weight distinct."""
    tokenizer = tiny_whisper_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    end, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(vocab_size=len(tokenizer) + NUM_TIMESTAMPS, num_mel_bins=80, d_model=64,
                           encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                           encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=1500,
                           max_target_positions=64, pad_token_id=end, bos_token_id=end, eos_token_id=end,
                           decoder_start_token_id=start, suppress_tokens=None, begin_suppress_tokens=None)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Random values everywhere (biases, norms, the encoder's positions too): zero biases and unit norms would
        # all be equal, which CTranslate2 stores once under aliases, and positions left sinusoidal would not show
        # whether they are copied or recomputed.
        for name, parameter in model.named_parameters():
            base = 1.0 if "layer_norm.weight" in name else 0.0
            parameter.copy_(base + 0.2 * torch.randn_like(parameter))
    space = tokenizer.convert_tokens_to_ids("Ġ")
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, bos_token_id=start, eos_token_id=end, pad_token_id=end,
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        suppress_tokens=[1, 2, 3], begin_suppress_tokens=[space, end], max_length=64, is_multilingual=False,
        alignment_heads=[[1, 0], [1, 1]])
    folder = tmp_path_factory.mktemp("whisper-hf")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def ct2_folders(original, tmp_path_factory):
    """The original converted by CTranslate2 at each quantisation, with tokenizer and feature extractor files."""
    folder, _ = original
    root = tmp_path_factory.mktemp("whisper-ct2")
    converted = {}
    for quantization in QUANTIZATIONS:
        converter = ctranslate2.converters.TransformersConverter(
            str(folder), copy_files=["tokenizer.json", "preprocessor_config.json"])
        converted[quantization] = converter.convert(str(root / quantization), quantization=quantization)
    return converted


@pytest.fixture(scope="module")
def converted(ct2_folders):
    return load_ct2_whisper(ct2_folders["float32"])


@pytest.fixture(scope="module")
def features(converted):
    _, processor = converted
    rng = np.random.default_rng(0)
    audios = [0.1 * rng.standard_normal(16000 * seconds).astype(np.float32) for seconds in (1, 3)]
    return log_mel_features(processor.feature_extractor, audios)


@pytest.mark.parametrize("quantization", ["float32", "float16", "bfloat16"])
def test_float_weights_come_back_as_stored(original, ct2_folders, quantization):
    _, model = original
    expected = {name: tensor.to(getattr(torch, quantization)).float() for name, tensor in model.state_dict().items()}
    back, _ = load_ct2_whisper(ct2_folders[quantization])
    state = back.state_dict()
    assert set(state) == set(expected)
    for name, tensor in state.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, expected[name]), name
    if quantization != "float32":  # the comparison above is not vacuous: storage did round the weights
        assert not torch.equal(state["model.encoder.conv1.weight"], model.state_dict()["model.encoder.conv1.weight"])


def test_int8_weights_within_half_a_quantisation_step(original, ct2_folders):
    _, model = original
    stored = read_ct2_model(ct2_folders["int8"]).variables
    assert stored["encoder/layer_0/self_attention/linear_0/weight"].dtype == np.int8
    assert stored["encoder/conv1/weight"].dtype == np.int8 and stored["decoder/embeddings/weight"].dtype == np.int8
    back, _ = load_ct2_whisper(ct2_folders["int8"])
    quantised = 0
    for name, tensor in back.state_dict().items():
        reference = model.state_dict()[name]
        if name.endswith("weight") and reference.dim() >= 2 and "embed_positions" not in name:
            # One scale per output row: the step is max|row| / 127, rounding errs by at most half of it.
            rows = reference.reshape(reference.shape[0], -1)
            step = (rows.abs().amax(dim=1) / 127).reshape((-1,) + (1,) * (reference.dim() - 1))
            error = (tensor - reference).abs()
            assert bool((error <= step / 2 * (1 + 1e-5)).all()), name
            assert error.max() > 0, name
            quantised += 1
        else:  # biases, norms and position tables stay float32
            assert torch.equal(tensor, reference), name
    # 2 convolutions, 6 linears per encoder layer, 10 per decoder layer, the embeddings and the projection tied to them
    assert quantised == 2 + 2 * 6 + 2 * 10 + 2


def test_encoder_and_greedy_decoding_match_the_original_and_ctranslate2(original, ct2_folders, converted, features):
    _, model = original
    back, _ = converted
    inputs = torch.from_numpy(features)
    with torch.no_grad():
        ours = back.model.encoder(inputs).last_hidden_state
        assert torch.equal(ours, model.model.encoder(inputs).last_hidden_state)
    ct2_model = ctranslate2.models.Whisper(ct2_folders["float32"], compute_type="float32", intra_threads=2)
    ct2_encoded = np.array(ct2_model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))
    np.testing.assert_allclose(ct2_encoded, ours.numpy(), atol=1e-4, rtol=1e-4)

    tokens = transformers_greedy(back, features, max_new_tokens=MAX_NEW_TOKENS)
    # The original with the converted generation settings: only the weights differ, and they must not.
    model.generation_config = back.generation_config
    assert tokens == transformers_greedy(model, features, max_new_tokens=MAX_NEW_TOKENS)
    assert all(len(ids) == MAX_NEW_TOKENS for ids in tokens) and tokens[0] != tokens[1]
    assert tokens == ct2_greedy(ct2_model, features, ct2_prompt(back.generation_config), MAX_NEW_TOKENS)


def test_generation_settings_and_tokenizer_come_from_the_ctranslate2_folder(ct2_folders, converted):
    back, processor = converted
    tokenizer, generation = processor.tokenizer, back.generation_config
    ct2_config = json.loads((Path(ct2_folders["float32"]) / "config.json").read_text())
    assert generation.suppress_tokens == ct2_config["suppress_ids"] == [1, 2, 3]
    assert generation.begin_suppress_tokens == ct2_config["suppress_ids_begin"]
    assert generation.alignment_heads == [[1, 0], [1, 1]]
    assert generation.no_timestamps_token_id == tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    assert generation.decoder_start_token_id == tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    assert generation.is_multilingual is False and back.config.tie_word_embeddings
    # The timestamp tokens that tokenizer.json lacked are added with the model's ids.
    assert len(tokenizer) == back.config.vocab_size
    assert tokenizer.convert_ids_to_tokens(back.config.vocab_size - 1) == f"<|{(NUM_TIMESTAMPS - 1) * 0.02:.2f}|>"
    assert tokenizer.decode(tokenizer("hello there").input_ids, skip_special_tokens=True) == "hello there"


def test_multilingual_vocabularies_get_language_and_task_ids():
    tokenizer = tiny_whisper_tokenizer()
    # CTranslate2's config lists the language ids; configs of older converters do not, and Whisper's token order
    # gives them.
    for ct2_config in ({"lang_ids": [258]}, {}):
        settings = whisper_generation_settings(ct2_config, tokenizer, vocab_size=51865, max_length=448)
        assert settings["is_multilingual"] is True
        assert settings["lang_to_id"] == {"<|en|>": 258}
        assert settings["task_to_id"] == {"transcribe": 260, "translate": 259}
    assert whisper_generation_settings({}, tokenizer, vocab_size=51864, max_length=448)["is_multilingual"] is False


def test_command_writes_a_folder_the_asr_pipeline_loads(ct2_folders, converted, tmp_path, capsys):
    out = tmp_path / "whisper"
    assert main(["convert-ct2-whisper", ct2_folders["float16"], str(out)]) == 0
    assert "2+2 layers, d_model 64" in capsys.readouterr().out
    assert (out / MARKER).is_file() and (out / "model.safetensors").is_file()
    asr = pipeline("automatic-speech-recognition", model=str(out))
    audio = 0.1 * np.random.default_rng(1).standard_normal(16000).astype(np.float32)
    back16, _ = load_ct2_whisper(ct2_folders["float16"])
    expected = asr.tokenizer.decode(transformers_greedy(
        back16, log_mel_features(asr.feature_extractor, [audio]))[0], skip_special_tokens=True)
    # The pipeline searches with 5 beams unless told otherwise (openai-whisper's default); greedy must match.
    assert asr(audio, generate_kwargs={"num_beams": 1})["text"] == expected
    assert main(["convert-ct2-whisper", ct2_folders["float16"], str(out)]) == 0  # its own folder: rewritten

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["convert-ct2-whisper", ct2_folders["float16"], str(foreign)]) == 2
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert "will not write" in capsys.readouterr().err


def test_source_may_be_an_installed_package_shipping_the_model(ct2_folders, tmp_path, monkeypatch):
    package = tmp_path / "site" / "tiny_whisper_models"
    shutil.copytree(ct2_folders["int8"], package / "model")
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert ct2_model_folder("tiny_whisper_models") == package / "model"
    assert ct2_model_folder(ct2_folders["int8"]) == Path(ct2_folders["int8"])
    for missing in ("no_such_whisper", "no_such_whisper.models"):
        with pytest.raises(FileNotFoundError, match="no_such_whisper"):
            ct2_model_folder(missing)
    sys.modules.pop("tiny_whisper_models", None)


def test_reader_rejects_truncated_and_foreign_files(ct2_folders, tmp_path):
    data = (Path(ct2_folders["float32"]) / "model.bin").read_bytes()
    model = read_ct2_model(ct2_folders["float32"])
    assert (model.binary_version, model.spec_name) == (6, "WhisperSpec")
    assert model.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"
    (tmp_path / "truncated.bin").write_bytes(data[:len(data) // 2])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2_model(tmp_path / "truncated.bin")
    (tmp_path / "other.bin").write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(CT2FormatError, match="binary version"):
        read_ct2_model(tmp_path / "other.bin")
    (tmp_path / "trailing.bin").write_bytes(data + b"\0")
    with pytest.raises(CT2FormatError, match="unexpected bytes"):
        read_ct2_model(tmp_path / "trailing.bin")


def test_an_unknown_or_missing_variable_is_an_error_not_a_silent_gap(ct2_folders):
    variables = dict(read_ct2_model(ct2_folders["float32"]).variables)
    extra = dict(variables, **{"encoder/layer_0/self_attention/relative_bias": np.zeros((4, 8), np.float32)})
    with pytest.raises(ValueError, match="relative_bias"):
        whisper_state_dict(extra)
    missing = {name: value for name, value in variables.items() if name != "encoder/layer_1/ffn/linear_1/bias"}
    with pytest.raises(ValueError, match="has no 'encoder/layer_1/ffn/linear_1/bias'"):
        whisper_state_dict(missing)
