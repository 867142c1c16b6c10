"""int8 quantisation of exported ONNX graphs: dynamic (weights only, activations scaled per call) or static
(activations' scales calibrated beforehand on real audio of the model's corpus).

    quantize_int8(float_path, int8_path)                               # dynamic, MatMul weights
    waveforms = calibration_waveforms("corpora/synth-6h-v2/validation", 100, 16000)
    feeds = every_depth_calibration_feeds(float_folder, waveforms)      # {graph file: [input dict, ...]}
    quantize_static_int8(float_folder / "layer_01.onnx", out_path, feeds["layer_01.onnx"])

Static quantisation stores fixed scales for the activations, so ONNX Runtime runs int8 kernels (QLinearConv for
the convolutions) without measuring each activation's range at run time; the scales are only as good as the
calibration audio, which is why it must be the model's own kind of speech (its training or validation split), not
noise. `STATIC_SETTINGS` says which ops get fixed scales and which stay dynamic, and why.

`export_onnx(..., quantize="int8-static", calibration_data=DIR)` is the way in; this module holds the pieces.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..data.audio import load_audio

# Utterances `export_onnx(..., quantize="int8-static")` calibrates on by default; each runs once through every
# depth (about 15 s for 100 on a shared 2-core CPU).
CALIBRATION_UTTERANCES = 100

# How `quantize_static_int8` quantises, chosen by measuring WER and speed on the reference model's validation split
# (benchmarks/int8.py measures the result on its test split). "static": `quantize_static` arguments (enums by
# name); "dynamic_op_types": op types quantised dynamically afterwards (int8 weights, activation scales measured per
# call): MatMul, which with fixed scales gave the same WER but ran slower (the QuantizeLinear/DequantizeLinear pairs
# around it cost more than its int8 products saved, profiled at 75 frames); "depthwise_conv": whether grouped
# convolutions are quantised too (they are: left float they were no more accurate and no faster).
STATIC_SETTINGS: dict[str, Any] = {
    "static": {
        "quant_format": "QDQ",
        "op_types_to_quantize": ["Conv"],
        "per_channel": True,
        "reduce_range": False,
        "activation_type": "QUInt8",
        "weight_type": "QInt8",
        "calibrate_method": "MinMax",
        "extra_options": {"MatMulConstBOnly": True},
        # The second subsampling convolution stays float: its input (the first one's GELU output) fits a per-tensor
        # uint8 scale badly (the front end's error grew from 5% to 13%); quantised, it cost 2.5 WER points.
        "nodes_to_exclude": ["/subsampling/convs.1/Conv"],
    },
    "dynamic_op_types": ["MatMul"],
    "depthwise_conv": True,
}


@contextlib.contextmanager
def _quiet_quantiser() -> Iterator[None]:
    # The quantiser advises pre-processing on every call with `logging.warning`, which also installs a stderr
    # handler on the root logger when it has none (`basicConfig`): a placeholder handler and a raised level for the
    # call keep the advice off the terminal and the user's logging set-up as it was.
    root = logging.getLogger()
    level, placeholder = root.level, logging.NullHandler()
    root.addHandler(placeholder)
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeHandler(placeholder)
        root.setLevel(level)


def quantize_int8(float_path: Path, int8_path: Path) -> None:
    """ONNX Runtime's dynamic int8 quantisation of the MatMul weights, without its advice on the terminal."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_quantiser():
        quantize_dynamic(str(float_path), str(int8_path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])


