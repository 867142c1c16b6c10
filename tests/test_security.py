"""Security: weights only in safetensors, and no code path of the package unpickles."""

import ast
import os
import pathlib

import hf_prunable_ctc
from conftest import tiny_model

PACKAGE = pathlib.Path(hf_prunable_ctc.__file__).parent
REPO = PACKAGE.parent
SCRIPTS = [REPO / "training", REPO / "benchmarks", REPO / "demo"]


def python_files():
    for root in [PACKAGE, *SCRIPTS]:
        if root.is_dir():
            yield from sorted(root.rglob("*.py"))


def unsafe_calls(path):
    """Calls that can run code while loading data: pickle/dill/joblib loads, and `torch.load` without
    `weights_only=True`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib", "shelve") for n in names):
                found.append(f"{path}:{node.lineno}: imports {names}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == "torch":
                weights_only = [k for k in node.keywords if k.arg == "weights_only"]
                if not (weights_only and isinstance(weights_only[0].value, ast.Constant)
                        and weights_only[0].value.value is True):
                    found.append(f"{path}:{node.lineno}: torch.load without weights_only=True")
    return found


def test_no_code_path_unpickles():
    files = list(python_files())
    assert len(files) > 20  # the package and its scripts were found
    problems = [p for path in files for p in unsafe_calls(path)]
    assert problems == []


def test_the_checker_catches_an_unsafe_load(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nimport pickle\nstate = torch.load('x.pt')\nok = torch.load('y.pt', weights_only=True)\n")
    problems = unsafe_calls(bad)
    assert len(problems) == 2
    assert "imports" in problems[0] and "torch.load without weights_only" in problems[1]


def test_saved_weights_are_safetensors_only(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    names = os.listdir(tmp_path / "m")
    assert "model.safetensors" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
