"""Data-driven pruning strategies (greedy, svcca) and schedules stored in the config."""

import pytest
import torch

from conftest import padded_batch, tiny_model
from hf_prunable_ctc import PRUNING_STRATEGIES, PrunableCTCForCTC
from hf_prunable_ctc.evaluation.pruning_search import store_schedule, take_utterances


def make_identity(layer):
    """Zero every residual branch's output projection: a pre-LN Transformer layer then returns its input."""
    for module in (layer.attention.out, layer.feed_forward.down):
        torch.nn.init.zeros_(module.weight)
        torch.nn.init.zeros_(module.bias)


def dev_batches(count=3, seed=0, vocab_size=12):
    """Batches of random features with random labels."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for b in range(count):
        features, mask = padded_batch([60, 48, 36], seed=seed + b)
        labels = torch.randint(1, vocab_size, (3, 6), generator=generator)
        batches.append({"input_features": features, "attention_mask": mask, "labels": labels})
    return batches


def fitted_toy(identity_layer, seed=0, vocab_size=12, steps=60):
    """A 4-layer Transformer fitted to `dev_batches`, whose `identity_layer` is frozen as the identity: removing it
    changes nothing, removing any fitted layer raises the dev loss."""
    model = tiny_model(encoder_type="transformer", num_hidden_layers=4, vocab_size=vocab_size, seed=seed)
    layer = model.model.layers[identity_layer - 1]
    make_identity(layer)
    for p in layer.parameters():
        p.requires_grad_(False)
    batches = dev_batches(vocab_size=vocab_size)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for step in range(steps):
        batch = batches[step % len(batches)]
        loss = model(batch["input_features"], batch["attention_mask"], labels=batch["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), batches


def assert_nested_schedule(schedule, num_layers):
    assert sorted(schedule) == list(range(1, num_layers + 1))
    assert schedule[num_layers] == list(range(1, num_layers + 1))
    for k in range(1, num_layers):
        assert len(schedule[k]) == k and schedule[k] == sorted(schedule[k])
        assert set(schedule[k]) < set(schedule[k + 1])  # nested: one layer removed per step


@pytest.mark.parametrize("identity_layer", [2, 3])
def test_greedy_removes_the_identity_layer_first(identity_layer):
    model, batches = fitted_toy(identity_layer)
    schedule = model.pruning_schedule("greedy", batches=batches)
    assert_nested_schedule(schedule, 4)
    assert identity_layer not in schedule[3]


def test_greedy_by_wer_and_budget():
    from hf_prunable_ctc.data.vocabulary import build_vocabulary, make_tokenizer

    tokenizer = make_tokenizer(build_vocabulary(["ABCDEFGH"]))  # 11 tokens
    model, batches = fitted_toy(1, vocab_size=len(tokenizer), steps=150)
    schedule = model.pruning_schedule("greedy", batches=batches, criterion="wer", tokenizer=tokenizer,
                                      max_utterances=5)
    assert_nested_schedule(schedule, 4)
    assert 1 not in schedule[3]
    assert sum(b["input_features"].shape[0] for b in take_utterances(batches, 5)) == 5


def test_svcca_strategy_removes_the_identity_layer_first():
    model = tiny_model(encoder_type="transformer", num_hidden_layers=4, seed=5)
    make_identity(model.model.layers[1])
    schedule = model.pruning_schedule("svcca", batches=dev_batches(count=4), max_frames=None)
    assert_nested_schedule(schedule, 4)
    assert 2 not in schedule[3]


@pytest.mark.parametrize("strategy", ["greedy", "svcca"])
def test_data_driven_strategies_need_data(strategy):
    with pytest.raises(ValueError, match="needs dev data"):
        tiny_model().prune_to(2, strategy=strategy)


def test_stored_schedule_travels_with_the_checkpoint(tmp_path):
    model, batches = fitted_toy(3, seed=6)
    store_schedule(model, model.pruning_schedule("greedy", batches=batches))
    model.save_pretrained(tmp_path)
    loaded = PrunableCTCForCTC.from_pretrained(tmp_path).eval()
    expected_layers = loaded.pruning_schedule()[3]
    assert 3 not in expected_layers
    with torch.no_grad():
        expected = loaded(batches[0]["input_features"], batches[0]["attention_mask"], layers=expected_layers).logits
        pruned = loaded.prune_to(3)  # no strategy named: the stored schedule
        torch.testing.assert_close(pruned(batches[0]["input_features"], batches[0]["attention_mask"]).logits,
                                   expected)


def test_builtin_strategies_are_registered():
    assert {"top", "uniform", "every_other", "greedy", "svcca"} <= set(PRUNING_STRATEGIES)
