"""make_prunable on small random stock CTC models of every supported family (no downloads)."""

import copy
import json
import pickle

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForCTC,
    HubertConfig,
    HubertForCTC,
    ParakeetCTCConfig,
    ParakeetFeatureExtractor,
    ParakeetForCTC,
    Wav2Vec2Config,
    Wav2Vec2ConformerConfig,
    Wav2Vec2ConformerForCTC,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Model,
    pipeline,
)

import hf_prunable_ctc.modeling_prunable_ctc as modeling_prunable_ctc
from hf_prunable_ctc.adapters import SUPPORTED_CLASSES, make_prunable
from hf_prunable_ctc.data.vocabulary import make_tokenizer

TOKENIZER = make_tokenizer()
VOCAB = len(TOKENIZER)
PAD = TOKENIZER.pad_token_id
NUM_LAYERS = 4

WAV2VEC2_SMALL = dict(
    hidden_size=32, num_hidden_layers=NUM_LAYERS, num_attention_heads=2, intermediate_size=48, conv_dim=(16, 16),
    conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    feat_extract_norm="layer", vocab_size=VOCAB, pad_token_id=PAD, hidden_dropout=0.0, attention_dropout=0.0,
    activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0, mask_time_prob=0.0, layerdrop=0.1,
)
MEL_BINS = 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These models are tiny: a second thread buys nothing and, on a loaded machine, OpenMP spinning made each
    # training step ~20x slower. Restored afterwards for the other test modules.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build(family: str):
    torch.manual_seed(0)
    if family == "wav2vec2-post-norm":
        return Wav2Vec2ForCTC(Wav2Vec2Config(**WAV2VEC2_SMALL, do_stable_layer_norm=False))
    if family == "wav2vec2-stable-layer-norm":
        return Wav2Vec2ForCTC(Wav2Vec2Config(**WAV2VEC2_SMALL, do_stable_layer_norm=True))
    if family == "hubert":
        return HubertForCTC(HubertConfig(**WAV2VEC2_SMALL, do_stable_layer_norm=False))
    if family == "wav2vec2-conformer":
        return Wav2Vec2ConformerForCTC(Wav2Vec2ConformerConfig(**WAV2VEC2_SMALL, position_embeddings_type="rotary"))
    if family == "parakeet":
        encoder = dict(hidden_size=32, num_hidden_layers=NUM_LAYERS, num_attention_heads=2, intermediate_size=48,
                       num_mel_bins=MEL_BINS, subsampling_conv_channels=8, subsampling_factor=4, dropout=0.0,
                       dropout_positions=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.1)
        return ParakeetForCTC(ParakeetCTCConfig(vocab_size=VOCAB, pad_token_id=PAD, encoder_config=encoder))
    raise AssertionError(family)


FAMILIES = ["wav2vec2-post-norm", "wav2vec2-stable-layer-norm", "hubert", "wav2vec2-conformer", "parakeet"]


def feature_extractor_for(model):
    if model.config.model_type == "parakeet_ctc":
        return ParakeetFeatureExtractor(feature_size=MEL_BINS)
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                    return_attention_mask=True)


def batch_for(model, seconds=(0.5, 0.35), texts=("AB", "C")):
    """Two utterances of random audio (the second shorter, so padding and masks are exercised) with labels."""
    generator = np.random.default_rng(0)
    audio = [generator.standard_normal(int(16000 * s)).astype(np.float32) for s in seconds]
    extractor = feature_extractor_for(model)
    features = extractor(audio, sampling_rate=16000, padding=True, return_attention_mask=True, return_tensors="pt")
    labels = torch.full((2, max(map(len, texts))), -100)
    for row, text in enumerate(texts):
        labels[row, :len(text)] = torch.tensor(TOKENIZER(text).input_ids)
    return {model.main_input_name: features[model.main_input_name],
            "attention_mask": features["attention_mask"].long(), "labels": labels}


