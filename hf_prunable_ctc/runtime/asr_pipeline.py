"""The ASR pipeline with depth, compute budget or early exit chosen per call, with no reload.

    from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline

    asr = prunable_asr_pipeline(model="model_cards/prunable-ctc-small-synth")
    asr(audio)                              # full depth
    asr(audio, num_layers=4)                # first 4 layers
    asr(audio, layers=[1, 2, 4])            # these layers
    asr(audio, rtf_budget=0.01)             # deepest depth of the pruning schedule within 0.01 s per audio second
    asr(audio, early_exit_threshold=0.9)    # each chunk stops at its first confident intermediate-CTC layer
    asr(audio, chunk_length_s=20, num_layers=4)   # works with chunking
    asr(audio, num_layers=4, decoder_kwargs={"beam_width": 32})   # a folder saved with an LM, or decoder=...
    asr("speech.flac"); asr({"raw": samples_8k, "sampling_rate": 8000})   # files, bytes, any rate: no ffmpeg

Files, bytes and audio at other sampling rates are decoded and resampled by the package (libsndfile + soxr), so
neither the `ffmpeg` binary nor torchaudio is needed; padded frames of a batch decode to nothing (the model's logits
are certain blanks there), so `batch_size` never changes a transcript.

With a pyctcdecode decoder (`decoder=`, or a folder saved by `PrunableCTCProcessorWithLM`) the pipeline decodes
the chosen depth's logits with beam search and the n-gram LM, as the stock pipeline's "ctc_with_lm" does.

`rtf_budget` uses `hf_prunable_ctc.runtime.budget.depth_for_budget` with the pipeline's `latency_profile` (measured
with `profile_latency` on first use, and cached in the user's cache folder, see `runtime.budget`); the chosen
depth runs the layers `model.pruning_schedule()[depth]` that the profile timed, and the result holds it as
`"depth"`. With `early_exit_threshold`, the result also holds `"exit_depths"`: the layer each chunk (one entry without
chunking) stopped at.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from transformers import AutomaticSpeechRecognitionPipeline, pipeline

from ..data.audio import load_audio
from ..early_exit import check_threshold
from .budget import depth_for_budget, profile_latency
from .ctc_text import FastDecodingTokenizer


class PrunableASRPipeline(AutomaticSpeechRecognitionPipeline):
    """`AutomaticSpeechRecognitionPipeline` whose call also takes `num_layers`, `layers`, `rtf_budget` or
    `early_exit_threshold` (at most one), for that call only.

    Args:
        latency_profile: a profile from `profile_latency` for `rtf_budget` calls; measured on first use if None.
        Other arguments: those of `AutomaticSpeechRecognitionPipeline`.
    """

    def __init__(self, *args, latency_profile: dict[str, Any] | None = None, **kwargs):
        self.latency_profile = latency_profile
        super().__init__(*args, **kwargs)
        # "ctc_with_lm": a pyctcdecode decoder (given as `decoder=`, or found in a folder saved with an LM).
        if self.type not in ("ctc", "ctc_with_lm") or not hasattr(self.model, "pruning_schedule"):
            raise ValueError(f"PrunableASRPipeline needs a PrunableCTCForCTC model with a CTC decoder, got "
                             f"{type(self.model).__name__} (pipeline type {self.type!r}): use "
                             "transformers.pipeline for other models")
        # The same text as the tokenizer's decode, ~30x faster (see ctc_text): 0.9 ms of a 10-s call at any depth.
        self.tokenizer = FastDecodingTokenizer(self.tokenizer)

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        # One recording at a time (an array, tensor, path, bytes or dict; `Pipeline.__call__` passes a single input
        # here as a one-item list, its parameters already fused): Transformers sends even that through a DataLoader
        # and three iterators, about 1 ms per call on one CPU thread (as much as the decoding saved above, and 7% of
        # a 10-s call at depth 1); `ChunkPipeline.run_single` gives the same output directly. Longer lists,
        # generators, datasets, workers and batching keep Transformers' path.
        if (isinstance(inputs, list) and len(inputs) == 1 and not num_workers and batch_size == 1
                and isinstance(inputs[0], (np.ndarray, torch.Tensor, str, bytes, dict))):
            return iter([self.run_single(inputs[0], preprocess_params, forward_params, postprocess_params)])
        return super().get_iterator(inputs, num_workers, batch_size, preprocess_params, forward_params,
                                    postprocess_params)

    def preprocess(self, inputs, chunk_length_s=0, stride_length_s=None):
        inputs = self.decoded(inputs)
        if isinstance(inputs, np.ndarray) and inputs.size == 0:
            # The stock chunker yields no chunk for empty audio (and the pipeline then fails); unchunked, it is one
            # input of zero frames, whose transcript is empty.
            chunk_length_s = 0
        return super().preprocess(inputs, chunk_length_s, stride_length_s)

    def decoded(self, inputs):
        """`inputs` as the stock pipeline takes it without the `ffmpeg` binary or torchaudio: file paths, encoded
        bytes and `{"bytes", "path"}` dicts are decoded, and `{"raw"/"array", "sampling_rate"}` at another rate is
        resampled, with the package's decoder and resampler (`data.audio.load_audio`: libsndfile and soxr). URLs and
        audio already at the extractor's rate are passed on untouched."""
        target = self.feature_extractor.sampling_rate
        if isinstance(inputs, str) and inputs.startswith(("http://", "https://")):
            return inputs
        if isinstance(inputs, (str, os.PathLike, bytes, bytearray, memoryview)):
            return load_audio(inputs, sampling_rate=target)
        if not isinstance(inputs, dict):
            return inputs
        if "raw" not in inputs and "array" not in inputs:
            if "bytes" in inputs or "path" in inputs:
                return load_audio(inputs, sampling_rate=target)
            return inputs  # the stock pipeline names the keys it wants
        rate = inputs.get("sampling_rate")
        if rate is None or int(rate) == target:
            return inputs
        array = inputs["raw"] if "raw" in inputs else inputs["array"]
        if isinstance(array, torch.Tensor):
            array = array.cpu().numpy()
        resampled = {key: value for key, value in inputs.items() if key not in ("raw", "array", "path")}
        resampled.update(raw=load_audio({"array": array, "sampling_rate": rate}, sampling_rate=target),
                         sampling_rate=target)
        if inputs.get("stride") is not None:
            # A stride is counted in the input's samples: at the new rate it covers the same seconds.
            resampled["stride"] = tuple(int(round(side * target / int(rate))) for side in inputs["stride"])
        return resampled

    def _sanitize_parameters(self, num_layers: int | None = None, layers: Sequence[int] | None = None,
                             rtf_budget: float | None = None, early_exit_threshold: float | None = None,
                             **asr_parameters):
        preprocess, forward, postprocess = super()._sanitize_parameters(**asr_parameters)
        given = {name: value for name, value in (("num_layers", num_layers), ("layers", layers),
                                                 ("rtf_budget", rtf_budget),
                                                 ("early_exit_threshold", early_exit_threshold))
                 if value is not None}
        if len(given) > 1:
            raise ValueError(f"give at most one of num_layers, layers, rtf_budget, early_exit_threshold per call, "
                             f"got {sorted(given)}")
        if rtf_budget is not None:
            if self.latency_profile is None:
                self.latency_profile = profile_latency(self.model)
            depth = depth_for_budget(self.model, rtf=rtf_budget, profile=self.latency_profile)
            given = {"layers": self.model.pruning_schedule()[depth]}
            postprocess["budget_depth"] = depth
        elif num_layers is not None or layers is not None:
            # Fail at the call, before any audio is decoded, with the model's own message.
            self.model.encoder.layers_to_run(num_layers, layers)
        elif early_exit_threshold is not None:
            check_threshold(early_exit_threshold)
        forward["depth_options"] = given
        return preprocess, forward, postprocess

    def _forward(self, model_inputs, return_timestamps=False, depth_options=None, **generate_kwargs):
        if not depth_options:
            return super()._forward(model_inputs, return_timestamps=return_timestamps, **generate_kwargs)
        # The CTC branch of AutomaticSpeechRecognitionPipeline._forward, with the depth options passed on.
        attention_mask = model_inputs.pop("attention_mask", None)
        stride = model_inputs.pop("stride", None)
        model_inputs.pop("num_frames", None)
        is_last = model_inputs.pop("is_last")
        features = model_inputs.pop(self.model.main_input_name)
        outputs = self.model(features, attention_mask=attention_mask, **depth_options)
        # Beam search reads the logits in `postprocess`; greedy decoding needs only each frame's best token.
        if self.type == "ctc_with_lm":
            out = {"logits": outputs.logits}
        else:
            out = {"tokens": outputs.logits.argmax(dim=-1)}
        if outputs.exit_depths is not None:
            out["exit_depths"] = outputs.exit_depths
        if stride is not None:
            ratio = 1 / self._align_to
            if isinstance(stride, tuple):
                out["stride"] = _rescale_stride([stride], ratio)[0]
            else:
                out["stride"] = _rescale_stride(stride, ratio)
        return {"is_last": is_last, **out, **model_inputs}

    def postprocess(self, model_outputs, budget_depth=None, **postprocess_parameters):
        depths = [int(depth) for output in model_outputs if "exit_depths" in output
                  for depth in output.pop("exit_depths").reshape(-1).tolist()]
        result = super().postprocess(model_outputs, **postprocess_parameters)
        if depths:
            result["exit_depths"] = depths
        if budget_depth is not None:
            result["depth"] = budget_depth
        return result


