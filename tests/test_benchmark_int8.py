"""benchmarks/int8.py renders its README section from the JSON it writes and replaces only that section."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmarks_int8", ROOT / "benchmarks" / "int8.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def results(wer_static: float) -> dict:
    def variant(wer, seconds):
        def depth(wer):
            return {"wer": wer, "seconds": seconds, "speed_vs_float32": 2.0 / seconds}
        return {"size_bytes": 5e6, "depths": {"4": depth(wer), "8": depth(wer - 10)}}
    return {"command": "python benchmarks/int8.py", "cpu": "Test CPU", "cpu_count": 2, "load_average_at_start": 1.0,
            "load_average_at_end": 2.0, "onnxruntime": "1.0", "utterances": 1000, "audio_seconds": 3600.0,
            "data": "test", "calibration_utterances": 100, "calibration_data": "validation",
            "goals": {"wer_cost_points": 1.0, "speed": 1.5},
            "variants": {"float32": variant(40.0, 2.0), "int8 dynamic": variant(40.5, 1.6),
                         "int8 static": variant(wer_static, 1.25)}}


def test_section_is_rendered_from_the_json_and_replaced_in_place(tmp_path):
    benchmark = load_benchmark()
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\n## Before\n\nkept\n\n" + benchmark.SECTION_TITLE
                      + "\n\nold table\n\n## After\n\nkept too\n")
    benchmark.update_readme(results(41.2), readme)
    text = readme.read_text()
    assert "old table" not in text and text.count(benchmark.SECTION_TITLE) == 1
    assert text.index("## Before") < text.index(benchmark.SECTION_TITLE) < text.index("## After")
    assert "kept too" in text and "Test CPU" in text
    assert "| int8 static | 5.0 | 41.2 | +1.2 | 1.60x | 31.2 | +1.2 | 1.60x |" in text
    benchmark.update_readme(results(40.1), readme)
    assert "| int8 static | 5.0 | 40.1 | +0.1 | 1.60x |" in readme.read_text()
    assert readme.read_text().count(benchmark.SECTION_TITLE) == 1
