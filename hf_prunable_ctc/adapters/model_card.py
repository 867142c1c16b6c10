"""Model card and report for a stock CTC model made prunable: base checkpoint, settings, per-depth WER before and
after the prunable fine-tune.

`before`/`after` are `{depth: {"wer": percent, "cer": percent}}` as in `per_depth_metrics.json`.
"""

import os
from typing import Dict, Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

Rates = Dict[int, Dict[str, float]]


def depth_comparison_table(before: Rates, after: Rates, parameters: Dict[int, int]) -> str:
    """Markdown table: one row per depth with parameters, WER/CER before and after (percent)."""
    lines = ["| layers kept | parameters | WER before | WER after | CER before | CER after |",
             "|---:|---:|---:|---:|---:|---:|"]
    for depth in sorted(after):
        b, a = before.get(depth, {}), after[depth]
        lines.append(f"| {depth} | {parameters[depth]:,d} | {b.get('wer', float('nan')):.1f}% | {a['wer']:.1f}% "
                     f"| {b.get('cer', float('nan')):.1f}% | {a['cer']:.1f}% |")
    return "\n".join(lines)


def build_stock_model_card(model_name: str, base_model: str, model_class: str, settings: dict, before: Rates,
                           after: Rates, parameters: Dict[int, int], dataset_name: str, dataset_type: str,
                           split: str, training_command: Optional[str] = None,
                           note: Optional[str] = None) -> ModelCard:
    """A card for a full-depth prunable fine-tune of `base_model` (a Hub id or a local folder)."""
    results = [
        EvalResult(task_type="automatic-speech-recognition", dataset_type=dataset_type, dataset_name=dataset_name,
                   dataset_split=split, metric_type="wer", metric_value=after[d]["wer"],
                   metric_name=f"WER ({d} layers)", metric_config=f"depth-{d}", metric_args={"num_layers": d})
        for d in sorted(after)
    ]
    # The card's base_model field links a Hub repo: a local folder or a random initialisation is named in the text only.
    hub_base = base_model if "/" in base_model and not os.path.exists(base_model) else None
    data = ModelCardData(model_name=model_name, base_model=hub_base,
                         pipeline_tag="automatic-speech-recognition", library_name="transformers",
                         tags=["ctc", "intermediate-ctc", "stochastic-depth", "prunable"], eval_results=results)
    depths = sorted(after)
    text = f"""---
{data.to_yaml()}
---

# {model_name}

`{model_class}` fine-tuned from `{base_model}` with intermediate CTC (layers {settings['interctc_layers']}, weight
{settings['interctc_weight']}) and stochastic depth (rate {settings['stochastic_depth_rate']},
{settings['stochastic_depth_schedule']} schedule) with [hf-prunable-ctc](https://pypi.org/project/hf-prunable-ctc/),
so that its first k layers work on their own. This checkpoint is the stock class at full depth: it loads with
`AutoModelForCTC` and the ASR pipeline as is, no remote code.

## Word error rate per depth ({dataset_name}, {split})

"Before" is `{base_model}` cut to its first k layers without the prunable fine-tune; "after" is this model.

{depth_comparison_table(before, after, parameters)}
{(chr(10) + note + chr(10)) if note else ""}
## Keeping fewer layers

```python
from transformers import AutoModelForCTC
from hf_prunable_ctc.adapters import make_prunable

model = make_prunable(AutoModelForCTC.from_pretrained("{model_name}"))  # settings come from config.prunable_ctc
logits = model(inputs, num_layers={depths[0]}).logits   # depth on demand, one call
model.prune_to({depths[0]}).save_pretrained("pruned")   # a {model_class} with {depths[0]} layers; copy the tokenizer
                                                        # and feature extractor files next to it
```
"""
    if training_command:
        text += f"\n## Training command\n\n```\n{training_command}\n```\n"
    return ModelCard(text)
