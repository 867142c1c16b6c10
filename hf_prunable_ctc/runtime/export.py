"""ONNX export, checked against PyTorch, with optional int8 quantisation (dynamic, or static with activation scales
calibrated on the model's own audio, see `quantization`): one folder for every depth, or one file for a fixed depth.

    export_onnx("model_dir", "out_dir")                  # every depth and early exit: runtime.onnx_runtime runs it
    result = export_onnx("model_dir", "out_dir", depth=4, quantize="int8")   # one file, 4 layers
    export_onnx("model_dir", "out_dir", quantize="int8-static", calibration_data="corpora/synth-6h-v2/validation")
    print(result["max_abs_diff"])

**Every depth** (no `depth`): the model is cut where depth on demand cuts it, into graphs run in sequence (as
sherpa-onnx splits a transducer into encoder, decoder and joiner): ``front_end.onnx`` (features and mask ->
subsampled hidden states and ``output_lengths``), ``layer_01.onnx`` ... one per layer (hidden states and lengths ->
hidden states), ``head.onnx`` (final norm + CTC head -> logits, padded frames blank) and, for a self-conditioned
model, ``conditioning.onnx`` (what an intermediate-CTC layer adds back to the hidden state). Each weight is stored
once, so the folder is about the size of a single full-depth file, and any subset of layers, in order, is a valid
path: the runtime picks the depth per call (`num_layers`, `layers`, early exit at the intermediate-CTC layers)
without reloading. ``runtime.json`` lists the graphs and what the runtime needs of the config (layers,
intermediate-CTC layers, pruning schedule, blank id); ``front_end.npz`` holds the feature extractor's window and mel
filters, so features can be computed without torch or transformers.

**Streaming** (every-depth folder of a model that can stream, see `streaming_unavailable`): the folder also holds
the graphs `runtime.onnx_streaming.OnnxStreamingRecognizer` runs one attention chunk at a time, with the caches as
plain inputs and outputs: ``layer_01_chunk.onnx`` ... (a chunk's hidden states, its first position, the layer's
cached keys and values, growing until the recogniser trims them to the left context, and a causal conformer's
convolution state -> the chunk's hidden states and the extended caches), ``front_end_chunk_conv_1.onnx`` ... (one
subsampling convolution on the frames it has complete; the recogniser keeps the frames each has not consumed) and
``front_end_chunk_projection.onnx``; ``head.onnx`` and ``conditioning.onnx`` serve both. The weights of every graph
then go to one ``weights.bin`` (ONNX external data), each stored once, so a layer's chunk graph and its
full-utterance graph read the same bytes. `streaming` chooses: None (default) writes them whenever the model and
its feature extractor can stream and the export is float32, True requires them, False leaves them out.

**One depth** (`depth=k`): ``out_dir/model.onnx`` with inputs ``input_features`` float32 ``(batch, frames, num_mel_bins)`` and
``attention_mask`` int32 ``(batch, frames)`` (what the feature extractor returns, so
``session.run(None, dict(extractor(audio, return_tensors="np")))`` works as is), and outputs ``logits`` float32
``(batch, frames_out, vocab_size)`` and ``output_lengths`` int64 ``(batch,)`` (valid output frames, so a device can
trim padding without re-deriving the subsampling arithmetic; frames beyond them are certain blanks anyway); batch
and time are dynamic. The tokenizer and feature-extractor files go beside it, so the folder is all a device needs:
features from the extractor (or any Kaldi fbank + CMVN), ONNX Runtime, greedy CTC decoding with the tokenizer.

The output folder follows the rules of `prune` and `publish` (`hub.output_folder`): it must be new, empty or one
this package wrote; it is written whole and moved into place, so no file of an earlier export is left behind.

Needs ``onnx``, ``onnxruntime`` and ``onnxscript`` (torch's ONNX exporter); none of them depends on torch.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..hub.output_folder import write_output_folder
from .quantization import CALIBRATION_UTTERANCES, quantize_int8

QUANTIZE_CHOICES = (None, "int8", "int8-static")
INPUT_NAMES = ["input_features", "attention_mask"]
OUTPUT_NAMES = ["logits", "output_lengths"]


RUNTIME_FILE = "runtime.json"
FRONT_END_TABLES = "front_end.npz"
RUNTIME_FORMAT = "hf-prunable-ctc-onnx-layers"
SHARED_WEIGHTS = "weights.bin"
# Tensors smaller than this stay inside their graph: sharing them saves nothing, and the constants of a graph's own
# arithmetic (shapes, scales) are that small.
SHARED_WEIGHTS_MIN_BYTES = 1024


class _ExportedForward(nn.Module):
    """The CTC model as ONNX sees it: (input_features, int32 attention_mask) -> (logits, output_lengths)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor):
        output = self.model(input_features, attention_mask=attention_mask.long(), return_dict=True)
        return output.logits, output.output_lengths


