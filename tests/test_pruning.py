import os

import pytest
import torch

from conftest import tiny_config, tiny_model
from hf_prunable_ctc import PRUNING_STRATEGIES, PrunableCTCConfig, PrunableCTCForCTC, register_pruning_strategy


def without_path(config):
    return {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}


def logits(model, batch, **kwargs):
    with torch.no_grad():
        return model(*batch, **kwargs).logits


@pytest.mark.parametrize("encoder_type", ["transformer", "conformer"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_prune_to_equals_num_layers(encoder_type, depth, batch):
    model = tiny_model(encoder_type=encoder_type, interctc_layers=[1, 2, 3], interctc_weight=0.3)
    expected = logits(model, batch, num_layers=depth)
    pruned = model.prune_to(depth)
    assert len(pruned.model.layers) == depth
    assert pruned.config.num_hidden_layers == depth
    assert pruned.config.kept_layers == list(range(1, depth + 1))
    torch.testing.assert_close(logits(pruned, batch), expected)


@pytest.mark.parametrize("keep", [[1, 3], [2, 4], [4], [1, 2, 4]])
def test_prune_layers_equals_layers_argument_with_self_conditioning(keep, batch):
    model = tiny_model(interctc_layers=[1, 2, 3], interctc_weight=0.5, self_conditioning=True)
    expected = logits(model, batch, layers=keep)
    pruned = model.prune_layers(keep)
    torch.testing.assert_close(logits(pruned, batch), expected)
    assert pruned.config.kept_layers == keep
    # Intermediate layers keep their meaning; the new last layer is final, not intermediate.
    assert pruned.config.interctc_layers == [i for i, old in enumerate(keep, 1) if old in (1, 2, 3) and old != keep[-1]]


def test_pruning_twice_tracks_original_layers(batch):
    model = tiny_model(num_hidden_layers=6)
    expected = logits(model, batch, layers=[2, 5])
    model.prune_layers([2, 3, 5, 6]).prune_layers([1, 3])
    assert model.config.kept_layers == [2, 5]
    torch.testing.assert_close(logits(model, batch), expected)


def test_pruned_parameters_are_freed():
    model = tiny_model()
    before = sum(p.numel() for p in model.parameters())
    per_layer = sum(p.numel() for p in model.model.layers[0].parameters())
    assert model.count_parameters(num_layers=2) == before - 2 * per_layer
    model.prune_to(2)
    assert sum(p.numel() for p in model.parameters()) == before - 2 * per_layer


def test_uniform_strategy_keeps_evenly_spaced_layers(batch):
    model = tiny_model(num_hidden_layers=8)
    schedule = model.pruning_schedule("uniform")
    assert schedule[4] == [2, 4, 6, 8]
    assert schedule[8] == list(range(1, 9))
    assert all(len(schedule[k]) == k and schedule[k] == sorted(set(schedule[k])) for k in range(1, 9))
    assert PRUNING_STRATEGIES["every_other"] is PRUNING_STRATEGIES["uniform"]
    expected = logits(model, batch, layers=[2, 4, 6, 8])
    torch.testing.assert_close(logits(model.prune_to(4, strategy="every_other"), batch), expected)


def test_schedule_in_config_is_the_default_and_survives_pruning(batch):
    model = tiny_model(pruning_schedule={"2": [1, 4], "3": [1, 2, 4]})
    assert model.pruning_schedule()[1] == [1]  # depths it lacks fall back to "top"
    expected = logits(model, batch, layers=[1, 2, 4])
    model.prune_to(3)
    torch.testing.assert_close(logits(model, batch), expected)
    # Depth 2 = original layers 1 and 4 = new layers 1 and 3.
    assert model.config.pruning_schedule == {"2": [1, 3], "3": [1, 2, 3]}


def test_registered_strategy_is_used(batch):
    @register_pruning_strategy("last_first_test")
    def last_first(model, offset=0):
        n = model.config.num_hidden_layers
        return {k: list(range(n - k + 1, n + 1)) for k in range(1, n + 1)}

    try:
        model = tiny_model()
        assert model.pruning_schedule("last_first_test")[2] == [3, 4]
        expected = logits(model, batch, layers=[3, 4])
        torch.testing.assert_close(logits(model.prune_to(2, strategy="last_first_test"), batch), expected)
    finally:
        del PRUNING_STRATEGIES["last_first_test"]


def test_save_load_roundtrip_and_size_shrinks(tmp_path, batch):
    model = tiny_model(interctc_layers=[1, 2, 3], interctc_weight=0.3, stochastic_depth_rate=0.2)
    sizes = {}
    for depth in (4, 2, 1):
        model.prune_to(depth)
        path = tmp_path / f"depth{depth}"
        model.save_pretrained(path)
        assert (path / "model.safetensors").exists() and not (path / "pytorch_model.bin").exists()
        sizes[depth] = os.path.getsize(path / "model.safetensors")
        loaded = PrunableCTCForCTC.from_pretrained(path).eval()
        assert loaded.config.num_hidden_layers == depth
        assert without_path(loaded.config) == without_path(model.config)
        torch.testing.assert_close(logits(loaded, batch), logits(model, batch))
    layer_bytes = sizes[4] - sizes[2]
    assert layer_bytes > 0 and sizes[2] - sizes[1] == pytest.approx(layer_bytes / 2, rel=0.05)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.prune_to(0), r"depth must be in \[1, 4\]"),
        (lambda m: m.prune_to(5), r"depth must be in \[1, 4\]"),
        (lambda m: m.prune_to(2, strategy="nope"), "unknown pruning strategy 'nope'"),
        (lambda m: m.prune_layers([1, 1, 2]), r"\[1\] are given more than once"),
        (lambda m: m.prune_layers([0, 2]), r"\[0\] are outside \[1, 4\]"),
        (lambda m: m.prune_layers([5]), r"\[5\] are outside"),
        (lambda m: m.prune_layers([]), "at least one layer"),
        (lambda m: m(torch.randn(1, 20, 16), num_layers=0), r"depth must be in"),
        (lambda m: m(torch.randn(1, 20, 16), num_layers=9), r"depth must be in"),
        (lambda m: m(torch.randn(1, 20, 16), layers=[2, 2]), "more than once"),
        (lambda m: m(torch.randn(1, 20, 16), num_layers=2, layers=[1]), "either num_layers or layers"),
    ],
)
def test_bad_depth_requests_raise(call, message):
    model = tiny_model()
    with pytest.raises(ValueError, match=message):
        call(model)
    assert model.config.num_hidden_layers == 4 and len(model.model.layers) == 4  # nothing changed


