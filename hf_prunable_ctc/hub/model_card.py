"""Model cards with one WER and one CER result per depth, from a depth report or `per_depth_metrics.json`.

The `model-index` keeps task, dataset and split identical for every depth and varies `metric_name`
("WER (4 layers)"), `metric_config` ("depth-4") and `metric_args` ({"num_layers": 4}): those are not part of the
Hub's grouping key, so all depths survive (putting the depth in `dataset_args` would collapse them).

What a card says about the model's architecture comes from the model. The free texts of the card information
(`summary`, `training`, `limitations`, `results_note`) are Jinja templates that may name its fields
(``{{ num_layers }}``, ``{{ parameters }}``, ... see `architecture_fields`) and its measured results
(``{{ results.test[8].wer }}``); a number of layers, parameters, hidden size, heads, feed-forward size or
convolution kernel, or an encoder type, written out in them and different from the model's is refused
(`CardInfoError`): card information written for another model never describes this one.
"""

import json
import os
import re
from importlib import resources
from typing import Dict, List, Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..configuration_prunable_ctc import PrunableCTCConfig
from ..evaluation.whisper_comparison import comparison_section
from ..pruning import default_schedule

# Package data, so that cards can be written from a regular (non-editable) install too.
TEMPLATE = resources.files("hf_prunable_ctc") / "templates" / "model_card.md"
TAGS = ["ctc", "speech", "layer-pruning", "intermediate-ctc", "stochastic-depth", "prunable-ctc", "hf-prunable-ctc"]
ENCODER_NAMES = {"conformer": "Conformer", "transformer": "Transformer"}
# The card information's free texts, rendered with `architecture_fields` and checked against the model.
CARD_TEXTS = ("summary", "training", "limitations", "results_note")


class CardInfoError(ValueError):
    """Card information that contradicts the model it would describe, or names a field or result it does not have."""


def parameter_count(config: PrunableCTCConfig) -> int:
    """Parameters of the model `config` describes (all its layers), counted on the meta device: no weights read."""
    import torch

    from ..modeling_prunable_ctc import PrunableCTCForCTC

    with torch.device("meta"):
        return PrunableCTCForCTC(config).count_parameters()


def architecture_fields(config: PrunableCTCConfig) -> Dict[str, object]:
    """What a card may say about the model's architecture, from its config: `encoder` ("Conformer"), `num_layers`,
    `hidden_size`, `num_attention_heads`, `intermediate_size`, `conv_kernel_size`, `parameters` ("4.2 M"),
    `parameter_count` (4167470), `interctc_layers` ("2, 4, 6"), `interctc_weight`, `interctc_weights` ("0.5,
    0.25, 0.17", or "1 each" when not set), `stochastic_depth_rate`, `stochastic_depth_schedule`, and how the
    depths were trained beyond that: `depth_sampling` ("none" or "sandwich"), `sandwich_random_depths`,
    `sandwich_weight`, `distillation_weight`, `distillation_temperature`."""
    count = parameter_count(config)
    weights = config.interctc_weights
    exit_weights = "1 each" if weights is None else ", ".join(f"{w:.2g}" for w in weights)
    return dict(encoder=ENCODER_NAMES[config.encoder_type], num_layers=config.num_hidden_layers,
                hidden_size=config.hidden_size, num_attention_heads=config.num_attention_heads,
                intermediate_size=config.intermediate_size, conv_kernel_size=config.conv_kernel_size,
                parameters=f"{count / 1e6:.1f} M", parameter_count=count,
                interctc_layers=", ".join(map(str, config.interctc_layers)), interctc_weight=config.interctc_weight,
                interctc_weights=exit_weights, stochastic_depth_rate=config.stochastic_depth_rate,
                stochastic_depth_schedule=config.stochastic_depth_schedule, depth_sampling=config.depth_sampling,
                sandwich_random_depths=config.sandwich_random_depths, sandwich_weight=config.sandwich_weight,
                distillation_weight=config.distillation_weight,
                distillation_temperature=config.distillation_temperature)


