"""Word error rate as a local `evaluate` module: ``evaluate.load(".../evaluate_metrics/wer.py")``.

Same interface as the Hub's "wer" (``compute(predictions=[...], references=[...])`` -> float, a fraction), computed
offline by `hf_prunable_ctc.evaluation.metrics.word_error_rate` (corpus-level, jiwer).
"""

import evaluate

from hf_prunable_ctc.evaluation.evaluate_metrics import error_rate_info
from hf_prunable_ctc.evaluation.metrics import word_error_rate


class WER(evaluate.Metric):
    def _info(self):
        return error_rate_info("word")

    def _compute(self, predictions=None, references=None):
        return word_error_rate(references, predictions)
