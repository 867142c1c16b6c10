"""PrunableCTCConfig's checks: kept_layers and stochastic depth ranges, overrides given to from_pretrained checked
like constructor arguments, and a depth override that loads the model and prunes it."""

import pytest
import torch
from transformers import AutoConfig

from conftest import padded_batch, tiny_config, tiny_model
from hf_prunable_ctc import PrunableCTCConfig, PrunableCTCForCTC
from hf_prunable_ctc.adapters.prunable_stock import check_settings


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An 8-layer model with intermediate CTC at 2, 4, 6 and a pruning schedule that is not "top"."""
    path = tmp_path_factory.mktemp("model")
    model = tiny_model(num_hidden_layers=8, interctc_layers=[2, 4, 6], interctc_weight=0.3)
    model.config.pruning_schedule = {"4": [2, 4, 6, 8]}
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize("kept", [[3, 1, 1, 9], [1, 2, 2, 3], [0, 1, 2, 3], [-1, 2, 3, 4], [4, 3, 2, 1]])
def test_kept_layers_must_be_strictly_increasing_from_one(kept):
    with pytest.raises(ValueError, match=r"kept_layers: must be strictly increasing"):
        tiny_config(num_hidden_layers=4, kept_layers=kept)


def test_kept_layers_of_a_pruned_model_are_accepted():
    assert tiny_config(num_hidden_layers=4, kept_layers=[1, 3, 5, 9]).kept_layers == [1, 3, 5, 9]


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1])
def test_stochastic_depth_rate_has_one_range_for_the_config_and_the_adapter(rate):
    with pytest.raises(ValueError) as native:
        tiny_config(stochastic_depth_rate=rate)
    with pytest.raises(ValueError) as adapter:
        check_settings(4, [], 0.0, rate, "linear")
    assert "stochastic_depth_rate: must be in [0, 1)" in str(native.value)
    assert str(native.value) == "PrunableCTCConfig." + str(adapter.value)


def test_a_rate_just_below_one_is_accepted():
    assert tiny_config(stochastic_depth_rate=0.99).stochastic_depth_rate == 0.99


@pytest.mark.parametrize("override, field", [(dict(interctc_layers=[9]), "interctc_layers"),
                                             (dict(kept_layers=[8, 7, 6, 5, 4, 3, 2, 1]), "kept_layers"),
                                             (dict(stochastic_depth_rate=1.0), "stochastic_depth_rate"),
                                             (dict(encoder_type="lstm"), "encoder_type")])
def test_from_pretrained_overrides_are_checked_like_constructor_arguments(folder, override, field):
    for load in (PrunableCTCConfig.from_pretrained, AutoConfig.from_pretrained):
        with pytest.raises(ValueError, match=f"PrunableCTCConfig.{field}:"):
            load(folder, **override)


def test_from_pretrained_overrides_are_normalised_like_constructor_arguments(folder):
    config, unused = PrunableCTCConfig.from_pretrained(folder, interctc_layers=["3", 1], not_a_field=1,
                                                       return_unused_kwargs=True)
    assert config.interctc_layers == [1, 3] and unused == {"not_a_field": 1}


@pytest.mark.parametrize("load", [PrunableCTCConfig.from_pretrained, AutoConfig.from_pretrained])
def test_a_depth_override_of_the_config_alone_is_refused_naming_prune_to(folder, load):
    with pytest.raises(ValueError, match=r"prune_to\(k\)"):
        load(folder, num_hidden_layers=4)


def test_a_consistent_depth_override_builds_a_new_config(folder):
    config = PrunableCTCConfig.from_pretrained(folder, num_hidden_layers=4, interctc_layers=[2], kept_layers=None,
                                               pruning_schedule=None)
    assert (config.num_hidden_layers, config.kept_layers, config.interctc_layers) == (4, [1, 2, 3, 4], [2])


def test_from_pretrained_with_fewer_layers_loads_and_prunes_by_the_schedule(folder):
    pruned = PrunableCTCForCTC.from_pretrained(folder, num_hidden_layers=4)
    full = PrunableCTCForCTC.from_pretrained(folder)
    assert len(pruned.model.layers) == pruned.config.num_hidden_layers == 4
    assert pruned.config.kept_layers == [2, 4, 6, 8] and pruned.config.interctc_layers == [1, 2, 3]
    pruned.config.check_values()
    features, mask = padded_batch([40, 30])
    with torch.no_grad():
        expected = full(features, mask, layers=[2, 4, 6, 8]).logits
        assert torch.equal(pruned(features, mask).logits, expected)


def test_from_pretrained_with_more_layers_than_trained_is_an_error(folder):
    with pytest.raises(ValueError, match=r"depth must be in \[1, 8\]"):
        PrunableCTCForCTC.from_pretrained(folder, num_hidden_layers=9)


def test_from_pretrained_with_fewer_layers_and_the_loading_report(folder):
    model, info = PrunableCTCForCTC.from_pretrained(folder, num_hidden_layers=2, output_loading_info=True)
    assert model.config.num_hidden_layers == 2 and not info["missing_keys"]