# (what, pattern whose group 1 is the stated value, field it must equal). A number of layers is the model's size:
# a depth is written "depth k".
_CLAIMS = [
    ("layers", re.compile(r"\b(\d+)[ -]layers?\b"), "num_layers"),
    ("hidden size", re.compile(r"(?:\bd(?:_model)?\s*=\s*|\bhidden[ _]size\s*[= ]\s*)(\d+)\b"), "hidden_size"),
    ("attention heads", re.compile(r"\b(\d+) (?:attention )?heads\b"), "num_attention_heads"),
    ("feed-forward size", re.compile(r"\b(?:FFN|feed-forward(?: size)?|intermediate[ _]size)\s*[= ]\s*(\d+)\b"),
     "intermediate_size"),
    ("convolution kernel", re.compile(r"\bconv(?:olution)? kernel(?: size)?\s*[= ]?\s*(\d+)\b"), "conv_kernel_size"),
]
_PARAMETERS = re.compile(r"\b(\d+(?:\.\d+)?) ?([kM]) ?param(?:eter)?s\b|\b(\d{1,3}(?:,\d{3})+|\d+) param(?:eter)?s\b")


def check_architecture_claims(name: str, text: str, fields: Dict[str, object], model_dir: str) -> None:
    """Raise `CardInfoError` if `text` (card information field `name`) states an architecture other than `fields`'."""

    def refuse(stated: str, actual: str) -> None:
        raise CardInfoError(
            f"card information {name!r} says {stated!r}, but the model in {model_dir} has {actual}: the card "
            f"would describe another model. Write the model's fields instead of numbers ({{{{ num_layers }}}}, "
            f"{{{{ parameters }}}}, {{{{ hidden_size }}}}, {{{{ encoder }}}}, ...: rendered from the model), or "
            f"'depth k' for a depth, or use card information written for this model.")

    for what, pattern, field_name in _CLAIMS:
        for match in pattern.finditer(text):
            if int(match.group(1)) != fields[field_name]:
                refuse(match.group(0), f"{fields[field_name]} {what}")
    count = int(fields["parameter_count"])
    for match in _PARAMETERS.finditer(text):
        if match.group(1):  # "4.2 M parameters": equal at the precision written
            unit = {"k": 1e3, "M": 1e6}[match.group(2)]
            decimals = len(match.group(1).partition(".")[2])
            if round(count / unit, decimals) != float(match.group(1)):
                refuse(match.group(0), f"{count / unit:.{decimals}f} {match.group(2)} parameters")
        elif int(match.group(3).replace(",", "")) != count:
            refuse(match.group(0), f"{count:,} parameters")
    other = "Transformer" if fields["encoder"] == "Conformer" else "Conformer"
    # "Transformers" is the library; a "Transformer" or "Conformer" on its own is the encoder.
    match = re.search(rf"\b{other}\b(?!s)", text)
    if match:
        refuse(match.group(0), f"a {fields['encoder']} encoder")


def render_card_texts(texts: Dict[str, str], fields: Dict[str, object], results: Dict, model_dir: str) -> Dict:
    """The card information's free `texts` rendered as Jinja templates with the model's `fields` and its `results`
    ({split: {depth: {"wer": "28.2", "cer": "9.8"}}}, percent with one decimal as in the card's table), then
    checked against the model (`check_architecture_claims`). Raises `CardInfoError` for a field or result the model
    does not have, or a contradiction."""
    import jinja2

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    rendered = {}
    for name, text in texts.items():
        try:
            rendered[name] = environment.from_string(text).render(**fields, results=results)
        except (jinja2.UndefinedError, jinja2.TemplateSyntaxError) as error:
            raise CardInfoError(
                f"card information {name!r}: {error} (the model in {model_dir} has the fields "
                f"{', '.join(sorted(fields))}, and results on {', '.join(sorted(results)) or 'no split'})") from None
        check_architecture_claims(name, rendered[name], fields, model_dir)
    return rendered


def text_results(*reports: Dict) -> Dict:
    """{split: {depth: {"wer", "cer"}}} of `depth_results`-style reports, as the card's table prints them."""
    return {report["split"]: {row["depth"]: {metric: f"{row[metric]:.1f}" for metric in ("wer", "cer")}
                              for row in report["rows"]} for report in reports}


