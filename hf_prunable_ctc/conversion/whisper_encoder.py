"""Whisper's pretrained encoder as a prunable CTC model: `PrunableCTCForCTC` with Whisper's front end and layers.

Transformers has no Whisper CTC class for `make_prunable` to wrap, and Whisper's encoder layer is exactly this
package's pre-LayerNorm `TransformerLayer` (LayerNorm, attention, residual; LayerNorm, fc1, exact GELU, fc2,
residual) with absolute instead of rotary positions. So the encoder's weights are copied into the package's own
model, configured with `subsampling_type="whisper"` (conv1 at stride 1, conv2 at stride 2, GELU after each) and
`position_embedding_type="absolute"` (Whisper's 1,500-row table, sliced to the input), and a new CTC head is put
on top. Every part of the package then applies as it is: intermediate CTC, stochastic depth, depth on demand,
early exit, `prune_to`, the pipeline, the Trainer recipes, per-depth evaluation and export.

What differs from Whisper: Whisper always runs 30 s windows, short audio padded with silence that every layer
attends to; here audio runs at its own length, padded frames masked out of attention. The front end's output
(features, convolutions, positions) equals Whisper's on the frames the audio fills; the layers' outputs equal
Whisper's for a full 30 s window and differ for shorter audio, which is what the CTC fine-tuning adapts to.
Whisper's key projection has no bias; the fused projection here starts with a zero key bias.
"""

from typing import Optional, Sequence

WHISPER_ACTIVATIONS = ("gelu",)  # exact (erf) GELU, as `TransformerLayer` uses


def whisper_encoder_of(whisper):
    """The `WhisperEncoder` of a `WhisperForConditionalGeneration`, `WhisperModel` or `WhisperEncoder` (each
    class's `get_encoder()`)."""
    encoder = whisper.get_encoder() if hasattr(whisper, "get_encoder") else None
    if type(encoder).__name__ == "WhisperEncoder":
        return encoder
    raise TypeError(f"expected a Transformers Whisper model (WhisperForConditionalGeneration, WhisperModel or "
                    f"WhisperEncoder), got {type(whisper).__name__}")


def prunable_ctc_from_whisper(whisper, vocab_size: int, pad_token_id: int = 0,
                              interctc_layers: Optional[Sequence[int]] = None, interctc_weight: float = 0.3,
                              stochastic_depth_rate: float = 0.1, dropout: float = 0.0, **config_overrides):
    """A `PrunableCTCForCTC` holding `whisper`'s encoder weights and a freshly initialised CTC head.

    Args:
        whisper: a Transformers Whisper model (its encoder is read; it is not modified).
        vocab_size, pad_token_id: the CTC vocabulary (the tokenizer's size) and its blank / padding id.
        interctc_layers: layers with an intermediate CTC loss; default every layer below the last.
        interctc_weight, stochastic_depth_rate: as in `PrunableCTCConfig`.
        dropout: hidden, attention and activation dropout (Whisper was trained without).
        config_overrides: any other `PrunableCTCConfig` field (SpecAugment, self_conditioning, ...).

    Raises:
        TypeError: `whisper` is not a Whisper model.
        ValueError: its activation is not exact GELU, or a setting is out of range.
    """
    from ..configuration_prunable_ctc import PrunableCTCConfig
    from ..modeling_prunable_ctc import PrunableCTCForCTC

    encoder = whisper_encoder_of(whisper)
    source = encoder.config
    if source.activation_function not in WHISPER_ACTIVATIONS:
        raise ValueError(f"Whisper activation {source.activation_function!r} is not supported (only exact GELU)")
    num_layers = source.encoder_layers
    settings = dict(
        vocab_size=vocab_size, pad_token_id=pad_token_id, num_mel_bins=source.num_mel_bins,
        hidden_size=source.d_model, num_hidden_layers=num_layers,
        num_attention_heads=source.encoder_attention_heads, intermediate_size=source.encoder_ffn_dim,
        encoder_type="transformer", subsampling_type="whisper", subsampling_factor=2,
        position_embedding_type="absolute", max_position_embeddings=source.max_source_positions,
        layer_norm_eps=1e-5, hidden_dropout=dropout, attention_dropout=dropout, activation_dropout=dropout,
        interctc_layers=list(range(1, num_layers)) if interctc_layers is None else list(interctc_layers),
        interctc_weight=interctc_weight, stochastic_depth_rate=stochastic_depth_rate,
    )
    settings.update(config_overrides)
    model = PrunableCTCForCTC(PrunableCTCConfig(**settings))
    model.load_state_dict(encoder_state_dict(encoder, model), strict=True)
    return model


