"""Greedy Whisper transcripts from a converted Transformers model and from CTranslate2, on the same features.

A conversion is right when the two runtimes agree: same log-mel features in (Whisper's 30 s windows, computed
once by the Transformers feature extractor), same greedy token ids out. CTranslate2 runs in float32 here
(`compute_type="float32"`), so a float16 or int8 model file is widened/dequantised by CTranslate2 itself, exactly as
the converter does, and the two should differ only by float32 rounding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def log_mel_features(feature_extractor, audios: Sequence[np.ndarray], sampling_rate: int = 16000) -> np.ndarray:
    """Whisper's input: float32 ``(batch, n_mels, 3000)``, each recording padded (or cut) to 30 s."""
    return feature_extractor(list(audios), sampling_rate=sampling_rate, return_tensors="np").input_features.astype(
        np.float32)


def ct2_prompt(generation_config) -> list[int]:
    """The decoder prompt Transformers' Whisper `generate` uses without timestamps: start of transcript, then
    (multilingual models) English and "transcribe", then no-timestamps."""
    prompt = [generation_config.decoder_start_token_id]
    if generation_config.is_multilingual:
        prompt += [generation_config.lang_to_id["<|en|>"], generation_config.task_to_id["transcribe"]]
    return prompt + [generation_config.no_timestamps_token_id]


def _until_end(ids: Sequence[int], end_id: int) -> list[int]:
    ids = [int(i) for i in ids]
    return ids[:ids.index(end_id)] if end_id in ids else ids


def transformers_greedy(model, features: np.ndarray, max_new_tokens: int | None = None) -> list[list[int]]:
    """Greedy `generate` token ids per utterance: the text tokens after the prompt, up to the end of text."""
    import torch

    with torch.no_grad():
        options = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
        output = model.generate(torch.from_numpy(features), do_sample=False, num_beams=1, **options)
    prompt = ct2_prompt(model.generation_config)
    end = model.generation_config.eos_token_id
    results = []
    for ids in output.tolist():
        # Transformers 5 returns only the generated tokens; older releases start with the prompt.
        if ids[:len(prompt)] == prompt:
            ids = ids[len(prompt):]
        results.append(_until_end(ids, end))
    return results


def ct2_greedy(ct2_whisper, features: np.ndarray, prompt: list[int], max_new_tokens: int = 224) -> list[list[int]]:
    """Greedy CTranslate2 `generate` token ids per utterance (prompt and end of text excluded), at most
    `max_new_tokens` of them."""
    import ctranslate2

    # CTranslate2 generates at most half its `max_length` (openai-whisper's limit of half the text context), and
    # at most `max_length` minus the prompt: twice the number wanted gives exactly that number.
    max_length = max(2 * max_new_tokens, max_new_tokens + len(prompt))
    results = ct2_whisper.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)),
                                   [prompt] * len(features), beam_size=1, max_length=max_length)
    return [list(map(int, result.sequences_ids[0])) for result in results]


def timed(run: Callable[[], Any]) -> tuple[Any, float]:
    """`run()` and the wall-clock seconds it took."""
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def compare_greedy(model, processor, ct2_whisper, audios: Sequence[np.ndarray], names: Sequence[str],
                   sampling_rate: int = 16000) -> dict[str, Any]:
    """Transcribe each recording one at a time with both runtimes (greedy, no timestamps) and compare.

    Returns:
        ``{"utterances": [{"name", "seconds", "transformers", "ctranslate2", "same_tokens", "same_text",
        "transformers_s", "ctranslate2_s"}, ...], "identical_tokens", "identical_text", "count", "audio_seconds",
        "transformers_s_per_10s_audio", "ctranslate2_s_per_10s_audio"}``; times are wall-clock seconds per
        utterance, features included, after one untimed warm-up call each; the per-10 s figures divide their sum
        by the audio's length (Whisper encodes a full 30 s window whatever the length, so short utterances cost
        more per second of audio than long ones).
    """
    tokenizer = processor.tokenizer
    prompt = ct2_prompt(model.generation_config)
    # openai-whisper's and CTranslate2's limit (half the decoder's context, 224 tokens): a recording on which the
    # model loops ends at the same length in both runtimes.
    max_new_tokens = model.config.max_target_positions // 2
    if audios:  # the first call of each runtime allocates and plans: keep it out of the times
        warm_up = log_mel_features(processor.feature_extractor, audios[:1], sampling_rate)
        transformers_greedy(model, warm_up, max_new_tokens)
        ct2_greedy(ct2_whisper, warm_up, prompt, max_new_tokens)
    utterances = []
    for audio, name in zip(audios, names):
        hf_ids, hf_seconds = timed(lambda: transformers_greedy(
            model, log_mel_features(processor.feature_extractor, [audio], sampling_rate), max_new_tokens)[0])
        ct2_ids, ct2_seconds = timed(lambda: ct2_greedy(
            ct2_whisper, log_mel_features(processor.feature_extractor, [audio], sampling_rate), prompt,
            max_new_tokens)[0])
        hf_text = tokenizer.decode(hf_ids, skip_special_tokens=True).strip()
        ct2_text = tokenizer.decode(ct2_ids, skip_special_tokens=True).strip()
        utterances.append({"name": name, "seconds": round(len(audio) / sampling_rate, 3), "transformers": hf_text,
                           "ctranslate2": ct2_text, "same_tokens": hf_ids == ct2_ids, "same_text": hf_text == ct2_text,
                           "transformers_s": round(hf_seconds, 4), "ctranslate2_s": round(ct2_seconds, 4)})
    audio_seconds = sum(u["seconds"] for u in utterances)
    return {
        "count": len(utterances),
        "identical_tokens": sum(u["same_tokens"] for u in utterances),
        "identical_text": sum(u["same_text"] for u in utterances),
        "audio_seconds": round(audio_seconds, 3),
        "transformers_s_per_10s_audio": round(10 * sum(u["transformers_s"] for u in utterances) / audio_seconds, 4),
        "ctranslate2_s_per_10s_audio": round(10 * sum(u["ctranslate2_s"] for u in utterances) / audio_seconds, 4),
        "utterances": utterances,
    }


