"""ONNX export of one depth, checked against PyTorch, with optional int8 dynamic quantisation.

    result = export_onnx("model_dir", "out_dir", depth=4, quantize="int8")
    print(result["max_abs_diff"])

Writes ``out_dir/model.onnx`` with inputs ``input_features`` float32 ``(batch, frames, num_mel_bins)`` and
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

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..hub.output_folder import write_output_folder

QUANTIZE_CHOICES = (None, "int8")
INPUT_NAMES = ["input_features", "attention_mask"]
OUTPUT_NAMES = ["logits", "output_lengths"]


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
) -> dict[str, Any]:
    """Export the model in `model_dir`, pruned to `depth` layers by its pruning schedule, to ONNX.

    Args:
        model_dir: a saved `PrunableCTCForCTC` folder (weights, config, tokenizer, feature extractor).
        out_dir: a new or empty folder, or one this package wrote before (its files are replaced); anything else
            is refused with `OutputFolderError` and nothing is touched.
        depth: layers to keep (default: all).
        quantize: ``None`` (float32) or ``"int8"`` (ONNX Runtime dynamic quantisation of MatMul weights; the
            float model is kept as ``model_fp32.onnx`` next to it).
        opset: ONNX opset.
        check: run ONNX Runtime and PyTorch on a padded batch of two utterances and report the difference.

    Returns:
        ``{"path": str, "depth": int, "quantize": str | None, "size_bytes": int, "max_abs_diff": float | None}``;
        `max_abs_diff` is over the valid (unpadded) output frames of the logits.

    Raises:
        ValueError: unknown `quantize`, or `depth` outside the model's depths.
        OutputFolderError (a ValueError): `out_dir` holds files this package did not write, or is `model_dir`.
        ImportError: onnx/onnxruntime/onnxscript missing (the message names the pip command).
    """
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}, got {quantize!r}")
    _require_onnx()
    from transformers import AutoFeatureExtractor, AutoTokenizer

    from ..modeling_prunable_ctc import PrunableCTCForCTC

    model = PrunableCTCForCTC.from_pretrained(model_dir).eval()
    if depth is not None and depth != model.config.num_hidden_layers:
        model.prune_to(depth)  # raises ValueError naming the allowed depths
    out_dir = Path(out_dir)
    max_abs_diff = None

    def fill(staging: str) -> None:
        nonlocal max_abs_diff
        staging = Path(staging)
        float_path = staging / ("model_fp32.onnx" if quantize else "model.onnx")
        write_onnx(model, float_path, opset)
        if quantize == "int8":
            quantize_int8(float_path, staging / "model.onnx")
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(staging)
        AutoFeatureExtractor.from_pretrained(model_dir).save_pretrained(staging)
        if check:
            max_abs_diff = compare_with_pytorch(staging / "model.onnx", model,
                                                _example_batch(model.config.num_mel_bins, (257, 123), 1))

    write_output_folder(str(out_dir), fill, sources=[str(model_dir)])
    final_path = out_dir / "model.onnx"
    return {"path": str(final_path), "depth": model.config.num_hidden_layers, "quantize": quantize,
            "size_bytes": final_path.stat().st_size, "max_abs_diff": max_abs_diff}


def write_onnx(model: nn.Module, path: Path, opset: int) -> None:
    """Trace `model` (a `PrunableCTCForCTC` in eval mode) on a padded example batch and write the graph to `path`."""
    example = _example_batch(model.config.num_mel_bins, lengths=(300, 220))
    # The TorchScript tracer, not torch.export: the model checks its inputs with data-dependent Python branches
    # (NaN/Inf, lengths), which torch.export refuses and tracing evaluates once on the example.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings for exactly those checks
        torch.onnx.export(
            _ExportedForward(model).eval(),
            example,
            str(path),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes={"input_features": {0: "batch", 1: "frames"}, "attention_mask": {0: "batch", 1: "frames"},
                          "logits": {0: "batch", 1: "frames_out"}, "output_lengths": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )


def quantize_int8(float_path: Path, int8_path: Path) -> None:
    """ONNX Runtime's dynamic int8 quantisation of the MatMul weights, without its advice on the terminal."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

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
            quantize_dynamic(str(float_path), str(int8_path), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"])
    finally:
        root.removeHandler(placeholder)
        root.setLevel(level)


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