def encoder_state_dict(encoder, model) -> dict:
    """`model`'s state dict with every encoder tensor replaced by the Whisper `encoder`'s (the CTC head and, with
    self-conditioning, its projection keep `model`'s initial values)."""
    import torch

    source = {name: tensor.detach().to(torch.float32) for name, tensor in encoder.state_dict().items()}
    state = dict(model.state_dict())
    mapped = {
        "model.subsampling.convs.0.weight": source["conv1.weight"],
        "model.subsampling.convs.0.bias": source["conv1.bias"],
        "model.subsampling.convs.1.weight": source["conv2.weight"],
        "model.subsampling.convs.1.bias": source["conv2.bias"],
        "model.subsampling.position_embeddings.weight": source["embed_positions.weight"],
        "model.final_norm.weight": source["layer_norm.weight"],
        "model.final_norm.bias": source["layer_norm.bias"],
    }
    for i in range(model.config.num_hidden_layers):
        old, new = f"layers.{i}.", f"model.layers.{i}."
        query_bias = source[old + "self_attn.q_proj.bias"]
        mapped.update({
            new + "attention.qkv.weight": torch.cat([source[old + f"self_attn.{p}_proj.weight"] for p in "qkv"]),
            new + "attention.qkv.bias": torch.cat([query_bias, torch.zeros_like(query_bias),
                                                   source[old + "self_attn.v_proj.bias"]]),
            new + "attention.out.weight": source[old + "self_attn.out_proj.weight"],
            new + "attention.out.bias": source[old + "self_attn.out_proj.bias"],
            new + "attention_norm.weight": source[old + "self_attn_layer_norm.weight"],
            new + "attention_norm.bias": source[old + "self_attn_layer_norm.bias"],
            new + "feed_forward_norm.weight": source[old + "final_layer_norm.weight"],
            new + "feed_forward_norm.bias": source[old + "final_layer_norm.bias"],
            new + "feed_forward.up.weight": source[old + "fc1.weight"],
            new + "feed_forward.up.bias": source[old + "fc1.bias"],
            new + "feed_forward.down.weight": source[old + "fc2.weight"],
            new + "feed_forward.down.bias": source[old + "fc2.bias"],
        })
    unknown = sorted(set(mapped) - set(state))
    if unknown:
        raise KeyError(f"tensors missing from the prunable model: {unknown}")
    state.update(mapped)
    return state


def whisper_feature_extractor(whisper_config, sampling_rate: int = 16000):
    """The package's feature extractor computing `whisper_config`'s log-mel features at the audio's own length."""
    from ..feature_extraction_prunable_ctc import PrunableCTCFeatureExtractor

    bins = whisper_config.num_mel_bins
    return PrunableCTCFeatureExtractor(feature_size=bins, num_mel_bins=bins, sampling_rate=sampling_rate,
                                       do_ceptral_normalize=False, feature_type="whisper_log_mel")


def convert_whisper_to_prunable_ctc(whisper_dir: str, tokenizer_dir: str, output_dir: str, **settings) -> dict:
    """Read a Transformers Whisper folder and a CTC tokenizer folder (any of this package's model folders, or a
    `Wav2Vec2CTCTokenizer`'s), and save the prunable model, its Whisper feature extractor and the tokenizer into
    `output_dir` (new, empty or written by this package). `settings`: those of `prunable_ctc_from_whisper`.
    Returns the output folder, the number of layers and parameters and the files written."""
    from transformers import AutoTokenizer, Wav2Vec2Processor, WhisperForConditionalGeneration

    from ..hub.output_folder import write_output_folder

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    whisper = WhisperForConditionalGeneration.from_pretrained(whisper_dir)
    model = prunable_ctc_from_whisper(whisper, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                      **settings)
    processor = Wav2Vec2Processor(feature_extractor=whisper_feature_extractor(whisper.config), tokenizer=tokenizer)

    def fill(staging: str) -> None:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        processor.feature_extractor.save_pretrained(staging)  # preprocessor_config.json too, for other readers

    files = write_output_folder(output_dir, fill, sources=[whisper_dir, tokenizer_dir])
    return {"output_dir": output_dir, "num_hidden_layers": model.config.num_hidden_layers,
            "parameters": sum(p.numel() for p in model.parameters()), "files": files}