@pytest.mark.parametrize("family", FAMILIES)
def test_full_depth_output_is_the_stock_output_and_the_head_path_matches(family):
    model = build(family).eval()
    batch = batch_for(model)
    inputs = batch[model.main_input_name]
    stock = model(inputs, attention_mask=batch["attention_mask"]).logits
    wrapped = make_prunable(model, interctc_layers=[1, 2]).eval()
    out = wrapped(inputs, attention_mask=batch["attention_mask"], output_hidden_states=True)
    torch.testing.assert_close(out.logits, stock, rtol=0, atol=0)
    # The intermediate-CTC path (final norm where the family has one, then the head) applied to the last layer's
    # raw output must give the stock logits: this is what pins where the final norm sits for each variant.
    torch.testing.assert_close(wrapped.logits_from_hidden_state(out.hidden_states[NUM_LAYERS]), stock)
    assert len(out.hidden_states) == NUM_LAYERS + 1


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_has_intermediate_terms_and_layerdrop_is_replaced(family):
    model = build(family).eval()
    wrapped = make_prunable(model, interctc_layers=[1, 2], interctc_weight=0.4)
    batch = batch_for(model)
    out = wrapped(**batch, output_intermediate_logits=True)
    assert out.intermediate_layers.tolist() == [1, 2]
    assert out.intermediate_losses.shape == (2,)
    torch.testing.assert_close(out.loss, 0.6 * out.ctc_loss + 0.4 * out.intermediate_losses.mean())
    assert out.intermediate_logits[0].shape == out.logits.shape
    shallow = wrapped(**batch, num_layers=2, output_intermediate_logits=True)
    assert shallow.intermediate_layers.tolist() == [1]  # layer 2 is the last one run: it feeds the final loss
    assert model.config.prunable_ctc["replaced_layerdrop"] == pytest.approx(0.1)
    encoder_config = getattr(model.config, "encoder_config", model.config)
    assert encoder_config.layerdrop == 0.0