def quantize_static_int8(float_path: Path, int8_path: Path, feeds: Sequence[dict[str, np.ndarray]],
                         settings: dict[str, Any] | None = None) -> None:
    """ONNX Runtime's static int8 quantisation of the graph at `float_path`, activation ranges calibrated on
    `feeds` (input name -> array dicts, as `session.run` takes them; shapes may differ between feeds with the
    MinMax calibration, not with ONNX Runtime's histogram ones, Percentile and Entropy).

    Args:
        settings: shaped as `STATIC_SETTINGS` (the default).

    Raises:
        ValueError: no feeds.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    import onnx

    if not feeds:
        raise ValueError(f"no calibration inputs for {Path(float_path).name}")
    settings = STATIC_SETTINGS if settings is None else settings
    arguments = dict(settings["static"])
    enums = {"quant_format": QuantFormat, "activation_type": QuantType, "weight_type": QuantType,
             "calibrate_method": CalibrationMethod}
    for key, enum in enums.items():
        if isinstance(arguments.get(key), str):
            arguments[key] = enum[arguments[key]]
    if not settings.get("depthwise_conv", True):
        graph = onnx.load(str(float_path), load_external_data=False).graph
        arguments["nodes_to_exclude"] = list(arguments.get("nodes_to_exclude") or []) + [
            node.name for node in graph.node if node.op_type == "Conv"
            and any(a.name == "group" and a.i > 1 for a in node.attribute)]

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self.rewind()

        def get_next(self):
            return next(self.items, None)

        def rewind(self):
            self.items = iter(feeds)

    dynamic = settings.get("dynamic_op_types") or []
    static_path = Path(int8_path).with_name(Path(int8_path).stem + "_static.onnx") if dynamic else Path(int8_path)
    with _quiet_quantiser():
        quantize_static(str(float_path), str(static_path), Feeds(), **arguments)
        if dynamic:
            quantize_dynamic(str(static_path), str(int8_path), weight_type=QuantType.QInt8,
                             op_types_to_quantize=list(dynamic))
            static_path.unlink()


def calibration_waveforms(folder: str | os.PathLike, count: int, sampling_rate: int) -> list[np.ndarray]:
    """`count` utterances spread evenly over an audio split, decoded to mono at `sampling_rate`.

    Args:
        folder: an audiofolder split (``metadata.csv`` with a ``file_name`` column, paths relative to it, as
            ``corpora/synth-6h-v2/validation``), or a folder of audio files (taken in name order).
        count: utterances to take (all of them if the split holds fewer).

    Raises:
        ValueError: `count` below 1, `folder` missing or holding no audio.
    """
    import soundfile

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"calibration_utterances must be a whole number >= 1, got {count!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"calibration data {str(folder)!r} is not a folder: give an audio split of the model's "
                         "corpus (training or validation), e.g. corpora/synth-6h-v2/validation")
    metadata = folder / "metadata.csv"
    if metadata.is_file():
        with open(metadata, newline="") as f:
            files = [folder / row["file_name"] for row in csv.DictReader(f)]
    else:
        suffixes = {"." + name.lower() for name in soundfile.available_formats()}
        files = sorted(path for path in folder.iterdir() if path.suffix.lower() in suffixes)
    if not files:
        raise ValueError(f"calibration data {str(folder)!r} holds no audio (neither metadata.csv nor audio files)")
    # Evenly spaced rather than the first few: splits are often ordered by speaker or voice.
    picked = [files[i * len(files) // min(count, len(files))] for i in range(min(count, len(files)))]
    return [load_audio(path, sampling_rate=sampling_rate) for path in picked]


class _RecordingSession:
    """An ONNX Runtime session that keeps each distinct feed it runs: the calibration inputs of its graph."""

    def __init__(self, session):
        self.session, self.feeds, self._outputs = session, [], {}

    def run(self, output_names, feed):
        # A layer shared by several depths sees the same input once per depth: kept once, and run once.
        key = (output_names and tuple(output_names),) + tuple(
            (name, value.shape, np.ascontiguousarray(value).tobytes()) for name, value in feed.items())
        if key not in self._outputs:
            self.feeds.append({name: np.array(value) for name, value in feed.items()})
            self._outputs[key] = self.session.run(output_names, feed)
        return self._outputs[key]


def every_depth_calibration_feeds(folder: str | os.PathLike, waveforms: Sequence[np.ndarray]
                                  ) -> dict[str, list[dict[str, np.ndarray]]]:
    """The inputs each graph of the float every-depth folder `folder` receives on `waveforms`, one at a time
    (batch 1, no padding), along every depth of its pruning schedule and early exit: ``{graph file: [feed, ...]}``.

    Each graph is thus calibrated on what the float graphs before it produce, and the head (and the
    self-conditioning graph) on the hidden states of every depth it can be run at.
    """
    from .onnx_runtime import OnnxPrunableCTC

    runtime = OnnxPrunableCTC(folder)
    config = runtime.config
    runtime.front_end_graph = _RecordingSession(runtime.front_end_graph)
    recorders = {config["front_end"]: runtime.front_end_graph}
    runtime.layer_graphs = [_RecordingSession(session) for session in runtime.layer_graphs]
    recorders.update(zip(config["layers"], runtime.layer_graphs))
    runtime.head_graph = recorders[config["head"]] = _RecordingSession(runtime.head_graph)
    if runtime.conditioning_graph is not None:
        runtime.conditioning_graph = recorders[config["conditioning"]] = _RecordingSession(runtime.conditioning_graph)
    for waveform in waveforms:
        features, mask = runtime.front_end([waveform])
        for layers in runtime.pruning_schedule.values():
            runtime.logits(features, mask, layers=layers)
        if runtime.interctc_layers:
            runtime.logits(features, mask, early_exit_threshold=2.0)  # above 1: the head at every exit, none taken
    return {name: recorder.feeds for name, recorder in recorders.items()}
