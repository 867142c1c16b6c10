"""Training options that favour the shallow exits: per-exit intermediate-CTC weights, sandwich depth sampling and
in-place self-distillation, with their config checks, save/load and pruning."""

import pytest
import torch
import torch.nn.functional as F

from conftest import padded_batch, tiny_config, tiny_model
from hf_prunable_ctc import PrunableCTCConfig, PrunableCTCForCTC


def labels_for(batch_size, lengths, vocab_size=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.full((batch_size, max(lengths)), -100, dtype=torch.long)
    for i, length in enumerate(lengths):
        labels[i, :length] = torch.randint(1, vocab_size, (length,), generator=generator)
    return labels


def hand_ctc(logits, lengths, labels):
    keep = labels >= 0
    log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
    return F.ctc_loss(log_probs, labels[keep], lengths, keep.sum(-1), blank=0, reduction="mean",
                      zero_infinity=True)


@pytest.fixture
def data():
    features, mask = padded_batch([57, 40, 23])
    return features, mask, labels_for(3, [5, 4, 3])


EXITS = dict(interctc_layers=[1, 2, 3], interctc_weight=0.4)


def test_weights_one_then_zero_use_the_first_exit_only(data):
    features, mask, labels = data
    model = tiny_model(**EXITS, interctc_weights=[1.0, 0.0, 0.0])
    out = model(features, mask, labels=labels, output_intermediate_logits=True)
    assert out.intermediate_layers.tolist() == [1, 2, 3]
    final = hand_ctc(out.logits, out.output_lengths, labels)
    first = hand_ctc(out.intermediate_logits[0], out.output_lengths, labels)
    torch.testing.assert_close(out.loss, 0.6 * final + 0.4 * first)
    # Different from the plain mean over the exits.
    plain = tiny_model(**EXITS)(features, mask, labels=labels)
    assert not torch.allclose(plain.loss, out.loss)
    torch.testing.assert_close(plain.loss, 0.6 * final + 0.4 * out.intermediate_losses.mean())


def test_weighted_mean_normalises_over_the_exits_that_ran(data):
    features, mask, labels = data
    model = tiny_model(**EXITS, interctc_weights=[3.0, 1.0, 2.0])
    out = model(features, mask, labels=labels)
    expected = (3 * out.intermediate_losses[0] + out.intermediate_losses[1] + 2 * out.intermediate_losses[2]) / 6
    torch.testing.assert_close(out.loss, 0.6 * out.ctc_loss + 0.4 * expected)
    # Layers 1 and 3 only: layer 3 is the last that ran (the final loss), so layer 1 is the only exit.
    sub = model(features, mask, labels=labels, layers=[1, 3], output_intermediate_logits=True)
    assert sub.intermediate_layers.tolist() == [1]
    torch.testing.assert_close(sub.loss, 0.6 * sub.ctc_loss + 0.4 * sub.intermediate_losses[0])
    # Layers 2 and 4: the exit that ran is layer 2, weighted alone.
    sub = model(features, mask, labels=labels, layers=[2, 4], output_intermediate_logits=True)
    assert sub.intermediate_layers.tolist() == [2]
    torch.testing.assert_close(sub.loss, 0.6 * sub.ctc_loss + 0.4 * sub.intermediate_losses[0])


def test_exits_that_ran_all_weighing_zero_leave_the_final_loss(data):
    features, mask, labels = data
    model = tiny_model(**EXITS, interctc_weights=[1.0, 0.0, 0.0])
    out = model(features, mask, labels=labels, layers=[2, 3, 4])
    torch.testing.assert_close(out.loss, out.ctc_loss)


def test_inverse_depth_is_stored_as_numbers_and_round_trips(tmp_path):
    config = tiny_config(interctc_layers=[3, 1, 2], interctc_weight=0.3, interctc_weights="inverse_depth")
    assert config.interctc_layers == [1, 2, 3]
    assert config.interctc_weights == pytest.approx([1.0, 0.5, 1.0 / 3])
    torch.manual_seed(0)
    model = PrunableCTCForCTC(config)
    model.save_pretrained(tmp_path)
    loaded = PrunableCTCForCTC.from_pretrained(tmp_path)
    assert loaded.config.interctc_weights == pytest.approx([1.0, 0.5, 1.0 / 3])
    assert all(isinstance(w, float) for w in loaded.config.interctc_weights)
    again = PrunableCTCConfig.from_pretrained(tmp_path)
    for field, value in dict(depth_sampling="none", sandwich_random_depths=1, sandwich_weight=1.0,
                             distillation_weight=0.0, distillation_temperature=1.0).items():
        assert getattr(again, field) == value


def test_training_fields_round_trip(tmp_path):
    config = tiny_config(interctc_layers=[2], interctc_weight=0.3, interctc_weights=[2.0], depth_sampling="sandwich",
                         sandwich_random_depths=2, sandwich_weight=0.5, distillation_weight=0.7,
                         distillation_temperature=2.0)
    config.save_pretrained(tmp_path)
    loaded = PrunableCTCConfig.from_pretrained(tmp_path)
    for field in ("interctc_weights", "depth_sampling", "sandwich_random_depths", "sandwich_weight",
                  "distillation_weight", "distillation_temperature"):
        assert getattr(loaded, field) == getattr(config, field), field


def test_weights_are_sorted_with_their_layers():
    config = tiny_config(interctc_layers=[3, 1], interctc_weight=0.3, interctc_weights=[0.2, 0.8])
    assert config.interctc_layers == [1, 3]
    assert config.interctc_weights == [0.8, 0.2]


@pytest.mark.parametrize("overrides, field", [
    (dict(**EXITS, interctc_weights=[1.0, 1.0]), "interctc_weights"),
    (dict(**EXITS, interctc_weights=[1.0, -1.0, 1.0]), "interctc_weights"),
    (dict(**EXITS, interctc_weights=[0.0, 0.0, 0.0]), "interctc_weights"),
    (dict(**EXITS, interctc_weights="deepest_first"), "interctc_weights"),
    (dict(**EXITS, interctc_weights=[1.0, float("inf"), 1.0]), "interctc_weights"),
    (dict(distillation_weight=0.5), "distillation_weight"),
    (dict(**EXITS, distillation_weight=-0.1), "distillation_weight"),
    (dict(depth_sampling="random"), "depth_sampling"),
    (dict(depth_sampling="sandwich", sandwich_random_depths=-1), "sandwich_random_depths"),
    (dict(depth_sampling="sandwich", sandwich_weight=0.0), "sandwich_weight"),
    (dict(**EXITS, distillation_weight=0.5, distillation_temperature=0.0), "distillation_temperature"),
])
def test_invalid_settings_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"PrunableCTCConfig\.{field}\b"):
        tiny_config(**overrides)


