"""Per-depth evaluation: greedy CTC output of several sub-networks from as few forward passes as possible.

Depths whose pruning schedule keeps the first k layers ("top") all come from one full forward pass: the output of
layer k goes through the shared final LayerNorm and CTC head. Other schedules need one pass each.

Batches go to the model's device here (the model may sit on a GPU while the data was collated on the CPU), so
every caller, the Trainer, the pruning search and `evaluate_depths.py`, runs where the model is.
"""

from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

from ..json_files import write_json
from ..modeling_prunable_ctc import PrunableCTCForCTC, blank_padded_frames
from .metrics import character_error_rate, compute_ctc_metrics, decode_ctc, word_error_rate


def default_eval_depths(config) -> List[int]:
    """Every intermediate-CTC layer plus the full depth."""
    return sorted(set(config.interctc_layers) | {config.num_hidden_layers})


def check_eval_depths(depths: Iterable[int], num_layers: int) -> List[int]:
    depths = sorted(set(int(d) for d in depths))
    bad = [d for d in depths if not 1 <= d <= num_layers]
    if not depths or bad:
        raise ValueError(f"eval depths must lie in [1, {num_layers}], got {depths}")
    return depths


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of `model`'s first parameter (CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def batch_to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    """A copy of `batch` whose tensors are on `device` (other values unchanged)."""
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def per_depth_logits(
    model: PrunableCTCForCTC,
    input_features: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    depths: Sequence[int],
    schedule: Dict[int, List[int]],
    labels: Optional[torch.Tensor] = None,
):
    """CTC logits of each depth, with padded frames blank, and the full model's output.

    Returns:
        `(logits, full)`: logits is a list with one FloatTensor (batch, frames, vocab) per depth, in the order of
        `depths`; full is the full-depth `PrunableCTCOutput` (its `output_lengths`, and its `loss` with `labels`).
    """
    device = model_device(model)
    input_features = input_features.to(device)
    attention_mask = attention_mask.to(device) if attention_mask is not None else None
    labels = labels.to(device) if labels is not None else None
    num_layers = model.config.num_hidden_layers
    top_depths = [d for d in depths if schedule[d] == list(range(1, d + 1)) and d < num_layers]
    full = model(input_features, attention_mask=attention_mask, labels=labels,
                 output_hidden_states=bool(top_depths))
    columns = []
    for depth in depths:
        if depth == num_layers and schedule[depth] == list(range(1, num_layers + 1)):
            logits = full.logits
        elif depth in top_depths:
            logits = blank_padded_frames(model.logits_from_hidden_state(full.hidden_states[depth]),
                                         full.output_lengths, model.config.pad_token_id)
        else:
            logits = model(input_features, attention_mask=attention_mask, layers=schedule[depth]).logits
        columns.append(logits)
    return columns, full


def per_depth_greedy_ids(
    model: PrunableCTCForCTC,
    input_features: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    depths: Sequence[int],
    schedule: Dict[int, List[int]],
    labels: Optional[torch.Tensor] = None,
):
    """Greedy CTC ids of each depth, and the full model's loss when `labels` are given.

    Returns:
        `(ids, loss)`: ids is a LongTensor (batch, frames, len(depths)) holding the argmax token of every output
        frame, with the blank (pad id) on padded frames; loss is the full-depth training loss or None.
    """
    columns, full = per_depth_logits(model, input_features, attention_mask, depths, schedule, labels)
    ids = torch.stack([logits.argmax(dim=-1) for logits in columns], dim=-1)
    valid = torch.arange(ids.shape[1], device=ids.device)[None, :] < full.output_lengths[:, None]
    ids = ids.masked_fill(~valid[..., None], model.config.pad_token_id)
    return ids, full.loss


def per_depth_error_rates(pred_ids, label_ids, tokenizer, depths: Sequence[int]) -> Dict[int, Dict[str, float]]:
    """WER and CER (fractions) per depth from `(N, frames, len(depths))` greedy ids and `(N, U)` labels."""
    return {depth: compute_ctc_metrics(pred_ids[..., i], label_ids, tokenizer) for i, depth in enumerate(depths)}


def write_per_depth_metrics(path, model, rates: Dict[int, Dict[str, float]], split: str,
                            schedule: Dict[int, List[int]], extra: Optional[dict] = None) -> dict:
    """Write `per_depth_metrics.json`: per depth the WER/CER (percent), the kept layers and the parameter count.

    Written to a temporary file and renamed, so an interrupted run never leaves half a file.
    """
    record = {
        "split": split,
        "pruning": "config schedule" if model.config.pruning_schedule else "top (first k layers)",
        "depths": {
            str(depth): {
                "wer": round(100 * r["wer"], 2),
                "cer": round(100 * r["cer"], 2),
                "layers": schedule[depth],
                "parameters": model.count_parameters(layers=schedule[depth]),
            }
            for depth, r in sorted(rates.items())
        },
        **(extra or {}),
    }
    write_json(path, record, indent=2)
    return record


def format_depth_table(record: dict) -> str:
    """A plain-text table of a `per_depth_metrics.json` record."""
    lines = [f"per-depth results on {record['split']} ({record['pruning']})",
             f"{'depth':>5}  {'WER %':>7}  {'CER %':>7}  {'params':>10}  layers"]
    for depth, r in record["depths"].items():
        lines.append(f"{depth:>5}  {r['wer']:7.2f}  {r['cer']:7.2f}  {r['parameters']:10,d}  {r['layers']}")
    return "\n".join(lines)


def subnetwork_error_rates(model, batches, tokenizer, layers: Sequence[int]) -> Dict[str, float]:
    """WER and CER (fractions) of the sub-network running `layers`, over collated batches with labels (moved to
    the model's device)."""
    references, predictions = subnetwork_transcripts(model, batches, tokenizer, layers)
    return {"wer": word_error_rate(references, predictions), "cer": character_error_rate(references, predictions)}


@torch.no_grad()
def subnetwork_transcripts(model, batches, tokenizer, layers: Sequence[int]) -> Tuple[List[str], List[str]]:
    """`(references, predictions)` of the sub-network running `layers` over collated batches with labels, decoded
    as `compute_ctc_metrics` scores them."""
    pred_rows, label_rows = [], []
    device = model_device(model)
    for batch in batches:
        batch = batch_to_device(batch, device)
        out = model(batch["input_features"], batch.get("attention_mask"), layers=list(layers))
        ids = out.logits.argmax(-1)
        valid = torch.arange(ids.shape[1], device=ids.device)[None, :] < out.output_lengths[:, None]
        pred_rows.extend(ids.masked_fill(~valid, model.config.pad_token_id).tolist())
        label_rows.extend(batch["labels"].tolist())
    return decode_ctc(pad_rows(pred_rows, model.config.pad_token_id), pad_rows(label_rows, -100), tokenizer)


def pad_rows(rows: List[List[int]], value: int) -> List[List[int]]:
    width = max(len(r) for r in rows)
    return [r + [value] * (width - len(r)) for r in rows]
