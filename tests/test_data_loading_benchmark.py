"""The loader table of `benchmarks/README.md` is rendered from `data_loading.json`, replaces only its own section,
says when the GPU check has not run, and survives `run.py` rewriting the file."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RESULTS = {"environment": {"command": "python benchmarks/data_loading.py", "cpu": "x86_64", "cpu_count": 2,
                           "load_average_at_start": 1.0, "data": "data/demo", "audio": "FLAC", "utterances": 64,
                           "batch_size": 32},
           "rows": [{"mode": "cached", "workers": 0, "audio_s_per_s": 1234.4},
                    {"mode": "on_the_fly, waveform batch", "workers": 2, "audio_s_per_s": 987.6}],
           "device_features": {"batches": 2, "ms_per_batch": 12.34, "audio_s_per_batch": 44.0, "audio_s_per_s": 3000}}


def test_the_table_replaces_only_its_own_section_and_names_a_missing_gpu_check(tmp_path):
    data_loading = load("data_loading")
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\n## Export\n\ntable\n")
    data_loading.update_readme(RESULTS, readme)
    data_loading.update_readme({**RESULTS, "rows": RESULTS["rows"][:1]}, readme)  # measured again: replaced
    text = readme.read_text()
    assert text.count(data_loading.SECTION_TITLE) == 1 and text.startswith("# Benchmarks\n\n## Export\n\ntable\n")
    assert "| cached | 1234 | - |" not in text and "| cached | 1234 |" in text
    assert "12.3 ms per batch of 44 s" in text
    assert "awaits a GPU machine" in data_loading.markdown_section(RESULTS, tmp_path / "none.json")[-2]


def test_run_py_keeps_the_loader_and_int8_tables_when_it_rewrites_the_readme(tmp_path):
    run = load("run")
    (tmp_path / "data_loading.json").write_text(json.dumps(RESULTS))
    int8 = json.loads((ROOT / "benchmarks" / "int8.json").read_text())
    (tmp_path / "int8.json").write_text(json.dumps(int8))
    environment = dict(command="python benchmarks/run.py", device="cpu", cpu="x86_64", threads=1, torch="2",
                       transformers="5", repeats=1, warmup=0, load_average_at_start=1.0, cpu_count=2)
    run.write_markdown({"environment": environment}, tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("# Benchmarks") and "| on_the_fly, waveform batch | - | 988 |" in text
    static = int8["variants"]["int8 static"]
    assert load("int8").SECTION_TITLE in text and f"| int8 static | {static['size_bytes'] / 1e6:.1f} |" in text
