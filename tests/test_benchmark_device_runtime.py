"""benchmarks/device_runtime.py measures the ONNX device runtime against the PyTorch pipeline and single-depth
files, writes its JSON, and renders its own section of `benchmarks/README.md` from it."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spread(median, low=None, high=None, n=3):
    return {"median": median, "min": median if low is None else low, "max": median if high is None else high, "n": n}


def process(runtime, audio, import_s, load_s, transcribe_s, rss, chunk_length_s=20.0):
    return {"runtime": runtime, "audio": audio, "chunk_length_s": chunk_length_s, "runs": [{}],
            "import_seconds": spread(import_s), "load_seconds": spread(load_s),
            "import_load_seconds": spread(import_s + load_s, import_s + load_s - 0.1, import_s + load_s + 0.2),
            "transcribe_seconds": spread(transcribe_s), "peak_rss_mb": spread(rss, rss - 2, rss + 3),
            "torch_imported": runtime == "pytorch", "text": "A"}


def results(folder_ms_depth_2: float) -> dict:
    startup = {
        "onnx 10 s": process("onnx", "10 s", 0.2, 0.3, 0.2, 120.0),
        "pytorch 10 s": process("pytorch", "10 s", 5.0, 0.5, 0.3, 450.0),
        "onnx 10 min": process("onnx", "10 min", 0.2, 0.3, 9.0, 260.0),
        "pytorch 10 min": process("pytorch", "10 min", 5.0, 0.5, 6.0, 900.0),
        "onnx 10 min, one pass": {"runtime": "onnx", "audio": "10 min", "chunk_length_s": 0.0, "memory_cap_gb": 8.0,
                                  "runs": [{"failed": "Failed to allocate memory for requested buffer"}]}}
    ratio = {"import_load": spread(0.09, 0.08, 0.1), "peak_rss": spread(0.27), "transcribe": spread(0.7)}

    def depth(folder_ms, file_ms):
        return {"folder_ms": spread(folder_ms), "file_ms": spread(file_ms),
                "ratio": spread(folder_ms / file_ms, 0.9, 1.3), "ratio_of_fastest": 1.02, "max_abs_diff_logits": 0.0}

    def run(kind, value, wer, mean_depth, seconds, exits):
        return {"kind": kind, "value": value, "wer": wer, "mean_depth": mean_depth, "seconds": seconds,
                "speedup_vs_full": 1.6 / seconds, "exits": exits}

    return {"command": "python benchmarks/device_runtime.py", "cpu": "Test CPU", "cpu_count": 2,
            "load_average_at_start": [3.0, 2.0, 1.0], "load_average_at_end": [4.0, 3.0, 2.0], "onnxruntime": "1.0",
            "torch": "2.0", "model": "model", "data": "data/test", "repeats": 3, "latency_repeats": 10,
            "utterance_repeats": 2, "chunk_length_s": 20.0, "goals": {"import_load_seconds": 1.0,
                                                                    "peak_rss_mb_10s": 150.0, "latency_ratio": 1.1},
            "startup": {"variants": startup, "onnx_over_pytorch": {"10 s": ratio, "10 min": ratio},
                        "same_text_10s": True, "same_text_long": False},
            "latency_per_depth": {"1": depth(20.0, 20.0), "2": depth(folder_ms_depth_2, 30.0)},
            "early_exit": {"utterances": 80, "audio_seconds": 157.7, "runs": {
                "depth 8": run("depth", 8, 30.8, 8.0, 1.6, {"8": 80}),
                "threshold 0.85": run("threshold", 0.85, 34.5, 6.1, 1.3, {"4": 26, "6": 22, "8": 32})}}}


def test_section_is_rendered_from_the_results_and_replaced_in_place(tmp_path):
    benchmark = load("device_runtime")
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\n## Before\n\nkept\n\n" + benchmark.SECTION_TITLE
                      + "\n\nold table\n\n## After\n\nkept too\n")
    benchmark.update_readme(results(31.5), readme)
    text = readme.read_text()
    assert "old table" not in text and text.count(benchmark.SECTION_TITLE) == 1
    assert text.index("## Before") < text.index(benchmark.SECTION_TITLE) < text.index("## After")
    assert "kept too" in text and "Command: `OMP_NUM_THREADS=1 nice -n 5 python benchmarks/device_runtime.py`" in text
    assert "load average 3.0 at start, 4.0 at end" in text
    assert ("| ONNX folder | 10 s | 0.20 (0.20-0.20) | 0.30 (0.30-0.30) | 0.50 (0.40-0.70) | 0.20 (0.20-0.20) "
            "| 120 (118-123) | no |") in text
    assert "| PyTorch pipeline | 10 min |" in text and "| ONNX folder | 10 min | 0.20 (0.20-0.20) |" in text
    assert "Both runtimes cut long audio the same way, `chunk_length_s=20`" in text
    assert "| ONNX folder, one pass (cap 8 GiB) | 10 min | did not finish: out of memory |" in text
    assert "| 10 s | 0.09 (0.08-0.10) | 0.27 (0.27-0.27) | 0.70 (0.70-0.70) |" in text
    assert "import + load 0.50 s (goal <= 1 s: met), peak RSS 120 MB (goal <= 150 MB: met)" in text
    assert "The transcripts of the two runtimes are equal for 10 s and different for 10 min, chunked." in text
    assert "(met: worst median ratio 1.05)" in text
    assert "| 2 | 31.5 (31.5-31.5) | 30.0 (30.0-30.0) | 1.05 (0.90-1.30) | 1.02 | 0.0e+00 |" in text
    assert "| threshold 0.85 | 34.5 | 6.10 | 1.300 | 1.23x | 4:26 6:22 8:32 |" in text
    assert "| depth 8 | 30.8 | 8.00 | 1.600 | 1.00x |  |" in text

    benchmark.update_readme(results(36.0), readme)  # measured again: the verdict follows the numbers
    text = readme.read_text()
    assert text.count(benchmark.SECTION_TITLE) == 1 and "(not met: worst median ratio 1.20)" in text


def test_run_py_keeps_the_section_when_it_rewrites_the_readme(tmp_path):
    sections = load("readme_sections")
    assert sections.COMPANIONS["device_runtime.py"] == "device_runtime.json"
    (tmp_path / "device_runtime.json").write_text(json.dumps(results(31.5)))
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\n## Depth scaling\n\ntable\n")
    sections.restore_companion_sections(readme)
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\n## Depth scaling\n\ntable\n")
    assert load("device_runtime").SECTION_TITLE in text and "| threshold 0.85 | 34.5 |" in text


@pytest.mark.slow
def test_quick_run_writes_every_measurement_and_its_section(tmp_path):
    benchmark = load("device_runtime")
    output, readme = tmp_path / "device_runtime.json", tmp_path / "README.md"
    benchmark.main(["--quick", "--output", str(output), "--readme", str(readme)])
    written = json.loads(output.read_text())
    assert written["command"] == "python benchmarks/device_runtime.py --quick"
    assert written["quick"] and written["threads"] == 1 and len(written["load_average_at_end"]) == 3

    variants = written["startup"]["variants"]
    assert set(variants) == {"onnx 10 s", "pytorch 10 s", "onnx 0.5 min", "pytorch 0.5 min", "onnx 0.5 min, one pass"}
    assert variants["onnx 0.5 min"]["chunk_length_s"] == 20 and variants["onnx 0.5 min, one pass"]["chunk_length_s"] == 0
    for name, entry in variants.items():
        assert "failed" not in entry["runs"][0], name  # half a minute in one pass fits under the cap
        assert entry["torch_imported"] == (entry["runtime"] == "pytorch"), name
        assert entry["import_seconds"]["median"] > 0 and entry["peak_rss_mb"]["median"] > 0
        # ru_maxrss also counts the peak of the process the child was started from (here, pytest's), never less
        # than the child's own peak, which is what the table reports.
        assert entry["ru_maxrss_mb"]["median"] >= entry["peak_rss_mb"]["median"] - 1, name
    assert written["startup"]["same_text_10s"] and written["startup"]["same_text_long"]  # the same chunks
    assert variants["onnx 10 s"]["peak_rss_mb"]["median"] < variants["pytorch 10 s"]["peak_rss_mb"]["median"]
    assert set(written["startup"]["onnx_over_pytorch"]) == {"10 s", "0.5 min"}

    latency = written["latency_per_depth"]
    assert set(latency) == {"1", "8"}
    for entry in latency.values():
        assert entry["ratio"]["n"] == 2 and entry["folder_ms"]["min"] > 0 and entry["file_ms"]["min"] > 0
        assert entry["max_abs_diff_logits"] < 1e-4  # the same float graph cut in pieces

    early = written["early_exit"]
    assert early["utterances"] == 4
    assert set(early["runs"]) == {"depth 2", "depth 4", "depth 6", "depth 8", "threshold 0.85", "threshold 0.9"}
    assert early["runs"]["depth 4"]["mean_depth"] == 4.0 and early["runs"]["depth 8"]["speedup_vs_full"] == 1.0
    assert all(2 <= run["mean_depth"] <= 8 and 0 <= run["wer"] for run in early["runs"].values())

    text = readme.read_text()
    assert text.startswith("# Benchmarks") and text.count(benchmark.SECTION_TITLE) == 1
    assert "`OMP_NUM_THREADS=1 nice -n 5 python benchmarks/device_runtime.py --quick`" in text
    assert "| ONNX folder, one pass (cap 8 GiB) | 0.5 min |" in text and "| 8 |" in text
