"""The remote-code files that `save_pretrained` writes are safe to import, and the published model carries the
package's own.

Whoever loads a checkpoint with `trust_remote_code=True` runs these files: they must import only torch,
transformers, the standard library and each other, and do nothing at import beyond defining classes and
registering them.
"""

import ast
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import tiny_model

ALLOWED_PACKAGES = {"torch", "transformers"}
SAFE_STANDARD_LIBRARY = {"functools", "math", "re", "dataclasses", "typing", "collections", "enum", "itertools"}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("remote_code_model")
    tiny_model(interctc_layers=[1], interctc_weight=0.3, self_conditioning=True).save_pretrained(folder)
    files = sorted(name for name in os.listdir(folder) if name.endswith(".py"))
    assert {"configuration_prunable_ctc.py", "modeling_prunable_ctc.py", "pruning.py"} <= set(files)
    return folder, files


def imports_of(tree):
    """(module, level) of every import statement anywhere in the file, function bodies included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level


def test_written_files_import_only_torch_transformers_and_siblings(written):
    folder, files = written
    siblings = {name[:-3] for name in files}
    for name in files:
        tree = ast.parse((folder / name).read_text())
        for module, level in imports_of(tree):
            top = module.split(".")[0]
            if level:  # relative: must be a sibling that was written too
                assert level == 1 and top in siblings, f"{name}: relative import of {module!r} not in {siblings}"
            else:
                assert top in ALLOWED_PACKAGES | SAFE_STANDARD_LIBRARY, f"{name} imports {module!r}"


def test_module_level_code_only_defines_and_registers(written):
    """No statement at import time reads files, opens sockets or runs anything but definitions and registration."""
    folder, files = written
    for name in files:
        tree = ast.parse((folder / name).read_text())
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
                continue
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # docstring
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                called = ast.unparse(node.value.func)
                assert called.endswith(".register_for_auto_class"), f"{name}: calls {called} at import"
                continue
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                calls = [ast.unparse(c.func) for c in ast.walk(node) if isinstance(c, ast.Call)]
                assert set(calls) <= {"tuple", "list", "dict"}, f"{name}: {ast.unparse(node)[:80]} calls {calls}"
                continue
            raise AssertionError(f"{name}: unexpected module-level statement {ast.unparse(node)[:80]}")


def test_importing_the_written_files_does_no_io(written, tmp_path):
    """Import them in a fresh process where opening files or sockets raises (after torch and transformers load)."""
    folder, _ = written
    script = textwrap.dedent(f"""
        import builtins, importlib, io, os, socket, sys
        import torch, transformers, transformers.modeling_utils, transformers.utils  # their own imports may read files

        def refuse(*args, **kwargs):
            raise AssertionError(f"I/O at import: {{args[:1]}}")

        builtins.open = io.open = os.open = refuse
        socket.socket = refuse
        sys.path.insert(0, {str(folder.parent)!r})
        module = importlib.import_module({folder.name!r} + ".modeling_prunable_ctc")
        assert "hf_prunable_ctc" not in sys.modules, "the written files import the installed package"
        print("OK", module.PrunableCTCForCTC.__name__)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "OK PrunableCTCForCTC"


def test_the_published_model_carries_the_packages_remote_code():
    """Users who load the published folder with `trust_remote_code=True` run its copies: they must be the package's
    files as they are now (refresh them with `publish` after changing the model code)."""
    from pathlib import Path

    import hf_prunable_ctc

    package = Path(hf_prunable_ctc.__file__).parent
    published = package.parent / "model_cards" / "prunable-ctc-small-synth"
    copies = sorted(path.name for path in published.glob("*.py"))
    assert {"configuration_prunable_ctc.py", "modeling_prunable_ctc.py", "pruning.py", "early_exit.py"} <= set(copies)
    stale = [name for name in copies if (published / name).read_bytes() != (package / name).read_bytes()]
    assert stale == []
