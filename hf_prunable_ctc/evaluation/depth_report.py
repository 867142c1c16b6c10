"""The per-depth report: accuracy, size and speed of every sub-network a checkpoint offers, per pruning strategy.

Outputs `depth_report.json` (one record per strategy x depth), `depth_report.md` (tables) and three PNG plots
(WER vs depth, RTF vs depth, SVCCA heatmap). Speed is the real-time factor RTF = processing seconds / audio
seconds (lower is faster; the paper's 0.005 -> 0.002), measured on the model forward pass alone: log-mel features
are computed once beforehand and excluded, the same for every depth, so the numbers compare depths and not the
feature extractor. Each setting is timed `repeats` times after a warm-up and the median is reported.
"""

import os
import platform
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch

from ..json_files import write_json
from .depth_evaluation import subnetwork_error_rates
from .svcca import collect_layer_outputs, svcca_matrix

FRAME_SECONDS = 0.01  # one log-mel frame = 10 ms of audio


@torch.no_grad()
def measure_rtf(model, utterances: List[torch.Tensor], layers: Sequence[int], batch_size: int = 1,
                repeats: int = 5) -> float:
    """Median real-time factor of the forward pass over `utterances` ((frames, bins) feature tensors).

    Utterances are processed in order in batches of `batch_size` (padded within a batch); one untimed warm-up
    pass precedes the `repeats` timed passes.
    """
    device = next(model.parameters()).device
    batches = []
    for start in range(0, len(utterances), batch_size):
        chunk = utterances[start : start + batch_size]
        width = max(u.shape[0] for u in chunk)
        features = torch.zeros(len(chunk), width, chunk[0].shape[1])
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, u in enumerate(chunk):
            features[i, : u.shape[0]] = u
            mask[i, : u.shape[0]] = 1
        batches.append((features.to(device), mask.to(device)))
    audio_seconds = sum(u.shape[0] for u in utterances) * FRAME_SECONDS
    if audio_seconds == 0:
        raise ValueError("measure_rtf needs at least one non-empty utterance")

    def run():
        for features, mask in batches:
            model(features, mask, layers=list(layers))
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up: allocator, kernels, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / audio_seconds


def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def build_depth_report(model, batches, tokenizer, schedules: Dict[str, Dict[int, List[int]]], dataset: str,
                       split: str, rtf_utterances: int = 20, batched_size: int = 8, repeats: int = 5,
                       measure_speed: bool = True) -> dict:
    """Measure every (strategy, depth): WER, CER (percent), parameters, and (with `measure_speed`) RTF at batch 1
    and batched; without it the report has no "rtf" entry (a second split of the same model on the same device)."""
    model.eval()
    layer_sets = [layers for schedule in schedules.values() for layers in schedule.values()]
    rates = {layers: subnetwork_error_rates(model, batches, tokenizer, layers)
             for layers in {tuple(x) for x in layer_sets}}
    utterances = [batch["input_features"][i, : int(batch["attention_mask"][i].sum())]
                  for batch in batches for i in range(batch["input_features"].shape[0])][:rtf_utterances]
    rtf_cache = {}
    records = []
    for strategy, schedule in schedules.items():
        for depth, layers in sorted(schedule.items()):
            # RTF depends on how many layers run, not which: measure once per depth.
            if measure_speed and depth not in rtf_cache:
                rtf_cache[depth] = (measure_rtf(model, utterances, layers, 1, repeats),
                                    measure_rtf(model, utterances, layers, batched_size, repeats))
            r = rates[tuple(layers)]
            record = {"strategy": strategy, "depth": depth, "layers": list(layers),
                      "wer": round(100 * r["wer"], 2), "cer": round(100 * r["cer"], 2),
                      "parameters": model.count_parameters(layers=layers)}
            if measure_speed:
                record.update({"rtf_batch1": rtf_cache[depth][0], f"rtf_batch{batched_size}": rtf_cache[depth][1]})
            records.append(record)
    device = next(model.parameters()).device
    report = {
        "dataset": dataset, "split": split,
        "utterances": sum(b["input_features"].shape[0] for b in batches),
        "hardware": hardware_description(device),
        "records": records,
    }
    if measure_speed:
        report["rtf"] = {"definition": "processing seconds / audio seconds, model forward only (features "
                                       f"precomputed), median of {repeats} runs after a warm-up",
                         "utterances": len(utterances), "batched_size": batched_size}
    return report


def svcca_of_layers(model, batches, max_frames: int = 20000):
    """(L+1)x(L+1) SVCCA similarity between the input of layer 1 and every layer output, on `batches`."""
    return svcca_matrix(collect_layer_outputs(model, batches, max_frames=max_frames))