def word_error_rates(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Corpus WER (fractions) of `predictions` under two normalisations:

    - ``"normalized"``: the package's `normalize_transcript` on both sides (upper case, punctuation out), as the
      package scores its own models; numerals stay as written, so Whisper's "10 of clubs" against "TEN OF CLUBS"
      counts an error;
    - ``"whisper_normalized"``: Whisper's `EnglishTextNormalizer` (numbers as digits, British spellings kept:
      no spelling table), the normalisation Whisper's published WERs use.
    """
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    from ..data.text import normalize_transcript
    from ..evaluation.metrics import word_error_rate

    whisper_normalizer = EnglishTextNormalizer({})
    return {
        "normalized": word_error_rate([normalize_transcript(t) for t in references],
                                      [normalize_transcript(t) for t in predictions]),
        "whisper_normalized": word_error_rate([whisper_normalizer(t) for t in references],
                                              [whisper_normalizer(t) for t in predictions]),
    }


def check_against_references(model, processor, ct2_whisper, recordings: Sequence[tuple[str, np.ndarray, str]],
                             sampling_rate: int = 16000) -> dict[str, Any]:
    """`compare_greedy` on ``(name, samples, reference transcript)`` triples, plus each runtime's word error rates
    (`word_error_rates`) and each utterance's reference."""
    names, audios, references = zip(*recordings) if recordings else ((), (), ())
    result = compare_greedy(model, processor, ct2_whisper, audios, names, sampling_rate)
    for utterance, reference in zip(result["utterances"], references):
        utterance["reference"] = reference
    result["wer"] = {runtime: word_error_rates(references, [u[runtime] for u in result["utterances"]])
                     for runtime in ("transformers", "ctranslate2")}
    return result


def greedy_latency(model, processor, ct2_whisper, audio: np.ndarray, rounds: int = 5,
                   sampling_rate: int = 16000) -> dict[str, Any]:
    """Wall-clock seconds to transcribe `audio` greedily (features included), each runtime once per round,
    alternating, after one untimed call each. The minimum over rounds is the figure to compare on a shared
    machine: other load only ever adds time. Returns ``{"audio_seconds", "rounds", "tokens", "transformers":
    {"min_s", "median_s", "all_s"}, "ctranslate2": {...}}``."""
    prompt = ct2_prompt(model.generation_config)
    max_new_tokens = model.config.max_target_positions // 2
    runs = {
        "transformers": lambda: transformers_greedy(
            model, log_mel_features(processor.feature_extractor, [audio], sampling_rate), max_new_tokens)[0],
        "ctranslate2": lambda: ct2_greedy(
            ct2_whisper, log_mel_features(processor.feature_extractor, [audio], sampling_rate), prompt,
            max_new_tokens)[0],
    }
    tokens = {name: run() for name, run in runs.items()}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            seconds[name].append(timed(run)[1])
    result: dict[str, Any] = {"audio_seconds": round(len(audio) / sampling_rate, 3), "rounds": rounds,
                              "tokens": {name: len(ids) for name, ids in tokens.items()}}
    for name, values in seconds.items():
        result[name] = {"min_s": round(min(values), 4), "median_s": round(float(np.median(values)), 4),
                        "all_s": [round(value, 4) for value in values]}
    return result
