"""ONNX export of one depth, checked against PyTorch, with optional int8 dynamic quantisation.

    result = export_onnx("model_dir", "out_dir", depth=4, quantize="int8")
    print(result["max_abs_diff"])

Writes ``out_dir/model.onnx`` (inputs ``input_features`` float32 ``(batch, frames, num_mel_bins)`` and
``attention_mask`` int64 ``(batch, frames)``; output ``logits`` float32 ``(batch, frames_out, vocab_size)``; batch
and time dynamic), plus the tokenizer and feature-extractor files, so the folder is all a device needs:
features from the extractor (or any Kaldi fbank + CMVN), ONNX Runtime, greedy CTC decoding with the tokenizer.

Needs ``onnx``, ``onnxruntime`` and ``onnxscript`` (torch's ONNX exporter); none of them depends on torch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

QUANTIZE_CHOICES = (None, "int8")


class _LogitsOnly(nn.Module):
    """The CTC model as ONNX sees it: (input_features, attention_mask) -> logits, nothing optional."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_features, attention_mask=attention_mask, return_dict=True).logits


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
        out_dir: created if missing; existing ``model.onnx``/tokenizer/extractor files in it are overwritten,
            nothing else is touched.
        depth: layers to keep (default: all).
        quantize: ``None`` (float32) or ``"int8"`` (ONNX Runtime dynamic quantisation of MatMul weights; the
            float model is written as ``model_fp32.onnx`` next to it).
        opset: ONNX opset.
        check: run ONNX Runtime and PyTorch on a padded batch of two utterances and report the difference.

    Returns:
        ``{"path": str, "depth": int, "quantize": str | None, "size_bytes": int, "max_abs_diff": float | None}``;
        `max_abs_diff` is over the valid (unpadded) output frames of the logits.

    Raises:
        ValueError: unknown `quantize`, or `depth` outside the model's depths.
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
    out_dir.mkdir(parents=True, exist_ok=True)
    float_path = out_dir / ("model_fp32.onnx" if quantize else "model.onnx")
    final_path = out_dir / "model.onnx"

    wrapper = _LogitsOnly(model).eval()
    example = _example_batch(model.config.num_mel_bins, lengths=(300, 220))
    # The TorchScript tracer, not torch.export: the model checks its inputs with data-dependent Python branches
    # (NaN/Inf, lengths), which torch.export refuses and tracing evaluates once on the example.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings for exactly those checks
        torch.onnx.export(
            wrapper,
            example,
            str(float_path),
            input_names=["input_features", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_features": {0: "batch", 1: "frames"}, "attention_mask": {0: "batch", 1: "frames"},
                          "logits": {0: "batch", 1: "frames_out"}},
            opset_version=opset,
            dynamo=False,
        )
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(float_path), str(final_path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])

    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out_dir)
    AutoFeatureExtractor.from_pretrained(model_dir).save_pretrained(out_dir)

    max_abs_diff = None
    if check:
        max_abs_diff = compare_with_pytorch(final_path, model, _example_batch(model.config.num_mel_bins, (257, 123), 1))
    return {"path": str(final_path), "depth": model.config.num_hidden_layers, "quantize": quantize,
            "size_bytes": final_path.stat().st_size, "max_abs_diff": max_abs_diff}


def compare_with_pytorch(onnx_path: str | os.PathLike, model: nn.Module,
                         batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Max |logits_onnx - logits_torch| over valid output frames of `batch` = (features, attention_mask)."""
    import onnxruntime

    features, mask = batch
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(["logits"], {"input_features": features.numpy(), "attention_mask": mask.numpy()})
    with torch.no_grad():
        output = model(features, attention_mask=mask)
    expected = output.logits
    onnx_logits = torch.from_numpy(onnx_logits)
    if onnx_logits.shape != expected.shape:
        raise AssertionError(f"ONNX logits {tuple(onnx_logits.shape)} != PyTorch {tuple(expected.shape)}")
    # Padded output frames are garbage in both (masked out by the decoder); compare the valid ones.
    valid = torch.arange(expected.shape[1])[None, :] < output.output_lengths[:, None]
    return float((onnx_logits - expected).abs()[valid].max())


def _example_batch(num_mel_bins: int, lengths=(300, 220), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features with right padding (zeros, as the extractor pads) and the matching int64 mask."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths), num_mel_bins, generator=generator)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
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
