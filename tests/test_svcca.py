import numpy as np
import pytest
import torch

from conftest import padded_batch, tiny_model
from hf_prunable_ctc.svcca import collect_layer_outputs, layer_similarity_profile, svcca_matrix, svcca_similarity

rng = np.random.default_rng(0)


def random_rep(frames=3000, dims=16, seed=0):
    return np.random.default_rng(seed).standard_normal((frames, dims))


def test_identical_is_one():
    x = random_rep()
    assert svcca_similarity(x, x) == pytest.approx(1.0, abs=1e-6)


def test_invertible_linear_map_is_one():
    x = random_rep()
    mixing = random_rep(16, 16, seed=1) + 4 * np.eye(16)
    assert svcca_similarity(x, x @ mixing + 3.0) > 0.99
    # Different width: a linear embedding into more dimensions.
    assert svcca_similarity(x, x @ random_rep(16, 24, seed=2)) > 0.99


def test_independent_is_near_zero():
    assert svcca_similarity(random_rep(5000, 16, 0), random_rep(5000, 16, 1)) < 0.2


def test_noise_and_partial_sharing_are_in_between():
    x = random_rep()
    noisy = svcca_similarity(x, x + 0.3 * random_rep(seed=5))
    assert 0.8 < noisy < 1.0
    half = np.concatenate([x[:, :8], random_rep(3000, 8, seed=6)], axis=1)
    partial = svcca_similarity(x, half)
    assert 0.3 < partial < noisy


def test_matrix_is_symmetric_with_unit_diagonal_and_matches_pairs():
    reps = [random_rep(seed=i) for i in range(3)] + [random_rep(seed=0) * 2]
    matrix = svcca_matrix(reps)
    np.testing.assert_allclose(matrix, matrix.T)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    assert matrix[0, 3] == pytest.approx(1.0, abs=1e-6)
    assert matrix[1, 2] == pytest.approx(svcca_similarity(reps[1], reps[2]))


def test_profile_on_a_chain():
    x0 = random_rep(seed=0)
    x1 = x0 @ (np.eye(16) + 0.1 * random_rep(16, 16, seed=1))  # near-identity layer
    x2 = random_rep(seed=2)  # a layer that replaces everything
    profile = layer_similarity_profile([x0, x1, x2])
    assert profile["matrix"].shape == (3, 3)
    assert len(profile["to_input"]) == 2 and len(profile["to_final"]) == 2
    assert profile["to_input"][0] > 0.99 > 0.2 > profile["to_input"][1]
    assert profile["to_final"][1] == pytest.approx(1.0)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="same frames"):
        svcca_similarity(random_rep(100), random_rep(90))
    with pytest.raises(ValueError, match="2-D"):
        svcca_similarity(np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        svcca_similarity(np.full((100, 4), np.nan), random_rep(100, 4))
    with pytest.raises(ValueError, match="more frames"):
        svcca_similarity(random_rep(10, 16), random_rep(10, 16, seed=1))


class FakeModel(torch.nn.Module):
    """Returns hidden states whose padded frames hold a sentinel."""

    def forward(self, input_features, attention_mask, output_hidden_states):
        lengths = attention_mask.sum(-1)
        hidden = input_features.clone()
        hidden[attention_mask == 0] = 1e6
        return type("Out", (), {"hidden_states": (hidden, hidden * 2), "output_lengths": lengths})()


def test_collect_drops_padding_and_concatenates():
    batches = [dict(zip(("input_features", "attention_mask"), padded_batch([5, 3], num_mel_bins=4, seed=s)))
               for s in range(2)]
    outputs = collect_layer_outputs(FakeModel(), batches)
    assert len(outputs) == 2 and outputs[0].shape == (16, 4)
    assert (outputs[0].abs() < 1e5).all()
    torch.testing.assert_close(outputs[1], outputs[0] * 2)
    assert collect_layer_outputs(FakeModel(), batches, max_frames=10)[0].shape == (10, 4)


def test_collect_from_the_real_model_has_one_entry_per_layer():
    model = tiny_model()
    features, mask = padded_batch([40, 24])
    outputs = collect_layer_outputs(model, [{"input_features": features, "attention_mask": mask}])
    assert len(outputs) == 5  # input + 4 layers
    assert outputs[0].shape == (10 + 6, 32)