def test_pruned_model_rejects_its_old_depth():
    model = tiny_model().prune_to(2)
    with pytest.raises(ValueError, match=r"depth must be in \[1, 2\]"):
        model(torch.randn(1, 20, 16), num_layers=3)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(interctc_layers=[4]), "interctc_layers"),
        (dict(interctc_layers=[0]), "interctc_layers"),
        (dict(interctc_layers=[1], interctc_weight=1.0), "interctc_weight"),
        (dict(interctc_weight=0.3), "interctc_weight"),
        (dict(stochastic_depth_rate=1.5), "stochastic_depth_rate"),
        (dict(stochastic_depth_rate=-0.1), "stochastic_depth_rate"),
        (dict(stochastic_depth_schedule="cubic"), "stochastic_depth_schedule"),
        (dict(num_attention_heads=5), "num_attention_heads"),
        (dict(encoder_type="lstm"), "encoder_type"),
        (dict(subsampling_type="conv3d"), "subsampling_type"),
        (dict(subsampling_factor=3), "subsampling_factor"),
        (dict(conv_kernel_size=4), "conv_kernel_size"),
        (dict(pad_token_id=99), "pad_token_id"),
        (dict(ctc_loss_reduction="max"), "ctc_loss_reduction"),
        (dict(hidden_dropout=1.0), "hidden_dropout"),
        (dict(kept_layers=[1, 2]), "kept_layers"),
        (dict(self_conditioning=True), "self_conditioning"),
        (dict(pruning_schedule={"2": [1]}), "pruning_schedule"),
        (dict(pruning_schedule={"1": [7]}), "pruning_schedule"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"PrunableCTCConfig\.{field}"):
        tiny_config(**overrides)


def test_config_roundtrip_and_derived_ratio(tmp_path):
    config = tiny_config(interctc_layers=[3, 1], interctc_weight=0.5, subsampling_factor=8)
    assert config.inputs_to_logits_ratio == 160 * 8
    assert config.interctc_layers == [1, 3]
    config.save_pretrained(tmp_path)
    loaded = PrunableCTCConfig.from_pretrained(tmp_path)
    assert without_path(loaded) == without_path(config)


def test_pruning_that_ends_self_conditioning_drops_its_projection(tmp_path, batch):
    """No `conditioning_projection` left in the checkpoint, so no unexpected keys on reload."""
    model = tiny_model(interctc_layers=[2], interctc_weight=0.5, self_conditioning=True)
    expected = logits(model, batch, layers=[1, 2])
    model.prune_layers([1, 2])  # layer 2 becomes the last: no intermediate layer is left
    assert not model.config.self_conditioning
    assert not any("conditioning_projection" in name for name in model.state_dict())
    torch.testing.assert_close(logits(model, batch), expected)
    model.save_pretrained(tmp_path)
    loaded, info = PrunableCTCForCTC.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    torch.testing.assert_close(logits(loaded.eval(), batch), expected)