def format_report_markdown(report: dict) -> str:
    speed = report.get("rtf")
    lines = [f"Per-depth results on {report['dataset']} / {report['split']} ({report['utterances']} utterances)"
             + (f"; RTF on {report['hardware']}, {speed['definition']}." if speed else "."), ""]
    for strategy in dict.fromkeys(r["strategy"] for r in report["records"]):
        header = "| depth | layers kept | WER % | CER % | parameters |"
        rule = "|---:|---|---:|---:|---:|"
        if speed:
            header += f" RTF (batch 1) | RTF (batch {speed['batched_size']}) |"
            rule += "---:|---:|"
        lines += [f"**{strategy}**", "", header, rule]
        for r in (r for r in report["records"] if r["strategy"] == strategy):
            line = (f"| {r['depth']} | {','.join(map(str, r['layers']))} | {r['wer']:.1f} | {r['cer']:.1f} | "
                    f"{r['parameters']:,} |")
            if speed:
                batched = r[f"rtf_batch{speed['batched_size']}"]
                line += f" {r['rtf_batch1']:.4f} | {batched:.4f} |"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def write_split_report(report: dict, output_dir: str) -> List[str]:
    """Write a further split's report as `depth_report_<split>.json` and `.md` next to the main one."""
    return _write_report_files(report, output_dir, f"depth_report_{report['split']}")


def _write_report_files(report: dict, output_dir: str, stem: str) -> List[str]:
    """`<stem>.json` (written to a temporary file and renamed: never half a file) and `<stem>.md`."""
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, f"{stem}.json")
    write_json(json_path, report, indent=2)
    md_path = os.path.join(output_dir, f"{stem}.md")
    with open(md_path, "w") as f:
        f.write(format_report_markdown(report) + "\n")
    return [json_path, md_path]


def plot_report(report: dict, similarity, output_dir: str) -> List[str]:
    """Write wer_vs_depth.png, rtf_vs_depth.png and svcca_heatmap.png; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    where = f"{report['dataset']} / {report['split']}"
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy in dict.fromkeys(r["strategy"] for r in report["records"]):
        rows = [r for r in report["records"] if r["strategy"] == strategy]
        ax.plot([r["depth"] for r in rows], [r["wer"] for r in rows], marker="o", label=strategy)
    ax.set(xlabel="encoder layers kept", ylabel="WER (%)", title=f"WER by depth, no fine-tuning\n{where}")
    ax.legend(title="pruning strategy")
    ax.grid(alpha=0.3)
    paths.append(os.path.join(output_dir, "wer_vs_depth.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    if "rtf" not in report:  # speed not measured (`--rtf_utterances 0`, or a further split)
        paths.append(_svcca_heatmap(similarity, output_dir, where))
        return paths
    batched = f"rtf_batch{report['rtf']['batched_size']}"
    depth_rows = {r["depth"]: r for r in report["records"]}
    depths = sorted(depth_rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(depths, [depth_rows[d]["rtf_batch1"] for d in depths], marker="o", label="batch size 1")
    ax.plot(depths, [depth_rows[d][batched] for d in depths], marker="s",
            label=f"batch size {report['rtf']['batched_size']}")
    ax.set(xlabel="encoder layers kept", ylabel="real-time factor (processing s / audio s)",
           title=f"Speed by depth on {report['hardware']}\nmodel forward only, median of runs")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)
    paths.append(os.path.join(output_dir, "rtf_vs_depth.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    paths.append(_svcca_heatmap(similarity, output_dir, where))
    return paths


def _svcca_heatmap(similarity, output_dir: str, where: str) -> str:
    import matplotlib.pyplot as plt

    size = len(similarity)
    labels = ["input"] + [str(i) for i in range(1, size)]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    image = ax.imshow(similarity, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(size), labels)
    ax.set_yticks(range(size), labels)
    ax.set(xlabel="layer output", ylabel="layer output",
           title=f"SVCCA similarity between layer outputs\n{where}")
    fig.colorbar(image, ax=ax, label="mean canonical correlation")
    path = os.path.join(output_dir, "svcca_heatmap.png")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_depth_report(report: dict, similarity, output_dir: str) -> List[str]:
    """Write depth_report.json, depth_report.md and the plots into `output_dir` (created); return the paths."""
    report = dict(report, svcca_matrix=[[round(float(x), 4) for x in row] for row in similarity])
    return _write_report_files(report, output_dir, "depth_report") + plot_report(report, similarity, output_dir)
