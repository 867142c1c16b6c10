"""Character error rate as a local `evaluate` module: ``evaluate.load(".../evaluate_metrics/cer.py")``.

Same interface as the Hub's "cer" (``compute(predictions=[...], references=[...])`` -> float, a fraction), computed
offline by `hf_prunable_ctc.metrics.character_error_rate` (corpus-level, jiwer).
"""

import datasets
import evaluate

from hf_prunable_ctc.metrics import character_error_rate


class CER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus-level character error rate (substitutions + deletions + insertions) / reference characters.",
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
        return character_error_rate(references, predictions)
