"""Write the README and the documentation pages from their templates and the committed JSON that holds their
numbers, so that no number is typed by hand and none can go stale.

    python docs/render.py            # write README.md and docs/<page>.md from docs/templates/
    python docs/render.py --check    # list the documents that differ from what their templates and JSON give

The published models' cards (``model_cards/*/README.md``) are rendered too, by the package's own card builder
(``hf_prunable_ctc.hub.model_card``, the path ``hf-prunable-ctc publish`` takes) from each model's committed
``depth_report*.json`` and its card text in ``training/cards/``.

A template ``docs/templates/NAME.j2`` becomes ``docs/NAME`` (``README.md.j2`` becomes the repository's README.md);
templates whose name starts with ``_`` hold shared macros. Templates read JSON with ``data("path/from/root.json")``
and format numbers with the filters below. ``tests/test_docs.py`` renders every template and fails when a
committed document differs.
"""

import argparse
import json
import sys
from functools import lru_cache
from pathlib import Path

import jinja2

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "docs" / "templates"
# Each published model folder, the card text it was published with and the repo id its card names.
PUBLISHED_CARDS = {
    "model_cards/prunable-ctc-small-synth": ("training/cards/reference.json", "you/prunable-ctc-small-synth"),
    "model_cards/whisper-tiny-prunable-ctc": ("training/cards/whisper_tiny_ctc.json", "you/whisper-tiny-prunable-ctc"),
}


@lru_cache(maxsize=None)
def data(path: str):
    """The committed JSON file at ``path`` (relative to the repository root)."""
    return json.loads((ROOT / path).read_text(encoding="utf-8"))


def minutes(seconds) -> str:
    """A duration in minutes and seconds: 514 -> "8 min 34 s"."""
    whole = int(round(seconds))
    return f"{whole // 60} min {whole % 60} s"


def fixed(value, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals: 28.21 -> "28.2"."""
    return f"{value:.{digits}f}"


def signed(value, digits: int = 1) -> str:
    """With its sign, and "−0.0" shown as "0.0": 1.399 -> "+1.4"."""
    text = f"{value:+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def thousands(value) -> str:
    """An integer with thousands separators: 4167470 -> "4,167,470"."""
    return f"{int(value):,}"


def millions(value, digits: int = 1) -> str:
    """A count in millions: 4167470 -> "4.2 M"."""
    return f"{value / 1e6:.{digits}f} M"


def times(value, digits: int = 2) -> str:
    """A ratio: 5.3425 -> "5.34x"."""
    return f"{value:.{digits}f}x"


def ms(seconds, digits: int = 1) -> str:
    """Seconds as milliseconds: 0.0153 -> "15.3 ms"."""
    return f"{seconds * 1e3:.{digits}f} ms"


def mb(num_bytes, digits: int = 1) -> str:
    """Bytes as megabytes (10^6): 16935634 -> "16.9 MB"."""
    return f"{num_bytes / 1e6:.{digits}f} MB"


def percent_less(new, old, digits: int = 0) -> str:
    """How much smaller ``new`` is than ``old``, in percent: (0.0052, 0.0088) -> "41%"."""
    return f"{100 * (1 - new / old):.{digits}f}%"


def records(report: dict, strategy: str = "top") -> list:
    """The per-depth records of a ``depth_report*.json`` for one strategy, shallowest first."""
    return sorted((r for r in report["records"] if r["strategy"] == strategy), key=lambda r: r["depth"])


def record(report: dict, depth: int, strategy: str = "top") -> dict:
    """The record of a ``depth_report*.json`` at ``depth`` for ``strategy``."""
    (found,) = [r for r in records(report, strategy) if r["depth"] == depth]
    return found


def beats_whisper_on_test(depth, comparison: dict) -> bool:
    """Whether the CTC model at ``depth`` has a lower WER than Whisper on the synthetic ``test`` split of a
    ``whisper_comparison.json``."""
    split = "synthetic test"
    return comparison["wer"][split]["per_depth"][str(depth)] < comparison["whisper_wer"][split]


def environment():
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,  # a misspelt JSON key fails the render instead of printing nothing
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.globals.update(data=data, records=records, record=record)
    env.tests.update(beats_whisper_on_test=beats_whisper_on_test)
    env.filters.update(minutes=minutes, fixed=fixed, signed=signed, thousands=thousands, millions=millions, times=times, ms=ms,
                       mb=mb, percent_less=percent_less)
    return env


def target_of(template: Path) -> Path:
    name = template.name[: -len(".j2")]
    return ROOT / name if name == "README.md" else ROOT / "docs" / name


def render_all() -> dict:
    """Every document rendered: {path it is written to: text}."""
    env = environment()
    out = {}
    for template in sorted(TEMPLATES.glob("*.j2")):
        if template.name.startswith("_"):
            continue
        text = env.get_template(template.name).render()
        footer = (f"\n<!-- Generated by docs/render.py from docs/templates/{template.name} and the JSON it reads: "
                  "edit those and run `python docs/render.py`. -->\n")
        out[target_of(template)] = text.rstrip("\n") + "\n" + footer
    out.update(published_cards())
    return out


def published_cards() -> dict:
    """{README.md path: text} of each published model's card, as publishing that folder writes it."""
    from hf_prunable_ctc.hub.model_card import build_model_card

    cards = {}
    for folder, (card_info, repo_id) in PUBLISHED_CARDS.items():
        fields = json.loads((ROOT / card_info).read_text(encoding="utf-8"))
        card = build_model_card(str(ROOT / folder), results_dir=str(ROOT / folder), repo_id=repo_id, **fields)
        cards[ROOT / folder / "README.md"] = str(card)
    return cards


def stale_documents() -> list:
    """The documents whose committed text differs from their rendering, as paths relative to the root."""
    return [str(path.relative_to(ROOT)) for path, text in render_all().items()
            if not path.is_file() or path.read_text(encoding="utf-8") != text]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a document is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_documents()
        for path in stale:
            print(f"{path}: differs from its template and JSON (run python docs/render.py)")
        return 1 if stale else 0
    for path, text in render_all().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