def depth_results(model_dir: str, schedule: Dict[int, List[int]], translate=None) -> Dict:
    """Per-depth results for `schedule` from `depth_report.json` (preferred: has RTF) or `per_depth_metrics.json`.

    `translate` maps the layer numbering of the results to that of `schedule` (for a pruned copy of the measured
    model); rows it cannot map are skipped.
    Returns {"split", "dataset", "hardware", "rows": [{"depth", "layers", "wer", "cer", "parameters", "rtf"?}]}.
    """
    translate = translate or (lambda layers: layers)
    report_path = os.path.join(model_dir, "depth_report.json")
    if os.path.exists(report_path):
        return report_results(report_path, schedule, translate)

    metrics_path = os.path.join(model_dir, "per_depth_metrics.json")
    if not os.path.exists(metrics_path):
        raise FileNotFoundError(f"{model_dir} has neither depth_report.json nor per_depth_metrics.json: run "
                                "training/evaluate_depths.py or training/train.py first")
    with open(metrics_path) as f:
        metrics = json.load(f)
    rows = [{"depth": int(d), "layers": translate(r["layers"]), **{k: r[k] for k in ("wer", "cer", "parameters")}}
            for d, r in metrics["depths"].items() if translate(r["layers"]) == schedule.get(int(d))]
    return {"split": metrics["split"], "dataset": metrics.get("dataset"), "hardware": None,
            "rows": sorted(rows, key=lambda r: r["depth"])}


def report_results(report_path: str, schedule: Dict[int, List[int]], translate) -> Dict:
    """`depth_results` of one depth report (`depth_report.json`, or a further split's `depth_report_<split>.json`)."""
    with open(report_path) as f:
        report = json.load(f)
    rows, seen = [], set()
    for record in report["records"]:
        layers = translate(record["layers"])
        depth = len(layers or [])
        if depth and depth not in seen and layers == schedule.get(depth):
            seen.add(depth)
            rows.append({k: record[k] for k in ("wer", "cer", "parameters")} | {"depth": depth, "layers": layers}
                        | ({"rtf": record["rtf_batch1"]} if "rtf_batch1" in record else {}))
    return {"split": report["split"], "dataset": report["dataset"], "hardware": report["hardware"],
            "utterances": report.get("utterances"), "rows": sorted(rows, key=lambda r: r["depth"])}


def extra_split_results(results_dir: str, schedule: Dict[int, List[int]], translate=None) -> List[Dict]:
    """`depth_results` of every further split (`depth_report_<split>.json`, `evaluate_depths.py --extra_splits`)."""
    translate = translate or (lambda layers: layers)
    names = sorted(n for n in os.listdir(results_dir) if n.startswith("depth_report_") and n.endswith(".json"))
    return [report_results(os.path.join(results_dir, name), schedule, translate) for name in names]


def eval_results(rows: List[dict], dataset_name: str, dataset_type: str, split: str) -> List[EvalResult]:
    """One WER and one CER `EvalResult` per depth, values in percent."""
    results = []
    for row in rows:
        for metric in ("wer", "cer"):
            results.append(EvalResult(
                task_type="automatic-speech-recognition", task_name="Speech Recognition",
                dataset_type=dataset_type, dataset_name=dataset_name, dataset_split=split,
                metric_type=metric, metric_value=row[metric],
                metric_name=f"{metric.upper()} ({row['depth']} layer{'s' if row['depth'] != 1 else ''})",
                metric_config=f"depth-{row['depth']}",
                metric_args={"num_layers": row["depth"], "layers": row["layers"]},
            ))
    return results


def depth_table(rows: List[dict], hardware: Optional[str], extra: Optional[List[Dict]] = None,
                split: Optional[str] = None) -> str:
    """The card's per-depth table; with `extra` (further splits' results), WER/CER columns per split."""
    with_rtf = all("rtf" in r for r in rows)
    extra = [e for e in (extra or []) if e["rows"]]
    if extra:
        header = f"| layers kept | which | {split} WER % | {split} CER % |"
        rule = "|---:|---|---:|---:|"
        for e in extra:
            header += f" {e['split']} WER % | {e['split']} CER % |"
            rule += "---:|---:|"
        header += " parameters |"
        rule += "---:|"
    else:
        header, rule = "| layers kept | which | WER % | CER % | parameters |", "|---:|---|---:|---:|---:|"
    lines = [header + (" RTF |" if with_rtf else ""), rule + ("---:|" if with_rtf else "")]
    for r in rows:
        line = f"| {r['depth']} | {','.join(map(str, r['layers']))} | {r['wer']:.1f} | {r['cer']:.1f} |"
        for e in extra:
            match = next((x for x in e["rows"] if x["depth"] == r["depth"]), None)
            line += f" {match['wer']:.1f} | {match['cer']:.1f} |" if match else " - | - |"
        line += f" {r['parameters']:,} |"
        lines.append(line + (f" {r['rtf']:.4f} |" if with_rtf else ""))
    if with_rtf and hardware:
        lines += ["", f"RTF = processing seconds / audio seconds of the model forward pass at batch size 1 on "
                      f"{hardware}; features excluded, median of repeated runs."]
    return "\n".join(lines)


