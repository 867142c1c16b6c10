"""SVCCA: known answers on constructed representations, and frame collection against the model output contract
(with a fake model, so these tests do not depend on the real encoder)."""

import types

import numpy as np
import pytest
import torch

from hf_prunable_ctc.evaluation import svcca
from hf_prunable_ctc.evaluation.svcca import (collect_layer_outputs, layer_similarity_profile, svcca_matrix,
                                              svcca_similarity)


def random_rep(frames=3000, dims=16, seed=0):
    return np.random.default_rng(seed).standard_normal((frames, dims))


# --- svcca_similarity: known answers ---------------------------------------------------------------------------


def test_identical_representations_score_one():
    x = random_rep()
    assert svcca_similarity(x, x) == pytest.approx(1.0, abs=1e-6)
    # Tensors (any float dtype) are accepted and give the same answer as arrays.
    assert svcca_similarity(torch.tensor(x, dtype=torch.float32), x) == pytest.approx(1.0, abs=1e-6)


def test_invertible_linear_map_scores_one():
    x = random_rep()
    mixing = random_rep(16, 16, seed=1) + 4 * np.eye(16)  # well conditioned, invertible
    assert svcca_similarity(x, x @ mixing + 3.0) > 0.99  # a shift too: centring removes it
    # A linear embedding into more dimensions: rank 16 in 24 dims, the null directions are cut by epsilon.
    assert svcca_similarity(x, x @ random_rep(16, 24, seed=2)) > 0.99


def test_independent_representations_score_near_zero():
    similarity = svcca_similarity(random_rep(5000, 16, seed=0), random_rep(5000, 16, seed=1))
    assert 0.0 <= similarity < 0.2


def test_small_noise_scores_high_but_below_one():
    x = random_rep()
    noisy = svcca_similarity(x, x + 0.3 * random_rep(seed=5))
    assert 0.85 < noisy < 0.999


def test_partially_shared_subspace_scores_in_between():
    shared, own_x, own_y = random_rep(3000, 8, seed=0), random_rep(3000, 8, seed=1), random_rep(3000, 8, seed=2)
    x, y = np.hstack([shared, own_x]), np.hstack([shared, own_y])
    # 8 of 16 canonical correlations are 1, the other 8 near 0: the mean is a little above 1/2.
    assert 0.45 < svcca_similarity(x, y) < 0.6


def test_the_svd_step_ignores_low_variance_noise_directions():
    signal = random_rep(3000, 4, seed=0)
    x = np.hstack([signal, 1e-3 * random_rep(3000, 12, seed=1)])
    y = np.hstack([signal @ random_rep(4, 4, seed=2), 1e-3 * random_rep(3000, 12, seed=3)])
    # At 99% of the variance only the 4 signal directions survive, and they match; keeping everything lets the
    # 12 independent noise directions in, which correlate with nothing.
    assert svcca_similarity(x, y) > 0.99
    assert svcca_similarity(x, y, variance_threshold=1.0) < 0.4


def test_low_rank_data_needs_frames_beyond_its_reduced_dimensions_not_its_width():
    # 50 frames of 100-dimensional features that live in 3 directions: only the 3 + 3 kept directions count.
    x = random_rep(50, 3) @ random_rep(3, 100, seed=1)
    assert svcca_similarity(x, x @ random_rep(100, 100, seed=2)) == pytest.approx(1.0, abs=1e-6)


# --- svcca_matrix and layer_similarity_profile -----------------------------------------------------------------


def test_matrix_is_symmetric_with_unit_diagonal_and_matches_pairs():
    reps = [random_rep(seed=i) for i in range(3)] + [2 * random_rep(seed=0)]
    matrix = svcca_matrix(reps)
    assert matrix.shape == (4, 4)
    np.testing.assert_allclose(matrix, matrix.T)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    assert matrix[0, 3] == pytest.approx(1.0, abs=1e-6)
    assert matrix[1, 2] == pytest.approx(svcca_similarity(reps[1], reps[2]))


