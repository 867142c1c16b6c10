"""Tables of a Whisper-encoder CTC model beside Whisper itself, rendered from the JSON that
`training/experiments/evaluate_whisper_ctc.py` writes (`whisper_comparison.json` in the model folder, which the
model card shows, and `results/real_speech/whisper_ctc.json`).

The JSON holds, per set of recordings, the CTC model's WER at every depth and Whisper's greedy WER under the same
normalisation, and the latency of each depth and of Whisper's greedy decoding on the same 10 s of speech.
"""

from __future__ import annotations

import json
import os
from typing import Optional

COMPARISON_FILE = "whisper_comparison.json"


def wer_table(result: dict) -> str:
    """Markdown: one row per set, WER per depth, then Whisper's greedy WER on the same recordings."""
    depths = result["depths"]
    lines = ["| set | utterances | " + " | ".join(f"{d} layers" for d in depths) + " | Whisper greedy |",
             "| --- | ---: | " + " | ".join("---:" for _ in depths) + " | ---: |"]
    for name, row in result["wer"].items():
        whisper = result["whisper_wer"].get(name)
        lines.append(f"| {name} | {row['utterances']} | "
                     + " | ".join(f"{100 * row['per_depth'][str(d)]:.1f}%" for d in depths)
                     + f" | {'' if whisper is None else f'{100 * whisper:.1f}%'} |")
    return "\n".join(lines)


def latency_table(result: dict) -> str:
    """Markdown: seconds per 10 s of speech per runtime (fastest and median round) and the speed-up over Whisper."""
    latency = result["latency_10s"]
    whisper_s = latency["whisper_greedy"]["min_s"]
    lines = ["| runtime | s per 10 s (fastest) | median | speed-up over Whisper greedy |",
             "| --- | ---: | ---: | ---: |"]
    for name, timing in latency.items():
        if isinstance(timing, dict):
            lines.append(f"| {name} | {timing['min_s']:.3f} | {timing['median_s']:.3f} | "
                         f"{whisper_s / timing['min_s']:.1f}x |")
    return "\n".join(lines)


def latency_note(result: dict) -> str:
    latency = result["latency_10s"]
    return (f"Latency for {latency['audio_seconds']:g} s of real read speech ({', '.join(latency['recordings'])}), "
            f"features included, {result['machine']['threads']} CPU threads ({result['machine']['processor']}), "
            f"fastest of {latency['rounds']} interleaved rounds:")


def comparison_section(results_dir: str) -> Optional[str]:
    """The model card's comparison with Whisper from `whisper_comparison.json` in `results_dir`, or None."""
    path = os.path.join(results_dir, COMPARISON_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        result = json.load(f)
    return "\n\n".join([
        f"Greedy CTC decoding at every depth beside {result['whisper_name']}'s own greedy decoding (Transformers "
        "`generate`) on the same recordings, WER after the package's `normalize_transcript` on both sides. "
        f"Real speech: {result['real_speech_source']}.",
        wer_table(result), latency_note(result), latency_table(result)])
