"""Greedy vs beam search vs beam search with an n-gram LM, per depth: error rates, decoding cost, and how much of the
accuracy a pruned depth loses the LM wins back.

The input is each utterance's CTC logits per depth (`depth_evaluation.per_depth_logits`), cut to its output length
as numpy arrays; decoders are plain callables ``logits (frames, vocab) -> text``, so greedy (`runtime.ctc_text`) and
pyctcdecode's beam search are timed the same way.

Definitions used in the record and its README:
- gap(d) = WER_greedy(d) - WER_greedy(full): what pruning to d costs with greedy decoding;
- recovered(d) = (WER_greedy(d) - WER_lm(d)) / gap(d): the share of that cost the LM wins back at depth d (1 or more:
  depth d with the LM is as good as full depth greedy); undefined where gap(d) <= 0;
- gap_lm(d) = WER_lm(d) - WER_lm(full): the cost of pruning when both depths decode with the LM.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Mapping, Sequence

import numpy as np

from .metrics import character_error_rate, word_error_rate

Decoder = Callable[[np.ndarray], str]


def decode_timed(decode: Decoder, logits_rows: Sequence[np.ndarray]) -> tuple[list[str], float]:
    """``(texts, cpu_seconds)``: `decode` applied to each utterance's (frames, vocab) logits, and the CPU time of
    this process it took (CPU time rather than wall time: the measurement shares its cores with other work)."""
    start = time.process_time()
    texts = [decode(row) for row in logits_rows]
    return texts, time.process_time() - start


def compare_decoders(logits_by_depth: Mapping[int, Sequence[np.ndarray]], references: Sequence[str],
                     audio_seconds: float, decoders: Mapping[str, Decoder]) -> Dict[str, Dict[int, dict]]:
    """Per decoder and depth: WER and CER (percent) and decoding milliseconds per 10 s of audio.

    Args:
        logits_by_depth: depth -> one (frames, vocab) array per utterance, in the order of `references`.
        references: the transcripts. audio_seconds: total duration of the utterances.
        decoders: name -> callable, e.g. ``{"greedy": ..., "beam": ..., "beam_lm": ...}``.
    """
    results: Dict[str, Dict[int, dict]] = {name: {} for name in decoders}
    for depth, rows in sorted(logits_by_depth.items()):
        for name, decode in decoders.items():
            texts, seconds = decode_timed(decode, rows)
            results[name][depth] = {
                "wer": round(100 * word_error_rate(references, texts), 2),
                "cer": round(100 * character_error_rate(references, texts), 2),
                "decode_ms_per_10s": round(1000 * seconds * 10 / audio_seconds, 3),
            }
    return results


def depth_gaps(greedy: Mapping[int, float], with_lm: Mapping[int, float]) -> Dict[int, dict]:
    """gap, recovered and gap_lm (see the module docstring) per depth, from WERs keyed by depth (the deepest key is
    the full depth)."""
    full = max(greedy)
    out = {}
    for depth in sorted(greedy):
        gap = greedy[depth] - greedy[full]
        out[depth] = {
            "gap": round(gap, 2),
            "recovered": round((greedy[depth] - with_lm[depth]) / gap, 3) if gap > 0 else None,
            "gap_lm": round(with_lm[depth] - with_lm[full], 2),
        }
    return out


def render_decoding_readme(record: dict) -> str:
    """The Markdown README of a `results/decoding/results.json` record: settings, one table per split, commands."""
    settings = record["settings"]
    lines = ["<!-- rendered from results.json by training/experiments/decoding.py: edit that, not this -->",
             "# Decoding beyond greedy, per depth", "",
             f"Model `{settings['model']}` on `{settings['corpus']}`; LM `{settings['lm']}` "
             f"({record['lm']['order']}-gram, {record['lm']['sentences']:,d} sentences of "
             f"{', '.join(record['lm'].get('text_sources', [record['lm'].get('text', '?')]))}, "
             f"{record['lm']['removed_sentences']} held-out sentences removed). Beam width {settings['beam_width']}, "
             f"LM weight alpha {settings['alpha']}, word bonus beta {settings['beta']} (chosen on "
             f"{settings['tune_utterances']} validation utterances at full depth, grid in results.json). "
             "WER/CER in percent; decoding cost is CPU milliseconds per 10 s of audio on one thread (decoding only, "
             "not the model).", "",
             "recovered = (WER greedy - WER beam+LM) / (WER greedy at this depth - WER greedy at full depth): the share "
             "of the accuracy lost to pruning that the LM wins back (1.0 or more: as good as the full depth, greedy).",
             ""]
    for split, result in record["splits"].items():
        lines += [f"## {split} ({result['utterances']} utterances, {result['audio_seconds'] / 60:.1f} min)", "",
                  "| depth | greedy WER | beam WER | beam+LM WER | greedy CER | beam+LM CER | recovered | "
                  "ms/10 s greedy | ms/10 s beam | ms/10 s beam+LM |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for depth in sorted(result["greedy"], key=int):
            g, b, lm, gap = (result[name][depth] for name in ("greedy", "beam", "beam_lm", "gaps"))
            recovered = "—" if gap["recovered"] is None else f"{gap['recovered']:.2f}"
            lines.append(f"| {depth} | {g['wer']:.2f} | {b['wer']:.2f} | {lm['wer']:.2f} | {g['cer']:.2f} | "
                         f"{lm['cer']:.2f} | {recovered} | {g['decode_ms_per_10s']:.2f} | "
                         f"{b['decode_ms_per_10s']:.1f} | {lm['decode_ms_per_10s']:.1f} |")
        lines.append("")
    lines += ["![WER by depth, greedy and beam search with and without the LM](wer_by_depth.png)", "",
              "## Commands", "", "```bash", *record["commands"], "```", ""]
    return "\n".join(lines)


def plot_decoding(record: dict, path: str) -> None:
    """WER by depth per split: greedy, beam, beam + LM (one panel per split)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(record["splits"])
    figure, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.6), squeeze=False)
    for axis, split in zip(axes[0], splits):
        result = record["splits"][split]
        for name, label, style in (("greedy", "greedy", "o-"), ("beam", "beam, no LM", "s--"),
                                   ("beam_lm", "beam + LM", "^-")):
            depths = sorted(result[name], key=int)
            axis.plot([int(d) for d in depths], [result[name][d]["wer"] for d in depths], style, label=label)
        axis.set_title(split)
        axis.set_xlabel("depth (layers)")
        axis.set_ylabel("WER %")
        axis.grid(alpha=0.3)
    axes[0][0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
