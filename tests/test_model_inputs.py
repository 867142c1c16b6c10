"""Every input to the model gets a defined outcome: keyword arguments, features, lengths, depths, checkpoints.

Errors come from the model itself, so `forward`, the pipeline and the CLI all give the same message.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import padded_batch, tiny_config, tiny_model
from hf_prunable_ctc import PrunableCTCForCTC, PrunableCTCModel


# --- keyword arguments -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", ["ctc", "encoder"])
def test_misspelt_keyword_is_a_type_error_naming_it(cls, batch):
    model = tiny_model() if cls == "ctc" else tiny_model().model
    with pytest.raises(TypeError, match="num_layer"):
        model(*batch, num_layer=2)


def test_what_trainer_and_pipeline_pass_is_accepted(batch):
    features, mask = batch
    model = tiny_model()
    # The ASR pipeline: model(**{main_input_name: features, "attention_mask": mask}).
    assert model(**{model.main_input_name: features, "attention_mask": mask}).logits.shape[0] == 3
    # The Trainer with a CTC collator: the batch's keys only (no num_items_in_batch, see accepts_loss_kwargs).
    labels = torch.tensor([[1, 2, -100], [3, 4, 5], [6, -100, -100]])
    assert torch.isfinite(model(input_features=features, attention_mask=mask, labels=labels).loss)


# --- non-finite and empty inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_features_are_a_value_error(bad, batch):
    features, mask = batch
    features = features.clone()
    features[1, 5, 3] = bad
    for model in (tiny_model(), tiny_model().model):
        with pytest.raises(ValueError, match="NaN or Inf"):
            model(features, mask)


@pytest.mark.parametrize("subsampling_type", ["conv1d", "conv2d"])
def test_zero_frames_give_zero_output_frames(subsampling_type):
    model = tiny_model(subsampling_type=subsampling_type, interctc_layers=[1], interctc_weight=0.5)
    with torch.no_grad():
        out = model(torch.zeros(2, 0, 16), output_hidden_states=True)
    assert out.logits.shape == (2, 0, 12)
    assert out.output_lengths.tolist() == [0, 0]


@pytest.mark.parametrize("frames", [1, 2, 3, 5])
def test_shorter_than_the_subsampling_still_gives_frames(frames):
    """Padding 1 on each stride-2 convolution: any non-empty input gives at least one output frame."""
    model = tiny_model(conv_kernel_size=15)  # the depthwise kernel is longer than the output
    with torch.no_grad():
        out = model(torch.randn(1, frames, 16))
    assert out.logits.shape[1] == out.output_lengths.item() >= 1
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("self_conditioning", [False, True])
def test_padded_frames_are_certain_blanks_so_greedy_ids_match_each_utterance_alone(self_conditioning):
    model = tiny_model(interctc_layers=[2], self_conditioning=self_conditioning)
    features, mask = padded_batch([57, 40, 23])
    blank = model.config.pad_token_id
    with torch.no_grad():
        out = model(features, attention_mask=mask, output_intermediate_logits=True)
        for row, length in enumerate(mask.sum(-1).tolist()):
            alone = model(features[row:row + 1, :length]).logits[0]
            valid = int(out.output_lengths[row])
            assert valid == alone.shape[0]
            # Greedy ids over every frame of the batch row: the utterance's own ids, then only blanks.
            ids = out.logits[row].argmax(-1)
            assert torch.equal(ids[:valid], alone.argmax(-1)) and bool((ids[valid:] == blank).all())
            for logits in out.intermediate_logits:
                assert bool((logits[row, valid:].argmax(-1) == blank).all())
        # The padded frames' probabilities are finite: one for the blank, zero elsewhere.
        probabilities = out.logits.softmax(-1)
        assert bool(torch.isfinite(out.logits.log_softmax(-1)).all())
        assert bool((probabilities[2, int(out.output_lengths[2]):, blank] == 1).all())


def test_an_empty_utterance_in_a_batch_leaves_the_others_unchanged():
    model = tiny_model()
    features, mask = padded_batch([40, 1, 33])
    mask[1] = 0  # no valid frame at all
    with torch.no_grad():
        out = model(features, mask)
        alone = model(features[2:3, :33])
    assert out.output_lengths[1].item() == 0
    torch.testing.assert_close(out.logits[2, :9], alone.logits[0])
    assert torch.isfinite(out.logits).all()


def test_empty_utterance_with_labels_gives_a_finite_loss():
    model = tiny_model().train()
    features, mask = padded_batch([40, 20])
    mask[1] = 0
    out = model(features, mask, labels=torch.tensor([[1, 2], [3, 4]]))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --- depths and layers -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [0, 5, -1])
def test_depth_outside_the_model_is_the_models_value_error(depth, batch):
    with pytest.raises(ValueError, match=r"depth must be in \[1, 4\]"):
        tiny_model()(*batch, num_layers=depth)


def test_unsorted_layers_are_refused(batch):
    model = tiny_model()
    with pytest.raises(ValueError, match=r"increasing order.*pass \[2, 4\]"):
        model(*batch, layers=[4, 2])
    with pytest.raises(ValueError, match="increasing order"):
        model.prune_layers([3, 1])


def test_pruned_model_says_the_weights_are_gone(batch):
    model = tiny_model(num_hidden_layers=6).prune_layers([2, 3, 5])
    with pytest.raises(ValueError, match=r"pruned.*layers \[2, 3, 5\].*gone"):
        model(*batch, num_layers=4)
    with pytest.raises(ValueError, match=r"pruned.*gone"):
        model(*batch, layers=[1, 4])
    with pytest.raises(ValueError, match=r"pruned.*gone"):
        model.prune_to(5)
    # Pruning again, to fewer layers, works and tracks the original indices.
    assert model.prune_to(2).config.kept_layers == [2, 3]


def test_unpruned_model_errors_do_not_mention_pruning(batch):
    with pytest.raises(ValueError) as error:
        tiny_model()(*batch, num_layers=5)
    assert "pruned" not in str(error.value)


def test_config_whose_interctc_layers_name_pruned_layers_is_refused():
    with pytest.raises(ValueError, match=r"PrunableCTCConfig\.interctc_layers"):
        tiny_config(num_hidden_layers=2, kept_layers=[1, 3], interctc_layers=[3])


# --- checkpoints -------------------------------------------------------------------------------------------------

def test_pruned_checkpoint_loads_and_matches(tmp_path, batch):
    model = tiny_model(num_hidden_layers=6, interctc_layers=[2, 4], interctc_weight=0.3).prune_layers([1, 2, 4, 6])
    model.save_pretrained(tmp_path)
    loaded, info = PrunableCTCForCTC.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.config.kept_layers == [1, 2, 4, 6]
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(*batch).logits, model(*batch).logits)


def test_config_with_more_layers_than_the_weights_names_them(tmp_path):
    tiny_model().prune_to(2).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(num_hidden_layers=4, kept_layers=[1, 2, 3, 4])
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"missing: tensors of encoder layers \[3, 4\]"):
        PrunableCTCForCTC.from_pretrained(tmp_path)


def test_weights_with_extra_layers_or_missing_tensors_name_them(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop("model.final_norm.weight")
    weights["model.layers.7.out_norm.weight"] = torch.ones(32)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing: model\.final_norm\.weight.*extra: tensors of encoder layers \[8\]"):
        PrunableCTCForCTC.from_pretrained(tmp_path)


def test_the_encoder_loads_from_a_ctc_checkpoint_and_back(tmp_path):
    """A missing or extra CTC head is not an error: that is loading the encoder alone, or it under a new head."""
    tiny_model().save_pretrained(tmp_path / "ctc")
    encoder = PrunableCTCModel.from_pretrained(tmp_path / "ctc")
    encoder.save_pretrained(tmp_path / "encoder")
    assert isinstance(PrunableCTCForCTC.from_pretrained(tmp_path / "encoder"), PrunableCTCForCTC)
