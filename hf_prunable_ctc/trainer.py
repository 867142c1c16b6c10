"""`Trainer` that evaluates every requested depth in one pass over the eval set.

Metrics are logged as `eval_wer_d{k}` / `eval_cer_d{k}` (fractions), plus `eval_wer` / `eval_cer` for the full
depth so `metric_for_best_model="wer"` works as with any CTC model. Predictions are gathered across processes by
the stock evaluation loop, so the same code runs under torchrun / accelerate.
"""

from typing import Optional, Sequence

import torch
from transformers import Trainer

from .depth_evaluation import check_eval_depths, default_eval_depths, per_depth_error_rates, per_depth_greedy_ids


class PerDepthCTCTrainer(Trainer):
    def __init__(self, *args, tokenizer, eval_depths: Optional[Sequence[int]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.model.config
        self.ctc_tokenizer = tokenizer
        self.eval_depths = check_eval_depths(eval_depths or default_eval_depths(config), config.num_hidden_layers)
        self.compute_metrics = self.per_depth_metrics

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        model = self.accelerator.unwrap_model(model)
        labels = inputs.get("labels")
        with torch.no_grad():
            ids, loss = per_depth_greedy_ids(
                model, inputs["input_features"], inputs.get("attention_mask"), self.eval_depths,
                model.pruning_schedule(), labels=labels,
            )
        if prediction_loss_only:
            return loss, None, None
        # (batch, frames, depths): the evaluation loop pads the frame axis across batches with -100.
        return (loss.detach() if loss is not None else None), ids, labels

    def per_depth_metrics(self, eval_prediction):
        rates = per_depth_error_rates(eval_prediction.predictions, eval_prediction.label_ids, self.ctc_tokenizer,
                                      self.eval_depths)
        metrics = {}
        for depth, r in rates.items():
            metrics[f"wer_d{depth}"] = r["wer"]
            metrics[f"cer_d{depth}"] = r["cer"]
        full = rates[max(self.eval_depths)]
        metrics["wer"], metrics["cer"] = full["wer"], full["cer"]
        return metrics