def test_distillation_with_sandwich_students_only_is_valid():
    assert tiny_config(depth_sampling="sandwich", distillation_weight=0.5).distillation_weight == 0.5


def train_step(model, features, mask, labels, seed=0):
    """One training-mode loss and its gradients, with the draws (sandwich depths, stochastic depth) seeded."""
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)
    out = model(features, mask, labels=labels)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return out, grads


def test_sandwich_adds_the_mean_loss_of_sub_networks(data):
    features, mask, labels = data
    plain, _ = train_step(tiny_model(**EXITS), features, mask, labels)
    model = tiny_model(**EXITS, depth_sampling="sandwich", sandwich_random_depths=1, sandwich_weight=0.5)
    out, grads = train_step(model, features, mask, labels)
    depths = out.sub_network_depths.tolist()
    assert depths[0] == 1 and len(depths) == 2 and depths[1] in (2, 3)
    torch.testing.assert_close(out.ctc_loss, plain.ctc_loss)  # the main pass is unchanged
    torch.testing.assert_close(out.loss, plain.loss + 0.5 * out.sub_network_losses.mean())
    # Each sub-network's loss is that of the model run to that depth (no stochastic depth or dropout here).
    model.eval()
    with torch.no_grad():
        for depth, loss in zip(depths, out.sub_network_losses):
            torch.testing.assert_close(loss, model(features, mask, labels=labels, num_layers=depth).ctc_loss)
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_sandwich_draws_every_depth_in_between_without_repeats(data):
    features, mask, labels = data
    model = tiny_model(num_hidden_layers=6, depth_sampling="sandwich", sandwich_random_depths=10).train()
    torch.manual_seed(0)
    with torch.no_grad():
        out = model(features, mask, labels=labels)
    assert out.sub_network_depths.tolist() == [1, 2, 3, 4, 5]  # capped at the depths in between
    seen = set()
    model = tiny_model(num_hidden_layers=6, depth_sampling="sandwich", sandwich_random_depths=1).train()
    with torch.no_grad():
        for seed in range(20):
            torch.manual_seed(seed)
            seen.add(tuple(model(features, mask, labels=labels).sub_network_depths.tolist()))
    assert seen == {(1, 2), (1, 3), (1, 4), (1, 5)}


