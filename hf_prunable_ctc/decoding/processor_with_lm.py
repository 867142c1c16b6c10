"""A processor that decodes CTC logits with pyctcdecode beam search and a KenLM n-gram LM, saved with the model.

    processor = PrunableCTCProcessorWithLM.from_lm("model_cards/prunable-ctc-small-synth", "lm/lm.bin")
    processor.save_pretrained(folder)            # with model.save_pretrained(folder): a folder with its LM
    AutoProcessor.from_pretrained(folder)        # this class again, decoder included
    pipeline("automatic-speech-recognition", model=folder)   # decodes with the LM (Transformers' "ctc_with_lm")

Why not Transformers' `Wav2Vec2ProcessorWithLM`: it accepts only the Wav2Vec2 and SeamlessM4T feature extractors
(this package has its own log-mel one) and is deprecated in Transformers 5. The folder it writes is the same: the
processor's files plus pyctcdecode's (``alphabet.json``, ``language_model/``), and a ``processor_class`` whose name
ends in "WithLM", which is what makes the stock ASR pipeline load pyctcdecode's decoder from the folder by itself.

Remote code: this file is copied next to the weights (with `beam_decoder`) and imports only transformers, numpy and
pyctcdecode, so `AutoProcessor.from_pretrained(folder, trust_remote_code=True)` works without this package.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
from transformers import AutoFeatureExtractor, AutoTokenizer
from transformers.processing_utils import ProcessorMixin

from .beam_decoder import build_beam_decoder, decoder_matches_tokenizer


class PrunableCTCProcessorWithLM(ProcessorMixin):
    """Feature extractor + CTC tokenizer + `pyctcdecode.BeamSearchDecoderCTC` (beam search, optionally with a KenLM
    n-gram LM).

    Args:
        feature_extractor: the model's feature extractor (any class `AutoFeatureExtractor` loads).
        tokenizer: the model's CTC tokenizer; the decoder's alphabet must list its tokens in id order.
        decoder: a `BeamSearchDecoderCTC`, e.g. from `beam_decoder.build_beam_decoder(tokenizer, lm_path)`.
    """

    feature_extractor_class = "AutoFeatureExtractor"
    tokenizer_class = "AutoTokenizer"

    def __init__(self, feature_extractor, tokenizer, decoder):
        from pyctcdecode import BeamSearchDecoderCTC

        super().__init__(feature_extractor, tokenizer)
        if not isinstance(decoder, BeamSearchDecoderCTC):
            raise TypeError(f"decoder must be a pyctcdecode.BeamSearchDecoderCTC, got {type(decoder).__name__}")
        mismatched = decoder_matches_tokenizer(decoder, tokenizer)
        if mismatched:
            raise ValueError(f"the decoder's alphabet does not match the tokenizer's vocabulary (labels "
                             f"{mismatched[:10]} differ): build it with build_beam_decoder(tokenizer, ...)")
        self.decoder = decoder

    @classmethod
    def from_lm(cls, model_folder: str | os.PathLike, lm_path: str | os.PathLike | None = None,
                alpha: float = 0.5, beta: float = 1.0, **kwargs) -> "PrunableCTCProcessorWithLM":
        """The processor of `model_folder` (its feature extractor and tokenizer) with a decoder over `lm_path`
        (a KenLM ARPA or binary file; None: beam search without an LM). `kwargs` go to both `from_pretrained`."""
        tokenizer = AutoTokenizer.from_pretrained(model_folder, **kwargs)
        feature_extractor = AutoFeatureExtractor.from_pretrained(model_folder, **kwargs)
        return cls(feature_extractor, tokenizer, build_beam_decoder(tokenizer, lm_path, alpha=alpha, beta=beta))

    # Transformers' own processor with an LM extends both methods the same way: the decoder is not one of the
    # sub-processors `ProcessorMixin` knows how to save and load.
    def save_pretrained(self, save_directory, **kwargs):
        """Save the processor's files, the feature extractor's ``preprocessor_config.json`` (read by the stock
        pipeline to find this class's name) and pyctcdecode's alphabet and language model into `save_directory`."""
        saved = super().save_pretrained(save_directory, **kwargs)
        self.feature_extractor.save_pretrained(save_directory)
        # The stock pipeline loads pyctcdecode's decoder when the feature extractor's settings name a processor
        # "...WithLM": Transformers 5 reads them from processor_config.json (nested), older releases from
        # preprocessor_config.json, and neither save writes the name there.
        _add_processor_class(os.path.join(save_directory, "processor_config.json"), "feature_extractor",
                             type(self).__name__)
        _add_processor_class(os.path.join(save_directory, "preprocessor_config.json"), None, type(self).__name__)
        self.decoder.save_to_dir(os.fspath(save_directory))
        return saved

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "PrunableCTCProcessorWithLM":
        """Load a folder written by `save_pretrained` (or a Hub repo holding one)."""
        from pyctcdecode import BeamSearchDecoderCTC

        path = os.fspath(pretrained_model_name_or_path)
        for name in ("_from_auto", "_from_pipeline"):
            kwargs.pop(name, None)
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        feature_extractor = AutoFeatureExtractor.from_pretrained(path, **kwargs)
        if os.path.isdir(path):
            decoder = BeamSearchDecoderCTC.load_from_dir(path)
        else:
            decoder = BeamSearchDecoderCTC.load_from_hf_hub(path)
        return cls(feature_extractor, tokenizer, decoder)

    def __call__(self, audio=None, sampling_rate=None, text=None, **kwargs):
        """Features of `audio` (the feature extractor's call), with ``labels`` from `text` when both are given."""
        if audio is None and text is None:
            raise ValueError("give audio, text or both")
        inputs = self.feature_extractor(audio, sampling_rate=sampling_rate, **kwargs) if audio is not None else None
        labels = self.tokenizer(text)["input_ids"] if text is not None else None
        if inputs is None:
            return {"input_ids": labels}
        if labels is not None:
            inputs["labels"] = labels
        return inputs

    def decode(self, logits, **decoder_kwargs) -> str:
        """Text of one utterance's logits (frames, vocab), a numpy array or tensor; `decoder_kwargs` go to
        `BeamSearchDecoderCTC.decode_beams` (``beam_width``, ``hotwords``, ...). The best beam of `decode_beams`, as
        the ASR pipeline takes it (pyctcdecode's own `decode` prunes beam histories and can differ)."""
        return self.decoder.decode_beams(_numpy(logits), **decoder_kwargs)[0][0]

    def batch_decode(self, logits, output_lengths: Sequence[int] | None = None, **decoder_kwargs) -> list[str]:
        """Texts of a batch of logits (batch, frames, vocab); `output_lengths` (the model's) cuts each utterance's
        padded frames off before decoding."""
        logits = _numpy(logits)
        lengths = [logits.shape[1]] * len(logits) if output_lengths is None else [int(n) for n in output_lengths]
        return [self.decode(row[:length], **decoder_kwargs) for row, length in zip(logits, lengths)]


def _add_processor_class(path: str, key: str | None, name: str) -> None:
    with open(path, encoding="utf-8") as f:
        settings = json.load(f)
    (settings[key] if key else settings)["processor_class"] = name
    with open(path, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2, sort_keys=True)
        f.write("\n")


def _numpy(logits) -> np.ndarray:
    if hasattr(logits, "detach"):
        logits = logits.detach().float().cpu().numpy()
    return np.asarray(logits, dtype=np.float32)


# save_pretrained then writes `auto_map: {"AutoProcessor": ...}` and copies this file (and beam_decoder) next to the
# weights.
PrunableCTCProcessorWithLM.register_for_auto_class("AutoProcessor")