def pruned_note(config: PrunableCTCConfig, measured: PrunableCTCConfig, pruned_from: str,
                strategy: Optional[str] = None) -> str:
    """One paragraph saying what a pruned model is: its layers, the model and depth it came from, no fine-tuning."""
    how = f"with the `{strategy}` strategy" if strategy else "with the source model's stored pruning schedule"
    return (f"**Pruned variant:** {config.num_hidden_layers} encoder layers, pruned from `{pruned_from}` "
            f"({measured.num_hidden_layers} layers) at depth {config.num_hidden_layers} {how}, keeping its layers "
            f"{', '.join(map(str, config.kept_layers))} (numbered as in the originally trained model). The weights "
            f"are those layers of the source model, **not fine-tuned** after pruning; the results below were "
            f"measured with the source model running exactly these layers.")


def build_model_card(model_dir: str, model_name: str, dataset_name: str, dataset_type: str,
                     training_command: str, summary: str = "", training: str = "", limitations: str = "",
                     results_note: str = "", repo_id: Optional[str] = None, license: str = "apache-2.0",
                     datasets: Optional[List[str]] = None, results_dir: Optional[str] = None,
                     pruned_from: Optional[str] = None, pruning_strategy: Optional[str] = None) -> ModelCard:
    """A `ModelCard` for the model in `model_dir`, with per-depth results and plots from `results_dir`
    (default `model_dir`; for a pruned copy, the folder of the model that was measured).

    When the model in `model_dir` has fewer layers than the measured one, the card describes a pruned variant:
    its own depths only, a note naming `pruned_from` (default: `model_name`) and `pruning_strategy`, no plots
    (they show the source model), and the texts of `summary`/`training` marked as the source model's.
    """
    config = PrunableCTCConfig.from_pretrained(model_dir)
    schedule = default_schedule(config)
    results_dir = results_dir or model_dir
    measured = PrunableCTCConfig.from_pretrained(results_dir)
    # Both models record which original layers they hold: map measured layer numbers to this model's.
    to_original = {i: original for i, original in enumerate(measured.kept_layers, start=1)}
    to_here = {original: i for i, original in enumerate(config.kept_layers, start=1)}

    def translate(layers):
        mapped = [to_here.get(to_original[i]) for i in layers]
        return None if None in mapped else mapped

    results = depth_results(results_dir, schedule, translate)
    extra = extra_split_results(results_dir, schedule, translate)
    if not results["rows"]:
        raise ValueError(f"no per-depth results in {results_dir} match the pruning schedule of the model in "
                         f"{model_dir}: re-run training/evaluate_depths.py on it")
    pruned = config.num_hidden_layers < measured.num_hidden_layers
    # The card information describes the measured model (for a pruned copy, the source it is marked as).
    measured_schedule = default_schedule(measured)
    texts = render_card_texts(
        dict(summary=summary, training=training, limitations=limitations, results_note=results_note),
        architecture_fields(measured),
        text_results(depth_results(results_dir, measured_schedule),
                     *extra_split_results(results_dir, measured_schedule)), results_dir)
    summary, training, limitations, results_note = (texts[name] for name in CARD_TEXTS)
    note = pruned_note(config, measured, pruned_from or model_name, pruning_strategy) if pruned else ""
    if pruned:
        summary = f"The model it was pruned from: {summary}" if summary else ""
        # The caller's results note describes the source model's depths; this card's table is a subset.
        results_note = ""
        model_name = (repo_id.split("/")[-1] if repo_id else
                      f"{model_name} pruned to {config.num_hidden_layers} layers")
    card_data = ModelCardData(
        model_name=model_name, library_name="transformers", pipeline_tag="automatic-speech-recognition",
        tags=TAGS, license=license, language=["en"], datasets=datasets, metrics=["wer", "cer"],
        eval_results=eval_results(results["rows"], dataset_name, dataset_type, results["split"])
        + [result for e in extra for result in eval_results(e["rows"], dataset_name, dataset_type, e["split"])],
    )
    conditions_note, conditions_table = ("", "") if pruned else conditions_section(results_dir)
    comparison = None if pruned else comparison_section(results_dir)
    plots = [] if pruned else [name for name in ("wer_vs_depth.png", "rtf_vs_depth.png", "svcca_heatmap.png")
                               if os.path.exists(os.path.join(results_dir, name))]
    return ModelCard.from_template(
        card_data, template_str=TEMPLATE.read_text(encoding="utf-8"), model_name=model_name, summary=summary,
        pruned_note=note, **architecture_fields(config),
        results_note=results_note or (f"Greedy CTC decoding, no language model, on the `{results['split']}` split "
                                      f"of {dataset_name}"
                                      + (" and on " + ", ".join(f"`{e['split']}`" for e in extra) if extra else "")
                                      + "."),
        depth_table=depth_table(results["rows"], results["hardware"], extra, results["split"]),
        conditions_note=conditions_note, conditions_table=conditions_table, comparison=comparison or "",
        plots=" ".join(f"![{name[:-4].replace('_', ' ')}]({name})" for name in plots),
        repo_id=repo_id or model_name, schedule_name=("the layers in the table above" if config.pruning_schedule
                                                       else "none, so the first k layers"),
        example_depth=max(1, config.num_hidden_layers // 2),
        training=training, training_command=training_command, limitations=limitations,
    )


def conditions_section(results_dir: str) -> tuple:
    """``(note, table)`` from `conditions.json` (``evaluate_depths.py --conditions``) in `results_dir`, or
    ``("", "")`` when it has none: the same utterances with silence around them and joined into long recordings."""
    from ..evaluation.conditions import format_conditions_table

    path = os.path.join(results_dir, "conditions.json")
    if not os.path.isfile(path):
        return "", ""
    with open(path) as f:
        result = json.load(f)
    settings = result["settings"]
    note = (f"The same model through `pipeline(\"automatic-speech-recognition\")` on {result['utterances']} utterances"
            f"{' of the `' + result['split'] + '` split' if result.get('split') else ''}: as they are (`clean`), with "
            f"{settings['silence_seconds']:g} s of quiet noise ({settings['noise_dbfs']:g} dBFS) before and after each "
            f"(`silence`), and joined with pauses into recordings of about {settings['long_form_seconds']:g} s "
            f"transcribed with `chunk_length_s={settings['chunk_length_s']:g}` (`long_form`). The last columns are "
            "the WER points each condition adds.")
    return note, format_conditions_table(result)


def basic_pruned_card(model_dir: str, source_dir: str, name: str, source_name: Optional[str] = None,
                      strategy: Optional[str] = None) -> ModelCard:
    """A short card, titled `name`, for a pruned model when no card information (dataset, training command) is at
    hand (`model_dir` may be a staging folder; `source_name` defaults to `source_dir`).

    States what the model is (its layers and parameters per depth, where it came from, not fine-tuned) and, when
    the source folder has per-depth results, the WER/CER it measured for this model's layers.
    """
    from ..modeling_prunable_ctc import PrunableCTCForCTC

    config = PrunableCTCConfig.from_pretrained(model_dir)
    measured = PrunableCTCConfig.from_pretrained(source_dir)
    model = PrunableCTCForCTC.from_pretrained(model_dir)
    schedule = default_schedule(config)
    to_original = {i: original for i, original in enumerate(measured.kept_layers, start=1)}
    to_here = {original: i for i, original in enumerate(config.kept_layers, start=1)}
    try:
        results = depth_results(source_dir, schedule, lambda layers: (
            None if None in (mapped := [to_here.get(to_original[i]) for i in layers]) else mapped))
        rows = {row["depth"]: row for row in results["rows"]}
        where = f" (greedy decoding, `{results['split']}` split, measured on the source model)"
    except FileNotFoundError:
        rows, where = {}, ""
    lines = ["| layers kept | which | parameters | WER % | CER % |", "|---:|---|---:|---:|---:|"]
    for depth, layers in schedule.items():
        row = rows.get(depth)
        scores = f"{row['wer']:.1f} | {row['cer']:.1f}" if row else "not measured | not measured"
        lines.append(f"| {depth} | {','.join(map(str, layers))} | {model.count_parameters(layers=layers):,} | "
                     f"{scores} |")
    data = ModelCardData(library_name="transformers", pipeline_tag="automatic-speech-recognition", tags=TAGS)
    text = "\n\n".join([
        f"---\n{data.to_yaml()}\n---", f"# {name}",
        pruned_note(config, measured, source_name or source_dir, strategy),
        f"## Depths{where}", "\n".join(lines),
        "Per-depth results for a dataset of your own: `python training/evaluate_depths.py --model <this folder> "
        "--data_dir <corpus> --split test` in a checkout of hf-prunable-ctc.",
    ])
    return ModelCard(text + "\n")
