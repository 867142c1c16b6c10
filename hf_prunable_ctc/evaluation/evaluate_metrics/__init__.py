"""Local `evaluate` metric modules, so WER/CER load without the Hub: ``evaluate.load(metric_path("wer"))``.

`evaluate.load("wer")` downloads the Hub's script each time it is not cached, which fails offline; evaluate 0.4.6
loads a local ``<name>.py`` by path instead (it copies the file into its modules cache and imports it). The modules
delegate to `hf_prunable_ctc.evaluation.metrics`, so both give the same numbers; the package must be importable
where they run.
"""

from __future__ import annotations

from pathlib import Path

METRIC_NAMES = ("wer", "cer")


def metric_path(name: str) -> str:
    """Path of the local `evaluate` module file for `name` ("wer" or "cer"), for ``evaluate.load(path)``."""
    if name not in METRIC_NAMES:
        raise ValueError(f"no local evaluate module {name!r}; available: {METRIC_NAMES}")
    return str(Path(__file__).with_name(f"{name}.py"))


def error_rate_info(unit: str):
    """`evaluate.MetricInfo` shared by the WER and CER modules: two lists of strings in, one float out."""
    import datasets
    import evaluate

    return evaluate.MetricInfo(
        description=f"Corpus-level {unit} error rate: (substitutions + deletions + insertions) / reference {unit}s.",
        citation="",
        inputs_description="predictions: list of str; references: list of str (same length). Returns a float.",
        features=datasets.Features({"predictions": datasets.Value("string", id="sequence"),
                                    "references": datasets.Value("string", id="sequence")}),
    )
