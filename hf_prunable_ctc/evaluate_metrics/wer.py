"""Word error rate as a local `evaluate` module: ``evaluate.load(".../evaluate_metrics/wer.py")``.

Same interface as the Hub's "wer" (``compute(predictions=[...], references=[...])`` -> float, a fraction), computed
offline by `hf_prunable_ctc.metrics.word_error_rate` (corpus-level, jiwer).
"""

import datasets
import evaluate

from hf_prunable_ctc.metrics import word_error_rate


class WER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus-level word error rate (substitutions + deletions + insertions) / reference words.",
            citation="",
            inputs_description="predictions: list of str; references: list of str (same length). Returns a float.",
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string", id="sequence"),
                    "references": datasets.Value("string", id="sequence"),
                }
            ),
        )

    def _compute(self, predictions=None, references=None):
        return word_error_rate(references, predictions)
