"""Per-depth evaluation and training of a `PrunableStockCTC` with the Trainer.

`PerDepthCTCTrainer` is reused for its metrics (`eval_wer_d{k}` / `eval_cer_d{k}`, `eval_wer` at full depth); this
subclass only changes what is specific to a wrapped stock model: the input key (`input_values` or
`input_features`), where the layer count lives, and saving (the stock checkpoint, not the wrapper's state dict).
Checkpoints load back through the Trainer's own code (`resume_from_checkpoint`, `load_best_model_at_end`): the
wrapper's `load_state_dict` takes the stock names.
"""

from typing import List, Optional, Sequence, Tuple

import torch
from transformers import Trainer

from ..evaluation.depth_evaluation import check_eval_depths
from ..training.trainer import PerDepthCTCTrainer
from .prunable_stock import PrunableStockCTC


def per_depth_greedy_ids(model: PrunableStockCTC, batch: dict, depths: Sequence[int],
                         labels: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Greedy CTC ids of each depth from one full forward pass, and the full model's loss when `labels` are given.

    Returns:
        `(ids, loss)`: ids is a LongTensor `(batch, frames, len(depths))` with the blank (pad id) on padded frames.
    """
    full = model(batch[model.main_input_name], attention_mask=batch.get("attention_mask"), labels=labels,
                 output_hidden_states=True)
    total = model.num_hidden_layers
    columns = [full.logits if depth == total else model.logits_from_hidden_state(full.hidden_states[depth])
               for depth in depths]
    ids = torch.stack([logits.argmax(dim=-1) for logits in columns], dim=-1)
    valid = torch.arange(ids.shape[1], device=ids.device)[None, :] < full.output_lengths[:, None]
    return ids.masked_fill(~valid[..., None], model.config.pad_token_id), full.loss


class StockPerDepthCTCTrainer(PerDepthCTCTrainer):
    """`PerDepthCTCTrainer` for a `PrunableStockCTC` (see the module docstring)."""

    def __init__(self, *args, tokenizer, eval_depths: Optional[List[int]] = None, **kwargs):
        # PerDepthCTCTrainer.__init__ reads config.num_hidden_layers, which Parakeet keeps in its encoder config.
        Trainer.__init__(self, *args, **kwargs)
        model = self.model
        if not isinstance(model, PrunableStockCTC):
            raise TypeError(f"StockPerDepthCTCTrainer trains a make_prunable(...) wrapper, got {type(model).__name__}")
        self.ctc_tokenizer = tokenizer
        self.eval_depths = check_eval_depths(eval_depths or model.default_eval_depths(), model.num_hidden_layers)
        self.compute_metrics = self.per_depth_metrics

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        model = self.accelerator.unwrap_model(model)
        labels = inputs.get("labels")
        with torch.no_grad():
            ids, loss = per_depth_greedy_ids(model, inputs, self.eval_depths, labels=labels)
        if prediction_loss_only:
            return loss, None, None
        return (loss.detach() if loss is not None else None), ids, labels

    def _save(self, output_dir: Optional[str] = None, state_dict=None):
        # The wrapper is not a PreTrainedModel: without this the Trainer would write its bare state dict
        # ("model."-prefixed names) instead of a stock checkpoint.
        if not self.args.should_save:  # under DDP, one process writes
            return
        output_dir = output_dir or self.args.output_dir
        self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, state_dict=state_dict)
        # Tokenizer and feature extractor next to the weights: what AutoTokenizer / AutoFeatureExtractor (and so the
        # ASR pipeline) load from the same folder.
        self.ctc_tokenizer.save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, f"{output_dir}/training_args.bin")