def test_sandwich_is_off_in_eval(data):
    features, mask, labels = data
    plain = tiny_model(**EXITS)(features, mask, labels=labels)
    out = tiny_model(**EXITS, depth_sampling="sandwich")(features, mask, labels=labels)
    assert out.sub_network_depths is None and out.sub_network_losses is None
    torch.testing.assert_close(out.loss, plain.loss)


def test_sandwich_samples_within_the_layers_of_the_pass(data):
    features, mask, labels = data
    model = tiny_model(num_hidden_layers=6, depth_sampling="sandwich", sandwich_random_depths=5).train()
    torch.manual_seed(0)
    with torch.no_grad():
        out = model(features, mask, labels=labels, num_layers=4)
        assert out.sub_network_depths.tolist() == [1, 2, 3]
        # One layer: depth 1 is the main pass itself.
        assert model(features, mask, labels=labels, num_layers=1).sub_network_depths is None


def test_distillation_matches_the_kl_by_hand(data):
    features, mask, labels = data
    temperature = 2.0
    plain = tiny_model(**EXITS)(features, mask, labels=labels)
    model = tiny_model(**EXITS, distillation_weight=0.3, distillation_temperature=temperature)
    out = model(features, mask, labels=labels, output_intermediate_logits=True)
    valid = torch.arange(out.logits.shape[1])[None, :] < out.output_lengths[:, None]
    teacher = F.softmax(out.logits[valid] / temperature, dim=-1)
    terms = []
    for student in out.intermediate_logits:
        log_student = F.log_softmax(student[valid] / temperature, dim=-1)
        terms.append((teacher * (teacher.log() - log_student)).sum(-1).mean())
    expected = torch.stack(terms).mean() * temperature ** 2
    torch.testing.assert_close(out.distillation_loss, expected)
    assert out.distillation_loss > 0
    torch.testing.assert_close(out.loss, plain.loss + 0.3 * expected)


def test_distillation_does_not_train_the_teacher(data):
    features, mask, labels = data
    model = tiny_model(**EXITS, distillation_weight=1.0)
    out = model(features, mask, labels=labels)
    model.zero_grad()
    out.distillation_loss.backward()
    # Only layers up to the last exit (3) are students' layers: the last layer gets no gradient from the teacher.
    last = model.model.layers[-1]
    assert all(p.grad is None or not p.grad.any() for p in last.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.model.layers[0].parameters())