def test_matrix_reduces_each_representation_once(monkeypatch):
    calls = []
    original = svcca._reduced_basis
    monkeypatch.setattr(svcca, "_reduced_basis", lambda *args: calls.append(1) or original(*args))
    svcca_matrix([random_rep(500, 8, seed=i) for i in range(5)])
    assert len(calls) == 5  # not 5 * 4 / 2 pairs * 2


def test_profile_on_a_constructed_chain():
    x0 = random_rep(seed=0)
    x1 = x0 @ (np.eye(16) + 0.1 * random_rep(16, 16, seed=1))  # layer 1: linear, nearly the identity
    x2 = random_rep(seed=2)  # layer 2: replaces everything
    x3 = x2 + 0.05 * random_rep(seed=3)  # layer 3: nearly passes its input through
    profile = layer_similarity_profile([x0, x1, x2, x3])
    assert set(profile) == {"to_input", "to_final", "matrix"}
    assert profile["matrix"].shape == (4, 4)
    assert profile["to_input"].shape == (3,) and profile["to_final"].shape == (3,)
    np.testing.assert_allclose(profile["to_input"], [profile["matrix"][k, k + 1] for k in range(3)])
    np.testing.assert_allclose(profile["to_final"], profile["matrix"][1:, 3])
    assert profile["to_input"][0] > 0.99 and profile["to_input"][2] > 0.99
    assert profile["to_input"][1] < 0.2
    assert profile["to_final"][0] < 0.2 < 0.99 < profile["to_final"][1]
    assert profile["to_final"][2] == 1.0


# --- errors -----------------------------------------------------------------------------------------------------


def test_mismatched_frames_raise():
    with pytest.raises(ValueError, match="same frames"):
        svcca_similarity(random_rep(100), random_rep(90))
    with pytest.raises(ValueError, match="same frames"):
        svcca_matrix([random_rep(100), random_rep(100), random_rep(90)])


def test_non_2d_input_raises():
    with pytest.raises(ValueError, match="2-D"):
        svcca_similarity(np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError, match="2-D"):
        svcca_similarity(torch.zeros(2, 10, 4), torch.zeros(2, 10, 4))