def export_onnx(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    depth: int | None = None,
    quantize: str | None = None,
    opset: int = 18,
    check: bool = True,
    calibration_data: str | os.PathLike | None = None,
    calibration_utterances: int = CALIBRATION_UTTERANCES,
    streaming: bool | None = None,
) -> dict[str, Any]:
    """Export the model in `model_dir`, pruned to `depth` layers by its pruning schedule, to ONNX.

    Args:
        model_dir: a saved `PrunableCTCForCTC` folder (weights, config, tokenizer, feature extractor).
        out_dir: a new or empty folder, or one this package wrote before (its files are replaced); anything else
            is refused with `OutputFolderError` and nothing is touched.
        depth: layers to keep, in one ``model.onnx``; default: the folder of graphs that serves every depth (see
            the module docstring), checked against PyTorch at every depth of the pruning schedule.
        quantize: ``None`` (float32), ``"int8"`` (ONNX Runtime dynamic quantisation of MatMul weights) or
            ``"int8-static"`` (activation scales calibrated on `calibration_data`, as `quantization.STATIC_SETTINGS`
            says: the convolutions with fixed int8 scales, per-channel weights); for one depth the float model is
            kept as ``model_fp32.onnx`` next to it.
        opset: ONNX opset.
        check: run ONNX Runtime and PyTorch on a padded batch of two utterances and report the difference.
        calibration_data: for ``"int8-static"`` only, and needed there: an audio split of the model's own corpus
            (training or validation, never test), an audiofolder split such as ``corpora/synth-6h-v2/validation``
            or a folder of audio files.
        calibration_utterances: utterances of `calibration_data` to calibrate on, spread evenly over it; each is
            run alone (batch 1), through every depth of the folder, each graph on what the float graphs before it
            produce.
        streaming: write the streaming graphs into the every-depth folder (see the module docstring): None writes
            them when `streaming_unavailable` finds no reason not to, True raises `ValueError` with that reason,
            False never writes them.

    Returns:
        ``{"path": str, "depth": int | None, "quantize": str | None, "size_bytes": int, "max_abs_diff": float |
        None, "streaming": bool, "streaming_max_abs_diff": float | None}``: `path` is ``model.onnx`` (one depth) or
        the folder (every depth, `depth` None), `size_bytes` that file's or all graphs' size (with the shared
        weights); `max_abs_diff` is over the valid (unpadded) output frames of the logits (the largest over the
        schedule's depths for the folder); `streaming` says whether the streaming graphs were written and
        `streaming_max_abs_diff` is the largest difference between their streamed logits and PyTorch's
        chunk-masked forward over the schedule's depths (`compare_streaming_with_pytorch`).

    Raises:
        ValueError: unknown `quantize`, `depth` outside the model's depths, ``"int8-static"`` without
            `calibration_data` (or with one holding no audio), `calibration_data` with another `quantize`,
            ``streaming=True`` with `depth` or for a model that cannot stream.
        OutputFolderError (a ValueError): `out_dir` holds files this package did not write, or is `model_dir`.
        ImportError: onnx/onnxruntime/onnxscript missing (the message names the pip command).
    """
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}, got {quantize!r}")
    if quantize == "int8-static" and calibration_data is None:
        raise ValueError("quantize='int8-static' calibrates activation scales on real audio: give calibration_data "
                         "(--calibration_data DIR), a training or validation split of the model's corpus, e.g. "
                         "corpora/synth-6h-v2/validation")
    if quantize != "int8-static" and calibration_data is not None:
        raise ValueError(f"calibration_data is used by quantize='int8-static' only, got quantize={quantize!r}")
    if streaming and depth is not None:
        raise ValueError("the streaming graphs belong to the every-depth folder: export without depth")
    _require_onnx()
    from transformers import AutoFeatureExtractor, AutoTokenizer

    from ..modeling_prunable_ctc import PrunableCTCForCTC

    model = PrunableCTCForCTC.from_pretrained(model_dir).eval()
    if depth is not None and depth != model.config.num_hidden_layers:
        model.prune_to(depth)  # raises ValueError naming the allowed depths
    out_dir = Path(out_dir)
    max_abs_diff = streaming_max_abs_diff = None
    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    no_streaming = streaming_unavailable(model.config, extractor, quantize)
    if streaming and no_streaming:
        raise ValueError(f"no streaming graphs for this model: {no_streaming}")
    streaming = depth is None and streaming is not False and no_streaming is None
    waveforms = None
    if quantize == "int8-static":  # before anything is written: a bad folder is refused first
        from .quantization import calibration_waveforms

        waveforms = calibration_waveforms(calibration_data, calibration_utterances, extractor.sampling_rate)

    def fill(staging: str) -> None:
        nonlocal max_abs_diff, streaming_max_abs_diff
        staging = Path(staging)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(staging)
        extractor.save_pretrained(staging)
        batch = _example_batch(model.config.num_mel_bins, (257, 123), 1)
        if depth is None:
            write_every_depth(model, extractor, staging, opset, quantize, waveforms, streaming=streaming)
            if check:
                max_abs_diff = compare_folder_with_pytorch(staging, model, batch)
                if streaming:
                    streaming_max_abs_diff = compare_streaming_with_pytorch(staging, model, batch[0][:1],
                                                                            extractor.sampling_rate)
            return
        float_path = staging / ("model_fp32.onnx" if quantize else "model.onnx")
        write_onnx(model, float_path, opset)
        if quantize == "int8":
            quantize_int8(float_path, staging / "model.onnx")
        elif quantize == "int8-static":
            from .quantization import quantize_static_int8

            feeds = [dict(extractor(waveform, sampling_rate=extractor.sampling_rate, return_tensors="np"))
                     for waveform in waveforms]
            quantize_static_int8(float_path, staging / "model.onnx", feeds)
        if check:
            max_abs_diff = compare_with_pytorch(staging / "model.onnx", model, batch)

    files = write_output_folder(str(out_dir), fill, sources=[str(model_dir)])
    if depth is None:
        size = sum((out_dir / name).stat().st_size for name in files
                   if name.endswith(".onnx") or name == SHARED_WEIGHTS)
        return {"path": str(out_dir), "depth": None, "quantize": quantize, "size_bytes": size,
                "max_abs_diff": max_abs_diff, "streaming": streaming, "streaming_max_abs_diff": streaming_max_abs_diff}
    final_path = out_dir / "model.onnx"
    return {"path": str(final_path), "depth": model.config.num_hidden_layers, "quantize": quantize,
            "size_bytes": final_path.stat().st_size, "max_abs_diff": max_abs_diff, "streaming": False,
            "streaming_max_abs_diff": None}


