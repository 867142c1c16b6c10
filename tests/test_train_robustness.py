"""Training and evaluation that neither diverge silently nor run on the wrong device.

- labels longer than the model's output frames give a finite loss and the utterance is kept;
  a step with non-finite gradients leaves the weights untouched.
- per-depth evaluation and the pruning searches move CPU batches to the model's device. Tested on
  CPU with the model on the `meta` device: a forward pre-hook records the devices of the tensors the model
  receives and stops the call (the model itself cannot run on `meta`).
"""

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import TrainingArguments

from conftest import padded_batch, tiny_model
from hf_prunable_ctc.data.collator import DataCollatorCTCWithPadding
from hf_prunable_ctc.data.features import make_feature_extractor
from hf_prunable_ctc.data.vocabulary import make_tokenizer
from hf_prunable_ctc.evaluation.depth_evaluation import per_depth_greedy_ids, subnetwork_error_rates
from hf_prunable_ctc.evaluation.pruning_search import greedy_schedule, subnetwork_score
from hf_prunable_ctc.training.trainer import PerDepthCTCTrainer

TOKENIZER = make_tokenizer()


def feature_rows(frames, labels):
    rng = np.random.default_rng(0)
    return Dataset.from_dict({"input_features": [rng.standard_normal((n, 16)).astype(np.float32) for n in frames],
                              "labels": labels})


def make_trainer(tmp_path, dataset, **args):
    model = tiny_model(vocab_size=len(TOKENIZER), interctc_layers=[2])
    training_args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no",
                                      per_device_train_batch_size=len(dataset), learning_rate=1e-2, **args)
    collate = DataCollatorCTCWithPadding(feature_extractor=make_feature_extractor(num_mel_bins=16),
                                         tokenizer=TOKENIZER)
    return PerDepthCTCTrainer(model=model, args=training_args, train_dataset=dataset, data_collator=collate,
                              tokenizer=TOKENIZER)


def test_labels_longer_than_the_output_frames_give_a_finite_loss(tmp_path):
    """12 frames become 2 output frames after 4x subsampling, fewer than 20 labels; the loss
    and gradients stay finite (the model's `ctc_zero_infinity`: that utterance contributes 0 to the batch mean)."""
    dataset = feature_rows([12, 200], [list(range(3, 23)), [3, 4, 5]])
    trainer = make_trainer(tmp_path, dataset, max_steps=1)
    batch = trainer.data_collator([dataset[0], dataset[1]])
    loss = trainer.compute_loss(trainer.model.train(), batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in trainer.model.parameters() if p.grad is not None)


def test_prepare_split_keeps_an_utterance_with_more_labels_than_frames(tmp_path):
    """Such an utterance is counted (kept, and scored in evaluation), not dropped."""
    import soundfile as sf

    from hf_prunable_ctc.data.speech_data import prepare_split

    sf.write(tmp_path / "a.wav", (0.1 * np.random.default_rng(0).standard_normal(1600)).astype(np.float32), 16000)
    raw = Dataset.from_dict({"audio": [str(tmp_path / "a.wav")], "transcription": ["A VERY LONG TRANSCRIPT"]})
    prepared, report = prepare_split(raw, make_feature_extractor(), TOKENIZER)
    assert report.kept == 1 and len(prepared[0]["labels"]) > prepared[0]["input_length"] // 4


def test_a_step_with_non_finite_gradients_leaves_the_weights_untouched(tmp_path):
    """A NaN gradient (as from an overflow) skips the optimizer step; without the guard,
    gradient clipping spreads the NaN to every gradient and AdamW writes NaN into every weight."""
    dataset = feature_rows([80, 60], [[3, 4, 5], [6, 7]])
    trainer = make_trainer(tmp_path, dataset, max_steps=1, max_grad_norm=1.0, weight_decay=0.01)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    poisoned = trainer.model.lm_head.bias
    poisoned.register_hook(lambda gradient: torch.full_like(gradient, float("nan")))
    trainer.train()
    assert trainer.nonfinite_gradients.skipped_steps == 1
    for name, parameter in trainer.model.named_parameters():
        torch.testing.assert_close(parameter.detach(), before[name], msg=name)

    healthy = make_trainer(tmp_path / "healthy", dataset, max_steps=1, max_grad_norm=1.0)
    start = healthy.model.lm_head.weight.detach().clone()
    healthy.train()
    assert healthy.nonfinite_gradients.skipped_steps == 0
    assert not torch.equal(healthy.model.lm_head.weight, start)


class Stop(Exception):
    pass


def devices_the_model_receives(model):
    """Run on the next forward: record the devices of every tensor argument, then stop the call."""
    seen = []

    def hook(module, args, kwargs):
        seen.extend(t.device.type for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor))
        raise Stop()

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


@pytest.fixture()
def meta_model_and_cpu_batch():
    model = tiny_model(vocab_size=len(TOKENIZER), interctc_layers=[2]).to("meta")
    features, mask = padded_batch([40, 30])
    batch = {"input_features": features, "attention_mask": mask, "labels": torch.tensor([[3, 4], [5, -100]])}
    return model, batch


@pytest.mark.parametrize("call", [
    lambda model, batch: per_depth_greedy_ids(model, batch["input_features"], batch["attention_mask"], [2, 4],
                                              model.pruning_schedule(), labels=batch["labels"]),
    lambda model, batch: subnetwork_error_rates(model, [batch], TOKENIZER, [1, 2]),
    lambda model, batch: subnetwork_score(model, [batch], [1, 3]),
    lambda model, batch: greedy_schedule(model, batches=[batch]),
    lambda model, batch: greedy_schedule(model, batches=[batch], criterion="wer", tokenizer=TOKENIZER),
], ids=["per_depth_greedy_ids", "subnetwork_error_rates", "subnetwork_score", "greedy_loss", "greedy_wer"])
def test_evaluation_and_search_move_batches_to_the_models_device(meta_model_and_cpu_batch, call):
    """CPU batches reach a model on another device on that device."""
    model, batch = meta_model_and_cpu_batch
    seen = devices_the_model_receives(model)
    with pytest.raises(Stop):
        call(model, batch)
    assert seen and set(seen) == {"meta"}