def _rescale_stride(stride, ratio):
    from transformers.pipelines.automatic_speech_recognition import rescale_stride

    return rescale_stride(stride, ratio)


def prunable_asr_pipeline(model, latency_profile: dict[str, Any] | None = None, decoder=None, **pipeline_kwargs
                          ) -> PrunableASRPipeline:
    """`transformers.pipeline("automatic-speech-recognition", ...)` built as a `PrunableASRPipeline`.

    Args:
        model: a model folder, Hub id or loaded `PrunableCTCForCTC`.
        latency_profile: see `PrunableASRPipeline`.
        decoder: a `pyctcdecode.BeamSearchDecoderCTC` (`decoding.beam_decoder.build_beam_decoder`): beam search,
            with its LM if it has one, instead of greedy decoding or the LM a folder was saved with.
        pipeline_kwargs: passed to `transformers.pipeline` (tokenizer, feature_extractor, device, chunk_length_s,
            trust_remote_code, ...), which rejects unknown ones.
    """
    if decoder is not None:
        pipeline_kwargs["decoder"] = decoder
        if isinstance(model, (str, os.PathLike)) and pipeline_kwargs.get("feature_extractor") is None:
            # Transformers loads the decoder saved in a folder while it loads the folder's feature extractor, and
            # that one replaces a `decoder=` given here; with the extractor loaded first, the one given is kept.
            from transformers import AutoFeatureExtractor

            pipeline_kwargs["feature_extractor"] = AutoFeatureExtractor.from_pretrained(model)
    return pipeline("automatic-speech-recognition", model=model, pipeline_class=PrunableASRPipeline,
                    latency_profile=latency_profile, **pipeline_kwargs)