class _FrontEndGraph(nn.Module):
    """(features, int32 mask) -> (subsampled hidden states, output_lengths): what runs before the first layer."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model.model

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor):
        features, lengths = self.encoder.checked_inputs(input_features, attention_mask.long())
        return self.encoder.subsampling(features, lengths)


class _LayerGraph(nn.Module):
    """(hidden states, output_lengths) -> hidden states of one encoder layer, with the masks and rotary tables the
    encoder builds for it."""

    def __init__(self, model: nn.Module, index: int):
        super().__init__()
        self.encoder, self.index = model.model, index

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        from ..modeling_prunable_ctc import lengths_to_mask

        frame_mask = lengths_to_mask(lengths, hidden.shape[1])
        rotary = self.encoder.rotary(hidden.shape[1], hidden.dtype, hidden.device)
        return self.encoder.layers[self.index - 1](hidden, frame_mask[:, None, None, :], frame_mask, rotary)[0]


class _HeadGraph(nn.Module):
    """(hidden states, output_lengths) -> CTC logits, padded frames blank: the final norm and head."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        from ..modeling_prunable_ctc import blank_padded_frames

        return blank_padded_frames(self.model.logits_from_hidden_state(hidden), lengths, self.model.config.pad_token_id)


class _ConditioningGraph(nn.Module):
    """hidden states -> hidden states plus the projection of their CTC posteriors (self-conditioning)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        posteriors = self.model.logits_from_hidden_state(hidden).softmax(dim=-1)
        return hidden + self.model.model.conditioning_projection(posteriors)


def write_every_depth(model: nn.Module, extractor, folder: Path, opset: int, quantize: str | None,
                      calibration_waveforms: list | None = None, streaming: bool = False) -> None:
    """Write the graphs of the every-depth folder, ``runtime.json`` and the front end's tables into `folder`;
    ``"int8-static"`` calibrates on `calibration_waveforms` (1-D float arrays at the extractor's rate); with
    `streaming`, also the streaming graphs, and every graph's weights into the shared ``weights.bin``."""
    import numpy as np

    config = model.config
    features, mask = _example_batch(config.num_mel_bins, lengths=(300, 220))
    with torch.no_grad():
        hidden, lengths = _FrontEndGraph(model)(features, mask)
    hidden_axes = {0: "batch", 1: "frames_out"}
    graphs = [("front_end.onnx", _FrontEndGraph(model), (features, mask), INPUT_NAMES, ["hidden", "output_lengths"],
               {"input_features": {0: "batch", 1: "frames"}, "attention_mask": {0: "batch", 1: "frames"},
                "hidden": hidden_axes, "output_lengths": {0: "batch"}})]
    layer_files = [f"layer_{index:02d}.onnx" for index in range(1, config.num_hidden_layers + 1)]
    graphs += [(name, _LayerGraph(model, index), (hidden, lengths), ["hidden", "output_lengths"], ["hidden_out"],
                {"hidden": hidden_axes, "output_lengths": {0: "batch"}, "hidden_out": hidden_axes})
               for index, name in enumerate(layer_files, start=1)]
    graphs.append(("head.onnx", _HeadGraph(model), (hidden, lengths), ["hidden", "output_lengths"], ["logits"],
                   {"hidden": hidden_axes, "output_lengths": {0: "batch"}, "logits": hidden_axes}))
    if config.self_conditioning:
        graphs.append(("conditioning.onnx", _ConditioningGraph(model), (hidden,), ["hidden"], ["hidden_out"],
                       {"hidden": hidden_axes, "hidden_out": hidden_axes}))
    for name, module, example, inputs, outputs, axes in graphs:
        _trace_to_onnx(module.eval(), example, folder / name, inputs, outputs, axes, opset)
    tables = {"window": extractor.window.numpy(), "mel_filters": extractor.mel_filters.numpy()}
    if getattr(extractor, "feature_type", "kaldi_fbank") == "whisper_log_mel":
        tables.update(whisper_window=extractor.whisper_window.numpy(),
                      whisper_mel_filters=extractor.whisper_mel_filters.numpy())
    np.savez(folder / FRONT_END_TABLES, **tables)
    runtime = {
        "format": RUNTIME_FORMAT, "version": 1, "quantize": quantize,
        "num_layers": config.num_hidden_layers, "layers": layer_files, "front_end": "front_end.onnx",
        "head": "head.onnx", "conditioning": "conditioning.onnx" if config.self_conditioning else None,
        "interctc_layers": list(config.interctc_layers), "blank_id": config.pad_token_id,
        "kept_layers": list(config.kept_layers),
        "pruning_schedule": {str(k): v for k, v in model.pruning_schedule().items()},
        "inputs_to_logits_ratio": config.inputs_to_logits_ratio,
        "streaming": None,
        "streaming_unavailable": None if streaming else (streaming_unavailable(config, extractor, quantize)
                                                          or "it was exported with streaming=False"),
    }
    if streaming:
        runtime["streaming"] = write_streaming_graphs(model, folder, opset)
        share_weights(folder, [name for name, *_ in graphs] + runtime["streaming"]["graphs"])
    (folder / RUNTIME_FILE).write_text(json.dumps(runtime, indent=1) + "\n")
    if quantize is not None:
        quantize_folder(folder, [name for name, *_ in graphs], quantize, calibration_waveforms)


def quantize_folder(folder: Path, graph_files: list[str], quantize: str, waveforms: list | None) -> None:
    """Replace each float graph of a complete every-depth `folder` by its int8 version. Static calibration
    records every graph's inputs through the float folder before any graph is replaced."""
    from .quantization import every_depth_calibration_feeds, quantize_static_int8

    feeds = every_depth_calibration_feeds(folder, waveforms) if quantize == "int8-static" else None
    for name in graph_files:
        path = folder / name
        float_path = path.with_name(path.stem + "_fp32.onnx")
        os.replace(path, float_path)
        if feeds is None:
            quantize_int8(float_path, path)
        else:
            quantize_static_int8(float_path, path, feeds[name])
        float_path.unlink()


def compare_folder_with_pytorch(folder: str | os.PathLike, model: nn.Module,
                                batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Max |logits_onnx - logits_torch| over valid output frames of `batch`, at every depth of the model's pruning
    schedule and with early exit at threshold 0 (every utterance leaves at the first exit), through `OnnxPrunableCTC`."""
    from .onnx_runtime import OnnxPrunableCTC

    runtime = OnnxPrunableCTC(folder)
    features, mask = batch
    worst = 0.0
    with torch.no_grad():
        runs = [({"layers": layers}, model(features, attention_mask=mask, layers=layers))
                for layers in model.pruning_schedule().values()]
        runs.append(({"early_exit_threshold": 0.0}, model(features, attention_mask=mask, early_exit_threshold=0.0)))
    for options, expected in runs:
        logits, lengths, _ = runtime.logits(features.numpy(), mask.numpy(), **options)
        if lengths.tolist() != expected.output_lengths.tolist():
            raise AssertionError(f"ONNX output_lengths {lengths.tolist()} != PyTorch "
                                 f"{expected.output_lengths.tolist()} ({options})")
        valid = torch.arange(expected.logits.shape[1])[None, :] < expected.output_lengths[:, None]
        worst = max(worst, float((torch.from_numpy(logits) - expected.logits).abs()[valid].max()))
    return worst


# --- streaming graphs ---------------------------------------------------------------------------------------

def streaming_unavailable(config, extractor, quantize: str | None = None) -> str | None:
    """Why the every-depth folder of this model gets no streaming graphs (`chunked_stream.streaming_problems`, and
    the streaming graphs are float32 only), or None when it can have them."""
    from .chunked_stream import streaming_problems

    problems = streaming_problems(config, extractor)
    if quantize is not None:
        problems.append(f"the streaming graphs are float32 only, and this export is quantize={quantize!r}")
    return "; ".join(problems) or None


class _LayerChunkGraph(nn.Module):
    """One encoder layer on one streamed chunk (`forward_chunk`): (hidden, [start], key_cache, value_cache,
    [conv_cache]) -> (hidden_out, key_out, value_out, [conv_out]). `start` (the chunk's first position) only for
    rotary positions, the convolution state only for a conformer."""

    def __init__(self, model: nn.Module, index: int):
        super().__init__()
        self.encoder, self.index = model.model, index
        self.rotary = model.config.position_embedding_type == "rotary"
        self.convolution = model.config.encoder_type == "conformer"

    def forward(self, hidden: torch.Tensor, *caches: torch.Tensor):
        start, caches = (caches[0], caches[1:]) if self.rotary else (0, caches)
        rotary = self.encoder.rotary(hidden.shape[1], hidden.dtype, start=start)
        conv_cache = caches[2] if self.convolution else None
        hidden, (key, value), conv_cache = self.encoder.layers[self.index - 1].forward_chunk(
            hidden, rotary, (caches[0], caches[1]), conv_cache)
        return (hidden, key, value) + ((conv_cache,) if self.convolution else ())


class _SubsamplingConvChunkGraph(nn.Module):
    """One convolution of the front end on frames that are all there (no padding in time, as in
    `ConvSubsampling.forward_chunk`): (batch, channels, [freq,] frames) -> GELU of its output."""

    def __init__(self, conv: nn.Module, two_dimensional: bool):
        super().__init__()
        self.conv, self.two_dimensional = conv, two_dimensional

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if self.two_dimensional:
            out = F.conv2d(window, conv.weight, conv.bias, stride=conv.stride, padding=(conv.padding[0], 0))
        else:
            out = F.conv1d(window, conv.weight, conv.bias, stride=conv.stride)
        return F.gelu(out)


class _SubsamplingProjectionChunkGraph(nn.Module):
    """The front end after its convolutions, on streamed frames: (batch, channels, [freq,] frames[, start]) ->
    (batch, frames, hidden), with the absolute positions `start ..` added for a model that has them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.subsampling = model.model.subsampling

    def forward(self, hidden: torch.Tensor, *start: torch.Tensor) -> torch.Tensor:
        subsampling = self.subsampling
        if subsampling.two_dimensional:
            batch, channels, freq, frames = hidden.shape
            hidden = hidden.reshape(batch, channels * freq, frames)
        hidden = subsampling.projection(hidden.transpose(1, 2))
        if subsampling.position_embeddings is not None:
            # Gathered, not sliced: a slice from a tensor start would be traced as a constant.
            positions = start[0] + torch.arange(hidden.shape[1], dtype=torch.long)
            hidden = hidden + subsampling.position_embeddings(positions)[None]
        return hidden


def write_streaming_graphs(model: nn.Module, folder: Path, opset: int) -> dict[str, Any]:
    """Write the streaming graphs of `model` into `folder`; returns what `OnnxStreamingRecognizer` reads of them
    (``runtime.json``'s ``"streaming"``)."""
    config, subsampling = model.config, model.model.subsampling
    rotary, conformer = config.position_embedding_type == "rotary", config.encoder_type == "conformer"
    heads = config.num_attention_heads
    head_dim, width = config.hidden_size // heads, config.hidden_size
    frame_shapes = _subsampling_frame_shapes(config, subsampling)
    conv_files = [f"front_end_chunk_conv_{i}.onnx" for i in range(1, len(subsampling.convs) + 1)]
    for name, conv, shape in zip(conv_files, subsampling.convs, frame_shapes):
        window = torch.randn((1,) + tuple(shape) + (9,))
        axes = {"window": {len(shape) + 1: "frames"}, "output": {len(shape) + 1: "frames_out"}}
        _trace_to_onnx(_SubsamplingConvChunkGraph(conv, subsampling.two_dimensional).eval(), (window,), folder / name,
                       ["window"], ["output"], axes, opset)
    projection_file = "front_end_chunk_projection.onnx"
    example = (torch.randn((1,) + tuple(frame_shapes[-1]) + (3,)),)
    absolute = subsampling.position_embeddings is not None
    example += (torch.tensor(5),) if absolute else ()
    _trace_to_onnx(_SubsamplingProjectionChunkGraph(model).eval(), example, folder / projection_file,
                   ["hidden"] + (["start"] if absolute else []), ["hidden_out"],
                   {"hidden": {len(frame_shapes[-1]) + 1: "frames"}, "hidden_out": {1: "frames"}}, opset)
    cache = torch.randn(1, heads, 6, head_dim)
    inputs = ["hidden"] + (["start"] if rotary else []) + ["key_cache", "value_cache"] + (
        ["conv_cache"] if conformer else [])
    outputs = ["hidden_out", "key_out", "value_out"] + (["conv_out"] if conformer else [])
    example = (torch.randn(1, 5, width),) + ((torch.tensor(7),) if rotary else ()) + (cache, cache.clone())
    conv_cache_frames = config.conv_kernel_size - 1 if conformer else 0
    example += (torch.randn(1, width, conv_cache_frames),) if conformer else ()
    axes = {"hidden": {1: "frames"}, "hidden_out": {1: "frames"}, "key_cache": {2: "cached"},
            "value_cache": {2: "cached"}, "key_out": {2: "cached_out"}, "value_out": {2: "cached_out"}}
    layer_files = [f"layer_{index:02d}_chunk.onnx" for index in range(1, config.num_hidden_layers + 1)]
    for index, name in enumerate(layer_files, start=1):
        _trace_to_onnx(_LayerChunkGraph(model, index).eval(), example, folder / name, inputs, outputs, axes, opset)
    return {
        "version": 1, "layers": layer_files, "front_end_convs": conv_files, "front_end_projection": projection_file,
        "graphs": conv_files + [projection_file] + layer_files,
        "strides": list(subsampling.strides), "frame_shapes": [list(shape) for shape in frame_shapes],
        "hidden_size": width, "num_attention_heads": heads, "head_dim": head_dim,
        "conv_cache_frames": conv_cache_frames, "rotary": rotary,
        "max_positions": config.max_position_embeddings if absolute else None,
        "chunk_size": config.chunk_size, "left_chunks": config.left_chunks,
    }


def _subsampling_frame_shapes(config, subsampling: nn.Module) -> list[tuple[int, ...]]:
    """The shape of one input frame of each front-end convolution, then of the projection's input, batch and time
    left out: ``(channels,)``, or ``(channels, freq)`` for conv2d."""
    shapes, freq = [], config.num_mel_bins
    for conv in subsampling.convs:
        shapes.append((conv.in_channels, freq) if subsampling.two_dimensional else (conv.in_channels,))
        if subsampling.two_dimensional:
            freq = (freq + 1) // 2
    last = subsampling.convs[-1].out_channels
    shapes.append((last, freq) if subsampling.two_dimensional else (last,))
    return shapes


def share_weights(folder: Path, graph_files: list[str], weights_file: str = SHARED_WEIGHTS) -> None:
    """Move the weights of `graph_files` into one external-data file, each distinct tensor stored once: a layer's
    chunk graph and its full-utterance graph hold the same weights (traced from the same parameters, by content
    whatever the exporter named them), so the streaming graphs add only their own small constants."""
    import hashlib

    import onnx
    from onnx.external_data_helper import set_external_data

    stored: dict[bytes, tuple[int, int]] = {}
    with open(folder / weights_file, "wb") as out:
        for name in graph_files:
            graph = onnx.load(str(folder / name))
            for tensor in _graph_tensors(graph.graph):
                if not tensor.HasField("raw_data") or len(tensor.raw_data) < SHARED_WEIGHTS_MIN_BYTES:
                    continue
                key = hashlib.sha256(tensor.raw_data).digest()
                if key not in stored:
                    out.write(b"\0" * (-out.tell() % 64))  # aligned, so a runtime may map the tensors in place
                    stored[key] = (out.tell(), len(tensor.raw_data))
                    out.write(tensor.raw_data)
                set_external_data(tensor, weights_file, *stored[key])
                tensor.data_location = onnx.TensorProto.EXTERNAL
                tensor.ClearField("raw_data")
            onnx.save(graph, str(folder / name))


def _graph_tensors(graph):
    """The initializers and constant-node tensors of an ONNX graph."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t


def compare_streaming_with_pytorch(folder: str | os.PathLike, model: nn.Module, features: torch.Tensor,
                                   sampling_rate: int, chunk_size: int = 4, left_chunks: int = 2) -> float:
    """Max |logits_onnx - logits_torch| of one utterance's `features` ``(1, frames, bins)`` streamed through the
    folder's streaming graphs (`OnnxStreamingRecognizer`, in chunks of `chunk_size` output frames with
    `left_chunks` of left context) against PyTorch's chunk-masked forward on the whole utterance, at every depth of
    the model's pruning schedule (`features` at the extractor's `sampling_rate`)."""
    from .onnx_streaming import OnnxStreamingRecognizer

    frame_ms = 1000 * model.config.inputs_to_logits_ratio / sampling_rate
    recognizer = OnnxStreamingRecognizer(folder, chunk_ms=chunk_size * frame_ms, left_chunks=left_chunks)
    worst = 0.0
    for layers in model.pruning_schedule().values():
        with torch.no_grad():
            expected = model(features, layers=layers, chunk_size=chunk_size, left_chunks=left_chunks).logits[0]
        recognizer.reset()
        recognizer._feed(features[0].numpy(), final=True, depth={"layers": layers})
        streamed = recognizer.logits[0]
        if streamed.shape != tuple(expected.shape):
            raise AssertionError(f"streamed logits {streamed.shape} != PyTorch {tuple(expected.shape)} ({layers})")
        worst = max(worst, float(np.abs(streamed - expected.numpy()).max()))
    return worst


def write_onnx(model: nn.Module, path: Path, opset: int) -> None:
    """Trace `model` (a `PrunableCTCForCTC` in eval mode) on a padded example batch and write the graph to `path`."""
    _trace_to_onnx(_ExportedForward(model).eval(), _example_batch(model.config.num_mel_bins, lengths=(300, 220)),
                   path, INPUT_NAMES, OUTPUT_NAMES,
                   {"input_features": {0: "batch", 1: "frames"}, "attention_mask": {0: "batch", 1: "frames"},
                    "logits": {0: "batch", 1: "frames_out"}, "output_lengths": {0: "batch"}}, opset)


def _trace_to_onnx(module: nn.Module, example: tuple, path: Path, input_names: list, output_names: list,
                   dynamic_axes: dict, opset: int) -> None:
    # The TorchScript tracer, not torch.export: the model checks its inputs with data-dependent Python branches
    # (NaN/Inf, lengths), which torch.export refuses and tracing evaluates once on the example.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings for exactly those checks
        torch.onnx.export(module, example, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)


def compare_with_pytorch(onnx_path: str | os.PathLike, model: nn.Module,
                         batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Max |logits_onnx - logits_torch| over valid output frames of `batch` = (features, attention_mask)."""
    import onnxruntime

    features, mask = batch
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_lengths = session.run(OUTPUT_NAMES, {"input_features": features.numpy(),
                                                           "attention_mask": mask.numpy()})
    with torch.no_grad():
        output = model(features, attention_mask=mask)
    expected = output.logits
    onnx_logits = torch.from_numpy(onnx_logits)
    if onnx_logits.shape != expected.shape:
        raise AssertionError(f"ONNX logits {tuple(onnx_logits.shape)} != PyTorch {tuple(expected.shape)}")
    if onnx_lengths.tolist() != output.output_lengths.tolist():
        raise AssertionError(f"ONNX output_lengths {onnx_lengths.tolist()} != PyTorch "
                             f"{output.output_lengths.tolist()}")
    # Padded frames are the same certain blanks in both; the valid ones carry the difference.
    valid = torch.arange(expected.shape[1])[None, :] < output.output_lengths[:, None]
    return float((onnx_logits - expected).abs()[valid].max())


def _example_batch(num_mel_bins: int, lengths=(300, 220), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features with right padding (zeros, as the extractor pads) and the matching int32 mask (the
    extractor's dtype)."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths), num_mel_bins, generator=generator)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.int32)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1
        features[i, length:] = 0.0
    return features, mask


def _require_onnx() -> None:
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"ONNX export needs {', '.join(missing)}: pip install onnx onnxruntime onnxscript")
