"""Run-time helpers for devices: depth by latency budget (`budget`) and ONNX export (`export`)."""

from .budget import depth_for_budget, profile_latency

__all__ = ["profile_latency", "depth_for_budget"]