@pytest.mark.parametrize("family", FAMILIES)
def test_a_few_training_steps_lower_the_intermediate_losses(family):
    model = build(family).train()
    wrapped = make_prunable(model, interctc_layers=[1, 2, 3], interctc_weight=0.5, stochastic_depth_rate=0.0)
    batch = batch_for(model)
    optimizer = torch.optim.Adam(wrapped.parameters(), lr=3e-3)
    first = None
    for _ in range(8):
        out = wrapped(**batch)
        first = out.intermediate_losses.detach() if first is None else first
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    last = wrapped(**batch).intermediate_losses.detach()
    assert (last < first).all(), (first, last)


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_checkpoint_is_the_stock_class_with_the_wrapped_logits(family, tmp_path):
    model = build(family).eval()
    batch = batch_for(model)
    wrapped = make_prunable(model, interctc_layers=[1, 2, 3]).eval()
    expected = wrapped(batch[model.main_input_name], attention_mask=batch["attention_mask"], num_layers=2).logits
    full_parameters = wrapped.count_parameters()
    wrapped.prune_to(2).save_pretrained(tmp_path)

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [type(model).__name__]
    assert config.get("encoder_config", config)["num_hidden_layers"] == 2
    assert config["prunable_ctc"]["pruned_from"] == NUM_LAYERS
    assert config["prunable_ctc"]["interctc_layers"] == [1]
    assert "auto_map" not in config  # no remote code

    reloaded = AutoModelForCTC.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)

    logits = reloaded(batch[model.main_input_name], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(logits, expected)
    assert sum(p.numel() for p in reloaded.parameters()) == wrapped.count_parameters() < full_parameters
    rewrapped = make_prunable(reloaded)
    assert rewrapped.config.prunable_ctc["pruned_from"] == NUM_LAYERS  # survives re-wrapping
    assert rewrapped.prune_to(1).config.prunable_ctc["pruned_from"] == NUM_LAYERS


@pytest.mark.parametrize("family", ["wav2vec2-stable-layer-norm", "parakeet"])
def test_pipeline_transcribes_with_the_pruned_checkpoint(family, tmp_path):
    model = build(family).eval()
    make_prunable(model).prune_to(2).save_pretrained(tmp_path)
    TOKENIZER.save_pretrained(tmp_path)
    feature_extractor_for(model).save_pretrained(tmp_path)
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path))
    assert type(asr.model) is type(model)
    audio = np.random.default_rng(1).standard_normal(8000).astype(np.float32)
    result = asr({"raw": audio, "sampling_rate": 16000})
    assert isinstance(result["text"], str)
    # The pipeline's text is the greedy decoding of the pruned model's own logits.
    extractor = feature_extractor_for(model)
    inputs = extractor(audio, sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
    ids = asr.model(**inputs).logits.argmax(-1)[0]
    assert result["text"] == TOKENIZER.decode(ids)


def test_full_depth_save_records_the_settings_for_a_later_prune(tmp_path):
    model = build("wav2vec2-post-norm")
    make_prunable(model, interctc_layers=[1, 3], interctc_weight=0.3, stochastic_depth_rate=0.25,
                  stochastic_depth_schedule="uniform").save_pretrained(tmp_path)
    reloaded = AutoModelForCTC.from_pretrained(tmp_path)
    assert reloaded.config.num_hidden_layers == NUM_LAYERS
    again = make_prunable(reloaded)
    assert again.config.prunable_ctc["replaced_layerdrop"] == pytest.approx(0.1)  # kept across save and reload
    assert (again.interctc_layers, again.interctc_weight, again.stochastic_depth_rate,
            again.stochastic_depth_schedule) == ([1, 3], 0.3, 0.25, "uniform")


class AddOne(torch.nn.Module):
    """Stands for a stock layer: an update of +1 everywhere, counting its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, hidden):
        self.calls += 1
        return hidden + 1.0


def test_stochastic_depth_rescales_kept_layers_and_runs_skipped_ones_under_ddp(monkeypatch):
    model = build("wav2vec2-post-norm").train()
    make_prunable(model, stochastic_depth_rate=0.5, stochastic_depth_schedule="uniform")
    prunable_layer = model.wav2vec2.encoder.layers[0]
    stock = prunable_layer.layer = AddOne()
    x = torch.zeros(1, 3, 2)

    torch.manual_seed(0)
    outputs = {round(prunable_layer(x).mean().item(), 4) for _ in range(40)}
    assert outputs == {0.0, 2.0}  # skipped: x; kept: x + 1 / (1 - 0.5)
    assert stock.calls < 40  # a single process does not compute skipped layers

    monkeypatch.setattr(modeling_prunable_ctc, "distributed_world_size", lambda: 2)
    stock.calls = 0
    outputs = {round(prunable_layer(x).mean().item(), 4) for _ in range(40)}
    assert outputs == {0.0, 2.0} and stock.calls == 40  # DDP: every layer runs, skipped ones count zero

    model.eval()
    assert prunable_layer(x).mean().item() == 1.0  # no skipping or rescaling at inference


def logits_of(wrapped, batch, **kwargs):
    return wrapped(batch[wrapped.main_input_name], attention_mask=batch["attention_mask"], **kwargs).logits


@pytest.mark.parametrize("family", ["wav2vec2-stable-layer-norm", "parakeet"])
def test_a_deep_copy_runs_its_own_weights(family):
    model = build(family).eval()
    wrapped = make_prunable(model).eval()
    batch = batch_for(model)
    original = logits_of(wrapped, batch)
    copied = copy.deepcopy(wrapped)
    torch.testing.assert_close(logits_of(copied, batch), original, rtol=0, atol=0)

    with torch.no_grad():  # the copy's layers only: the front end and head would show a change anyway
        for parameter in copied.family.layers(copied.model).parameters():
            parameter.mul_(0.5)
    changed = logits_of(copied, batch)
    assert not torch.allclose(changed, original)
    # What the copy computes is what its weights compute in the stock model, and the original is untouched.
    stock = build(family).eval()
    stock.load_state_dict(copied.model.state_dict())
    inputs = batch[model.main_input_name]
    torch.testing.assert_close(changed, stock(inputs, attention_mask=batch["attention_mask"]).logits)
    torch.testing.assert_close(logits_of(wrapped, batch), original, rtol=0, atol=0)


def test_a_pickled_wrapper_keeps_its_weights_settings_and_depth_on_demand():
    # Parakeet: the wav2vec2 family's weight-normed positional convolution cannot be pickled even unwrapped.
    model = build("parakeet").eval()
    wrapped = make_prunable(model, interctc_layers=[1, 3], stochastic_depth_rate=0.3).eval()
    batch = batch_for(model)
    restored = pickle.loads(pickle.dumps(wrapped))
    assert (restored.interctc_layers, restored.stochastic_depth_rate) == ([1, 3], 0.3)
    torch.testing.assert_close(logits_of(restored, batch), logits_of(wrapped, batch), rtol=0, atol=0)
    # The restored layers follow the restored wrapper's per-call depth, not the original's.
    torch.testing.assert_close(logits_of(restored, batch, num_layers=2), logits_of(wrapped, batch, num_layers=2),
                               rtol=0, atol=0)
    assert not torch.allclose(logits_of(restored, batch, num_layers=2), logits_of(wrapped, batch))


@pytest.mark.parametrize("family", ["wav2vec2-post-norm", "parakeet"])
def test_state_dicts_keep_the_stock_names_and_the_wrapper_loads_them(family):
    model = build(family).eval()
    stock_names = list(model.state_dict())
    wrapped = make_prunable(model).eval()
    assert list(wrapped.model.state_dict()) == stock_names
    assert list(wrapped.state_dict()) == [f"model.{name}" for name in stock_names]

    torch.manual_seed(1)
    other = type(model)(model.config).eval()  # other weights
    batch = batch_for(model)
    inputs = batch[model.main_input_name]
    expected = other(inputs, attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(logits_of(wrapped, batch), expected)
    result = wrapped.load_state_dict(other.state_dict())  # strict: every name must match
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(logits_of(wrapped, batch), expected, rtol=0, atol=0)
    wrapped.load_state_dict(wrapped.state_dict())  # and its own names


def test_linear_schedule_grows_with_depth():
    wrapped = make_prunable(build("parakeet"), stochastic_depth_rate=0.4)
    assert [wrapped.skip_probability(i) for i in range(1, NUM_LAYERS + 1)] == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_unsupported_models_get_an_error_naming_the_supported_families():
    with pytest.raises(TypeError) as error:
        make_prunable(Wav2Vec2Model(Wav2Vec2Config(**WAV2VEC2_SMALL)))
    for name in SUPPORTED_CLASSES:
        assert name in str(error.value)
    assert "Wav2Vec2Model" in str(error.value)
    with pytest.raises(TypeError, match="ParakeetForCTC"):
        make_prunable(torch.nn.Linear(2, 2))


def test_bad_settings_and_depths_are_refused_with_the_range():
    model = build("wav2vec2-post-norm")
    with pytest.raises(ValueError, match=r"interctc_layers must lie in \[1, 3\]"):
        make_prunable(model, interctc_layers=[4])
    with pytest.raises(ValueError, match="stochastic_depth_rate"):
        make_prunable(model, stochastic_depth_rate=1.0)
    with pytest.raises(ValueError, match="stochastic_depth_schedule"):
        make_prunable(model, stochastic_depth_schedule="exponential")
    wrapped = make_prunable(model)
    batch = batch_for(model)
    with pytest.raises(ValueError, match=r"num_layers must lie in \[1, 4\]"):
        wrapped(batch["input_values"], num_layers=5)
    with pytest.raises(ValueError, match=r"prune_to depth must lie in \[1, 4\]"):
        wrapped.prune_to(0)
