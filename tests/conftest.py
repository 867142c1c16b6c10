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


def padded_batch(lengths, num_mel_bins=16, seed=0):
    """Random features (batch, max(lengths), bins) with a matching attention mask; padding is random noise, not zeros,
    so tests catch any leak of padded frames into valid ones."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths), num_mel_bins, generator=generator)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1
    return features, mask


@pytest.fixture
def batch():
    return padded_batch([57, 40, 23])
