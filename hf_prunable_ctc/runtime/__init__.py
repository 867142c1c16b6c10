"""Run-time helpers for devices: depth by latency budget (`budget`), ONNX export (`export`) and fast greedy CTC
text (`ctc_text`); the ASR pipeline with per-call depth is in `asr_pipeline`."""

from .budget import depth_for_budget, profile_latency
from .ctc_text import CTCTextDecoder

# export needs onnx/onnxruntime/onnxscript, imported only when export_onnx is called.
from .export import export_onnx

__all__ = ["profile_latency", "depth_for_budget", "export_onnx", "CTCTextDecoder"]
