import json

import pytest
import torch

from hf_prunable_ctc import PrunableCTCConfig, PrunableCTCForCTC

# Tests share 2 CPU cores with whatever else runs: keep torch from oversubscribing them.
torch.set_num_threads(2)


def tiny_config(**overrides) -> PrunableCTCConfig:
    """A model small enough for fast tests, with all regularisers off unless asked."""
    settings = dict(
        vocab_size=12,
        num_mel_bins=16,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        conv_kernel_size=5,
        subsampling_conv_channels=16,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    settings.update(overrides)
    return PrunableCTCConfig(**settings)


def tiny_model(seed=0, **overrides) -> PrunableCTCForCTC:
    torch.manual_seed(seed)
    return PrunableCTCForCTC(tiny_config(**overrides)).eval()


def save_model_folder(path, with_metrics=False, **overrides) -> PrunableCTCForCTC:
    """Save a tiny model with the package's tokenizer and feature extractor to `path`, as training leaves a folder
    (80 mel bins, the default vocabulary); with `with_metrics`, also a `per_depth_metrics.json` measuring every depth
    of its schedule (WER 50 - depth, CER 20 - depth), which `publish` turns into a card. Returns the model."""
    from hf_prunable_ctc.data.features import make_feature_extractor, save_processor
    from hf_prunable_ctc.data.vocabulary import make_tokenizer

    tokenizer = make_tokenizer()
    model = tiny_model(**{"num_mel_bins": 80, "vocab_size": len(tokenizer), **overrides})
    model.save_pretrained(path)
    save_processor(make_feature_extractor(), tokenizer, path)
    if with_metrics:
        depths = {str(d): {"layers": layers, "wer": 50.0 - d, "cer": 20.0 - d,
                           "parameters": model.count_parameters(layers=layers)}
                  for d, layers in model.pruning_schedule().items()}
        (path / "per_depth_metrics.json").write_text(json.dumps({"split": "test", "depths": depths}))
    return model


def padded_batch(lengths, num_mel_bins=16, seed=0):
    """Random features (batch, max(lengths), bins) with a matching attention mask; padding is random noise, not zeros,
    so tests catch any leak of padded frames into valid ones."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths), num_mel_bins, generator=generator)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1
    return features, mask


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (tiny models: a second thread only adds contention)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def batch():
    return padded_batch([57, 40, 23])
