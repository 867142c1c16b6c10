"""A `make_prunable` wrapper under the Trainer: an interrupted run resumes to the weights of an uninterrupted one, and
`load_best_model_at_end` loads the best checkpoint (both read the stock checkpoints the trainer writes)."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainingArguments, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

from hf_prunable_ctc.adapters import make_prunable
from hf_prunable_ctc.adapters.speech_inputs import StockCTCCollator
from hf_prunable_ctc.adapters.trainer import StockPerDepthCTCTrainer
from hf_prunable_ctc.data.vocabulary import make_tokenizer

TOKENIZER = make_tokenizer()
EXTRACTOR = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                     return_attention_mask=True)
# Hidden dropout and stochastic depth on: a resumed run must also restore the random state.
CONFIG = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48, conv_dim=(16, 16),
              conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
              feat_extract_norm="layer", do_stable_layer_norm=True, vocab_size=len(TOKENIZER),
              pad_token_id=TOKENIZER.pad_token_id, hidden_dropout=0.1, mask_time_prob=0.0, layerdrop=0.0,
              ctc_loss_reduction="mean")


pytestmark = pytest.mark.usefixtures("one_thread")


def dataset(size=8):
    generator = np.random.default_rng(0)
    texts = ["AB", "C", "ABC", "BA"]
    return [{"audio": generator.standard_normal(4000 + 400 * i).astype(np.float32),
             "labels": TOKENIZER(texts[i % len(texts)]).input_ids} for i in range(size)]


def wrapped_model(seed):
    torch.manual_seed(seed)
    return make_prunable(Wav2Vec2ForCTC(Wav2Vec2Config(**CONFIG)), interctc_layers=[1, 2],
                         stochastic_depth_rate=0.3)


def trainer_for(model, output_dir, **arguments):
    settings = dict(output_dir=str(output_dir), max_steps=4, save_steps=2, per_device_train_batch_size=2,
                    per_device_eval_batch_size=4, learning_rate=1e-3, seed=0, use_cpu=True, report_to="none",
                    logging_steps=1, eval_strategy="no", remove_unused_columns=False, dataloader_num_workers=0)
    settings.update(arguments)
    data = dataset()
    return StockPerDepthCTCTrainer(
        model=model, args=TrainingArguments(**settings), train_dataset=data, eval_dataset=data[:4],
        data_collator=StockCTCCollator(EXTRACTOR, TOKENIZER, "input_values"), tokenizer=TOKENIZER)


def assert_same_weights(model, expected):
    got = model.model.state_dict()
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


class Killed(Exception):
    """Stands for the process dying in the middle of training."""


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    straight = trainer_for(wrapped_model(seed=0), tmp_path / "straight")
    straight.train()
    expected = {name: tensor.clone() for name, tensor in straight.model.model.state_dict().items()}

    original_step = StockPerDepthCTCTrainer.training_step

    def dying_step(self, *args, **kwargs):
        if self.state.global_step == 3:
            raise Killed()
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(StockPerDepthCTCTrainer, "training_step", dying_step)
    with pytest.raises(Killed):
        trainer_for(wrapped_model(seed=0), tmp_path / "interrupted").train()
    monkeypatch.setattr(StockPerDepthCTCTrainer, "training_step", original_step)
    checkpoint = tmp_path / "interrupted" / "checkpoint-2"
    assert "wav2vec2.encoder.layers.0.attention.k_proj.weight" in load_file(checkpoint / "model.safetensors")

    # Other initial weights: everything the resumed run ends with comes from the checkpoint and the steps after it.
    resumed = trainer_for(wrapped_model(seed=1), tmp_path / "interrupted")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    assert_same_weights(resumed.model, expected)
    losses = lambda trainer: [e["loss"] for e in trainer.state.log_history if "loss" in e]  # noqa: E731
    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-5)  # 1-2 read back, 3-4 trained again


def test_load_best_model_at_end_loads_the_best_checkpoint(tmp_path):
    # The highest evaluation loss counts as best, so that the best checkpoint is not the last one.
    trainer = trainer_for(wrapped_model(seed=0), tmp_path / "run", max_steps=3, save_steps=1, eval_strategy="steps",
                          eval_steps=1, load_best_model_at_end=True, metric_for_best_model="loss",
                          greater_is_better=True)
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None and not best.endswith("checkpoint-3")
    last = load_file(tmp_path / "run" / "checkpoint-3" / "model.safetensors")
    assert not all(torch.equal(tensor, last[name]) for name, tensor in trainer.model.model.state_dict().items())
    assert_same_weights(trainer.model, load_file(f"{best}/model.safetensors"))
