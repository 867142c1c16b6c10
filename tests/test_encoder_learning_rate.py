"""Fine-tuning a pretrained encoder under a new head: the encoder at its own learning rate (`encoder_learning_rate`)
and its lower layers frozen (`freeze_layers`), as `train.py` passes them to the Trainer."""

import numpy as np
import pytest
import torch
from datasets import Dataset

from conftest import tiny_model
from hf_prunable_ctc.data.collator import DataCollatorCTCWithPadding
from hf_prunable_ctc.data.features import make_feature_extractor
from hf_prunable_ctc.data.vocabulary import make_tokenizer
from hf_prunable_ctc.training.trainer import PerDepthCTCTrainer, PrunableCTCTrainingArguments

TOKENIZER = make_tokenizer()


def make_trainer(tmp_path, **args):
    rng = np.random.default_rng(0)
    dataset = Dataset.from_dict({"input_features": [rng.standard_normal((n, 16)).astype(np.float32)
                                                    for n in (80, 60)], "labels": [[3, 4, 5], [6, 7]]})
    model = tiny_model(vocab_size=len(TOKENIZER), interctc_layers=[1], num_hidden_layers=2)
    training_args = PrunableCTCTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no", per_device_train_batch_size=2,
        learning_rate=1e-2, lr_scheduler_type="constant", max_steps=1, **args)
    collate = DataCollatorCTCWithPadding(feature_extractor=make_feature_extractor(num_mel_bins=16),
                                         tokenizer=TOKENIZER)
    return PerDepthCTCTrainer(model=model, args=training_args, train_dataset=dataset, data_collator=collate,
                              tokenizer=TOKENIZER)


def learning_rates(trainer):
    optimizer = trainer.create_optimizer()
    by_parameter = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    return {name: by_parameter.get(id(p)) for name, p in trainer.model.named_parameters()}


def test_the_encoder_takes_its_own_learning_rate_and_the_head_the_main_one(tmp_path):
    rates = learning_rates(make_trainer(tmp_path, encoder_learning_rate=1e-4))
    assert rates["lm_head.weight"] == rates["model.final_norm.bias"] == 1e-2
    encoder = {n: lr for n, lr in rates.items() if n.startswith(("model.layers.", "model.subsampling."))}
    assert encoder and set(encoder.values()) == {1e-4}
    assert None not in rates.values()  # every parameter is in a group


def test_the_schedule_scales_both_learning_rates_alike(tmp_path):
    trainer = make_trainer(tmp_path, encoder_learning_rate=1e-4, warmup_steps=4, max_grad_norm=1.0)
    trainer.args.lr_scheduler_type = "linear"
    trainer.args.max_steps = 8
    trainer.create_optimizer_and_scheduler(num_training_steps=8)
    trainer.lr_scheduler.step()
    head, encoder = sorted({group["lr"] for group in trainer.optimizer.param_groups}, reverse=True)
    assert head == pytest.approx(1e-2 / 4) and encoder == pytest.approx(1e-4 / 4)


def test_without_the_option_one_learning_rate_and_weight_decay_groups_as_stock(tmp_path):
    trainer = make_trainer(tmp_path, weight_decay=0.01)
    assert set(learning_rates(trainer).values()) == {1e-2}
    assert sorted(g["weight_decay"] for g in trainer.optimizer.param_groups) == [0.0, 0.01]


def test_frozen_layers_do_not_move_and_the_rest_trains(tmp_path):
    trainer = make_trainer(tmp_path, freeze_layers=1, encoder_learning_rate=1e-3)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    frozen = {n for n in before if n.startswith(("model.subsampling.", "model.layers.0."))}
    assert frozen and not moved & frozen
    assert any(n.startswith("model.layers.1.") for n in moved) and "lm_head.weight" in moved


@pytest.mark.parametrize("args, message", [({"freeze_layers": -1}, "freeze_layers"),
                                           ({"encoder_learning_rate": -1e-4}, "encoder_learning_rate")])
def test_bad_values_are_refused(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, **args)


def test_freezing_more_layers_than_the_model_has_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has 2 layers"):
        make_trainer(tmp_path, freeze_layers=3)
