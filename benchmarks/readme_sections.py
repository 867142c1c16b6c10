"""Sections of `benchmarks/README.md` that their own scripts measure and render (`COMPANIONS`).

`run.py` rewrites the README from `results.json`; it then puts every such section back from that script's JSON,
so no rerun of one benchmark drops another's table.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
# script -> the JSON it writes beside it; each script has `update_readme(results, readme)`.
COMPANIONS = {"data_loading.py": "data_loading.json", "int8.py": "int8.json",
              "device_runtime.py": "device_runtime.json"}


def replace_section(readme: Path, title: str, lines: list[str]) -> None:
    """`readme` with the section headed `title` replaced by `lines` (appended when it has none), every other
    section as it was."""
    text = readme.read_text() if readme.is_file() else "# Benchmarks\n"
    head, found, rest = text.partition(title)
    tail = rest[rest.find("\n## ") + 1:] if found and "\n## " in rest else ""
    readme.write_text(head.rstrip("\n") + "\n\n" + "\n".join(lines).rstrip("\n") + "\n"
                      + ("\n" + tail if tail else ""))


def restore_companion_sections(readme: Path) -> None:
    """Re-render into `readme` the section of every companion script whose JSON exists."""
    for script, numbers in COMPANIONS.items():
        if not (readme.parent / numbers).is_file():
            continue
        spec = importlib.util.spec_from_file_location(f"benchmarks_{Path(script).stem}", HERE / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.update_readme(json.loads((readme.parent / numbers).read_text()), readme)