def test_distillation_is_finite_with_padding_and_low_temperature(data):
    features, mask, labels = data
    model = tiny_model(**EXITS, distillation_weight=1.0, distillation_temperature=0.25)
    out, grads = train_step(model, features, mask, labels)
    assert torch.isfinite(out.loss) and torch.isfinite(out.distillation_loss)
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("encoder_type", ["transformer", "conformer"])
def test_sandwich_and_distillation_compose_with_stochastic_depth_and_self_conditioning(data, encoder_type):
    features, mask, labels = data
    settings = dict(**EXITS, encoder_type=encoder_type, stochastic_depth_rate=0.3, self_conditioning=True)
    plain, _ = train_step(tiny_model(**settings), features, mask, labels)
    model = tiny_model(**settings, depth_sampling="sandwich", sandwich_random_depths=2, distillation_weight=0.5,
                       distillation_temperature=2.0)
    out, grads = train_step(model, features, mask, labels)
    assert out.sub_network_depths.tolist() == [1, 2, 3]
    assert torch.isfinite(out.loss) and not torch.allclose(out.loss, plain.loss)
    # Drawing the depths moves torch's generator, so the stochastic-depth draws differ from the plain run's: the
    # terms are checked against this pass's own losses.
    main = 0.6 * out.ctc_loss + 0.4 * out.intermediate_losses.mean()
    torch.testing.assert_close(out.loss, main + out.sub_network_losses.mean() + 0.5 * out.distillation_loss)
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # Self-conditioned sub-networks: depth k's loss is that of forward(num_layers=k).
    model.eval()
    with torch.no_grad():
        for depth, loss in zip(out.sub_network_depths.tolist(), out.sub_network_losses):
            torch.testing.assert_close(loss, model(features, mask, labels=labels, num_layers=depth).ctc_loss)


def test_pruning_keeps_the_weights_of_the_remaining_exits(tmp_path):
    model = tiny_model(num_hidden_layers=6, interctc_layers=[1, 2, 4, 5], interctc_weight=0.3,
                       interctc_weights=[4.0, 3.0, 2.0, 1.0])
    model.prune_layers([1, 3, 4, 5])  # layer 2 goes; layer 5 becomes the last and leaves the exits
    assert model.config.interctc_layers == [1, 3]
    assert model.config.interctc_weights == [4.0, 2.0]
    model.save_pretrained(tmp_path)
    loaded = PrunableCTCForCTC.from_pretrained(tmp_path)
    assert loaded.config.interctc_layers == [1, 3] and loaded.config.interctc_weights == [4.0, 2.0]
    # The pruned model's loss is the unpruned one's on the same layers.
    features, mask = padded_batch([57, 40])
    labels = labels_for(2, [4, 3])
    whole = tiny_model(num_hidden_layers=6, interctc_layers=[1, 2, 4, 5], interctc_weight=0.3,
                       interctc_weights=[4.0, 3.0, 2.0, 1.0])
    with torch.no_grad():
        torch.testing.assert_close(model(features, mask, labels=labels).loss,
                                   whole(features, mask, labels=labels, layers=[1, 3, 4, 5]).loss)


def test_pruning_away_every_weighted_exit_turns_the_term_off():
    model = tiny_model(**EXITS, interctc_weights=[1.0, 0.0, 0.0])
    model.prune_layers([2, 3, 4])
    assert model.config.interctc_layers == [1, 2]
    assert model.config.interctc_weight == 0.0 and model.config.interctc_weights is None
    model.config.check_values()


def test_pruning_away_every_student_turns_distillation_off():
    model = tiny_model(interctc_layers=[3], interctc_weight=0.3, interctc_weights=[2.0], distillation_weight=0.5)
    model.prune_to(3)
    assert model.config.interctc_layers == [] and model.config.interctc_weights is None
    assert model.config.distillation_weight == 0.0
    sandwich = tiny_model(interctc_layers=[3], interctc_weight=0.3, depth_sampling="sandwich",
                          distillation_weight=0.5)
    sandwich.prune_to(3)
    assert sandwich.config.distillation_weight == 0.5  # the sandwich sub-networks remain students
