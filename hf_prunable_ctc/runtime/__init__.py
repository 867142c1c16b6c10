"""Run-time helpers for devices: depth by latency budget (`budget`), ONNX export (`export`), the torch-free runtime
of an exported folder (`onnx_runtime`), fast greedy CTC text (`ctc_text`) and streaming recognition with a depth per
chunk (`streaming`); the ASR pipeline with per-call depth is in `asr_pipeline`.

The names below load on first use (PEP 562), so `hf_prunable_ctc.runtime.onnx_runtime` can be imported on a device
without torch or transformers.
"""

import importlib

_PUBLIC = {
    "profile_latency": "budget",
    "depth_for_budget": "budget",
    "export_onnx": "export",
    "CTCTextDecoder": "ctc_text",
    "OnnxPrunableCTC": "onnx_runtime",
    "StreamingRecognizer": "streaming",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
