"""Run-time helpers for devices: depth by latency budget (`budget`) and ONNX export (`export`)."""

from .budget import depth_for_budget, profile_latency

# export needs onnx/onnxruntime/onnxscript, imported only when export_onnx is called.
from .export import export_onnx

__all__ = ["profile_latency", "depth_for_budget", "export_onnx"]