def test_nan_raises():
    x = random_rep(100, 4)
    x[7, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        svcca_similarity(x, random_rep(100, 4))


def test_too_few_frames_raise_and_say_so():
    # 20 frames of isotropic 16-dim data: the SVD keeps ~16 directions each, 16 + 16 >= 20.
    with pytest.raises(ValueError, match="more frames than the reduced dimensions"):
        svcca_similarity(random_rep(20, 16), random_rep(20, 16, seed=1))
    with pytest.raises(ValueError, match="more frames than the reduced dimensions"):
        svcca_matrix([random_rep(20, 16, seed=i) for i in range(3)])


def test_degenerate_inputs_and_arguments_raise():
    with pytest.raises(ValueError, match="constant"):
        svcca_similarity(np.ones((100, 4)), random_rep(100, 4))
    with pytest.raises(ValueError, match="variance_threshold"):
        svcca_similarity(random_rep(), random_rep(), variance_threshold=0.0)
    with pytest.raises(ValueError, match="at least one"):
        svcca_matrix([])
    with pytest.raises(ValueError, match="at least one layer output"):
        layer_similarity_profile([random_rep()])


# --- collect_layer_outputs against the model output contract ----------------------------------------------------

SENTINEL = -1e6


class FakeEncoder(torch.nn.Module):
    """Honours the model's output contract: 2x subsampling (frame 2t of the input becomes output frame t),
    hidden_states = (input of layer 1, output of layer 1, output of layer 2), and output_lengths. Padded output
    frames hold SENTINEL, so any leak of padding shows."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))
        self.calls = []

    def forward(self, input_features, attention_mask, output_hidden_states):
        self.calls.append((self.training, torch.is_grad_enabled(), output_hidden_states))
        lengths = (attention_mask.sum(-1) + 1) // 2
        hidden = input_features[:, ::2].clone()
        hidden[torch.arange(hidden.shape[1])[None, :] >= lengths[:, None]] = SENTINEL
        hidden_states = (hidden, hidden * self.scale, hidden + 1)
        return types.SimpleNamespace(hidden_states=hidden_states, output_lengths=lengths)


def numbered_batch(lengths, first_id, num_bins=3):
    """Features whose every frame holds its own id (first_id, first_id + 1, ... over valid frames, utterance by
    utterance); padded frames hold SENTINEL too, as does the padding a collator would produce."""
    features = torch.full((len(lengths), max(lengths), num_bins), SENTINEL)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    next_id = first_id
    for i, length in enumerate(lengths):
        features[i, :length] = torch.arange(next_id, next_id + length, dtype=torch.float)[:, None]
        mask[i, :length] = 1
        next_id += length
    return {"input_features": features, "attention_mask": mask, "labels": torch.zeros(len(lengths), 2)}


def expected_ids(batches):
    ids = [b["input_features"][i, : int(b["attention_mask"][i].sum()) : 2, 0]
           for b in batches for i in range(b["input_features"].shape[0])]
    return torch.cat(ids)


def test_collect_drops_padded_frames_and_concatenates_batches():
    batches = [numbered_batch([9, 4, 6], first_id=0), numbered_batch([3, 7], first_id=100)]
    model = FakeEncoder().train()
    outputs = collect_layer_outputs(model, batches)
    # Valid output frames: ceil(length / 2) per utterance = 5 + 2 + 3 + 2 + 4.
    assert len(outputs) == 3 and [tuple(o.shape) for o in outputs] == [(16, 3)] * 3
    assert all(o.dtype == torch.float32 and (o != SENTINEL).all() for o in outputs)
    torch.testing.assert_close(outputs[0][:, 0], expected_ids(batches))  # the right frames, in order
    torch.testing.assert_close(outputs[1], outputs[0] * 2)
    torch.testing.assert_close(outputs[2], outputs[0] + 1)
    # Run in eval mode, without gradients, asking for hidden states; the training mode is given back.
    assert model.calls == [(False, False, True)] * 2
    assert model.training


def test_collect_subsamples_the_same_frames_for_every_layer_reproducibly():
    batches = [numbered_batch([40, 30], first_id=0), numbered_batch([50], first_id=1000)]
    full = collect_layer_outputs(FakeEncoder(), batches)
    sampled = collect_layer_outputs(FakeEncoder(), batches, max_frames=20)
    again = collect_layer_outputs(FakeEncoder(), batches, max_frames=20)
    assert [tuple(o.shape) for o in sampled] == [(20, 3)] * 3
    ids = sampled[0][:, 0]
    assert (ids[1:] > ids[:-1]).all() and set(ids.tolist()) <= set(full[0][:, 0].tolist())
    torch.testing.assert_close(sampled[1], sampled[0] * 2)  # same frames in every layer
    for a, b in zip(sampled, again):
        torch.testing.assert_close(a, b)
    assert collect_layer_outputs(FakeEncoder(), batches, max_frames=10_000)[0].shape == full[0].shape


def test_collect_errors():
    with pytest.raises(ValueError, match="no batches"):
        collect_layer_outputs(FakeEncoder(), [])
    with pytest.raises(ValueError, match="max_frames"):
        collect_layer_outputs(FakeEncoder(), [numbered_batch([4], 0)], max_frames=0)

    class NoHiddenStates(FakeEncoder):
        def forward(self, **kwargs):
            return types.SimpleNamespace(hidden_states=None, output_lengths=torch.tensor([2]))

    model = NoHiddenStates().train()
    with pytest.raises(ValueError, match="hidden_states"):
        collect_layer_outputs(model, [numbered_batch([4], 0)])
    assert model.training  # restored even when the forward pass fails
