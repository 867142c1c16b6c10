"""Loss scaling under gradient accumulation.

The model's CTC loss is a per-batch mean ("mean" reduction: each utterance divided by its target length, then
averaged), so the `Trainer` must divide it by the accumulation steps and not treat it as normalised by
`num_items_in_batch`. Then 4 accumulated micro-batches of 2 give exactly the gradients of one batch of 8.
"""

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from conftest import tiny_model

BATCH = 8


def dataset(num_mel_bins=16, vocab_size=12, frames=48, seed=0):
    """8 utterances of equal length (no padding differences between batchings) with labels of 3-7 tokens."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(BATCH):
        labels = torch.full((7,), -100, dtype=torch.long)
        labels[: 3 + i % 5] = torch.randint(1, vocab_size, (3 + i % 5,), generator=generator)
        rows.append({"input_features": torch.randn(frames, num_mel_bins, generator=generator),
                     "attention_mask": torch.ones(frames, dtype=torch.long), "labels": labels})
    return rows


class GradientRecorder(TrainerCallback):
    """Keeps a copy of every parameter's gradient just before the (first) optimizer step."""

    def __init__(self):
        self.gradients = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.gradients is None:
            self.gradients = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


class StepLossRecorder(Trainer):
    """Records what `training_step` returns for each micro-batch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_losses = []

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.step_losses.append(loss.item())
        return loss


def train_one_step(tmp_path, batch_size, accumulation, model):
    recorder = GradientRecorder()
    args = TrainingArguments(
        output_dir=str(tmp_path / f"run{accumulation}"), per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=1e-3, max_grad_norm=0.0,
        report_to="none", use_cpu=True, save_strategy="no", logging_steps=1, seed=0, dataloader_drop_last=False,
    )
    trainer = StepLossRecorder(model=model, args=args, train_dataset=dataset(), callbacks=[recorder])
    trainer.train()
    return trainer, recorder.gradients


def test_accumulation_gives_the_gradients_of_one_large_batch(tmp_path):
    # "mean" is the config's default reduction ("sum" would give 1/4 of the large batch's gradients: the Trainer's
    # division by the accumulation steps then only rescales the learning rate).
    settings = dict(interctc_layers=[1, 2], interctc_weight=0.3, ctc_loss_reduction="mean")
    # Dropout is already off in the tiny config; stochastic depth and SpecAugment stay at their default 0.
    large, large_gradients = train_one_step(tmp_path, BATCH, 1, tiny_model(**settings).train())
    accumulated, accumulated_gradients = train_one_step(tmp_path, 2, 4, tiny_model(**settings).train())
    assert len(accumulated.step_losses) == 4 and len(large.step_losses) == 1
    assert set(large_gradients) == set(accumulated_gradients)
    for name, gradient in large_gradients.items():
        torch.testing.assert_close(accumulated_gradients[name], gradient, atol=1e-5 * gradient.abs().max().item(),
                                   rtol=1e-4,
                                   msg=lambda m: f"{name}: {m}")


def test_training_step_returns_the_model_loss_divided_by_accumulation(tmp_path):
    model = tiny_model(interctc_layers=[1], interctc_weight=0.5).train()
    trainer, _ = train_one_step(tmp_path, 2, 4, model)
    rows = dataset()
    # The micro-batches are a shuffle of the 8 rows; the mean of the model's losses over them is the batch-of-8 loss.
    with torch.no_grad():
        untrained = tiny_model(interctc_layers=[1], interctc_weight=0.5).train()  # tiny_model seeds: same weights
        features = torch.stack([r["input_features"] for r in rows])
        full = untrained(features, labels=torch.stack([r["labels"] for r in rows]))
    assert sum(trainer.step_losses) == pytest.approx(full.loss.item(), rel=1e-4)
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged and logged[0] == pytest.approx(full.loss.item(), rel=1e-3)


def test_trainer_passes_no_loss_kwargs():
    """`accepts_loss_kwargs = False`: the Trainer neither passes `num_items_in_batch` nor rescales the loss."""
    model = tiny_model()
    assert model.accepts_loss_kwargs is False
    with pytest.raises(TypeError, match="num_items_in_batch"):
        model(torch.randn(1, 20, 16), num_items_in_batch=torch.tensor(3))
