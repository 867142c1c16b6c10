"""Character error rate as a local `evaluate` module: ``evaluate.load(".../evaluate_metrics/cer.py")``.

Same interface as the Hub's "cer" (``compute(predictions=[...], references=[...])`` -> float, a fraction), computed
offline by `hf_prunable_ctc.evaluation.metrics.character_error_rate` (corpus-level, jiwer).
"""

import evaluate

from hf_prunable_ctc.evaluation.evaluate_metrics import error_rate_info
from hf_prunable_ctc.evaluation.metrics import character_error_rate


class CER(evaluate.Metric):
    def _info(self):
        return error_rate_info("character")

    def _compute(self, predictions=None, references=None):
        return character_error_rate(references, predictions)
