"""Configuration of a prunable CTC encoder (intermediate CTC + stochastic depth).

This file is copied next to the weights by `save_pretrained` (remote code): it may import only
`transformers` and the standard library.
"""

from transformers import PretrainedConfig

ENCODER_TYPES = ("transformer", "conformer")
SUBSAMPLING_TYPES = ("conv1d", "conv2d", "whisper")
POSITION_EMBEDDING_TYPES = ("rotary", "absolute")
STOCHASTIC_DEPTH_SCHEDULES = ("linear", "uniform")
CTC_LOSS_REDUCTIONS = ("mean", "sum")
DEPTH_SAMPLING = ("none", "sandwich")
# Named recipes for `interctc_weights`, resolved to one weight per intermediate-CTC layer when the config is built.
INTERCTC_WEIGHT_RECIPES = {"inverse_depth": lambda layers: [1.0 / layer for layer in layers],
                           "uniform": lambda layers: [1.0 for _ in layers]}


def check_stochastic_depth(rate, schedule, owner: str = "") -> None:
    """Raise `ValueError` unless `rate` lies in [0, 1) and `schedule` is one of `STOCHASTIC_DEPTH_SCHEDULES`: the one
    rule for this config and for `make_prunable`. `owner` prefixes the field names in the message.

    A rate of 1 is refused: the layers it reaches (the last with the linear schedule, every layer with the uniform
    one) would be skipped at every training step and never learn, although inference runs them.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{owner}stochastic_depth_rate: must be in [0, 1): at 1 a layer is skipped at every "
                         f"training step and never learns (got {rate!r})")
    if schedule not in STOCHASTIC_DEPTH_SCHEDULES:
        raise ValueError(f"{owner}stochastic_depth_schedule: must be one of {STOCHASTIC_DEPTH_SCHEDULES} "
                         f"(got {schedule!r})")


def check_attention_chunk(chunk_size, left_chunks, owner: str = "") -> None:
    """Raise `ValueError` unless `chunk_size` is an integer >= 0 (0: full context) and `left_chunks` one >= -1 (-1:
    every earlier chunk): the one rule for the config and for a forward call's overrides. `owner` prefixes the
    field names in the message."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 0:
        raise ValueError(f"{owner}chunk_size: must be an integer >= 0, in output frames (0: full context) "
                         f"(got {chunk_size!r})")
    if not isinstance(left_chunks, int) or isinstance(left_chunks, bool) or left_chunks < -1:
        raise ValueError(f"{owner}left_chunks: must be an integer >= -1 (-1: every earlier chunk) "
                         f"(got {left_chunks!r})")


class PrunableCTCConfig(PretrainedConfig):
    r"""
    Configuration of [`PrunableCTCModel`] / [`PrunableCTCForCTC`]: a CTC speech encoder whose depth can be cut at
    run time without fine-tuning (Lee, Kang & Watanabe, "Layer Pruning on Demand with Intermediate CTC", 2021).

    Layer indices are 1-based everywhere ("layer 1" is the first encoder layer) and refer to the layers the model
    holds now; `kept_layers` records which layers of the originally trained model those are.

    Args:
        vocab_size (`int`, defaults to 32): number of CTC output tokens, the blank included.
        pad_token_id (`int`, defaults to 0): id of the padding token, which is also the CTC blank.
        num_mel_bins (`int`, defaults to 80): size of each input feature frame (log-mel bins).
        hidden_size (`int`, defaults to 144): width of the encoder.
        num_hidden_layers (`int`, defaults to 8): number of encoder layers the model holds.
        num_attention_heads (`int`, defaults to 4): attention heads per layer; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 576): inner size of the feed-forward blocks.
        encoder_type (`str`, defaults to `"conformer"`): `"transformer"` (pre-LayerNorm, the paper's model) or
            `"conformer"` (macaron feed-forward, self-attention, depthwise convolution).
        conv_kernel_size (`int`, defaults to 15): depthwise convolution kernel of conformer layers (odd).
        causal_conv (`bool`, defaults to `False`): make the conformer's depthwise convolution causal (each frame
            reads itself and the `conv_kernel_size - 1` frames before it) instead of centred, so that no layer looks
            ahead of its chunk: needed to stream a conformer. Same weights either way.
        chunk_size (`int`, defaults to 0): attention chunk, in output frames (after subsampling, i.e. `hop_length *
            subsampling_factor` samples each): a frame attends to every frame of its own chunk and of the
            `left_chunks` chunks before it, none after. 0 is full context (every frame attends to every frame).
            Used by every forward pass unless the call gives `chunk_size`, or `dynamic_chunk_training` draws one.
        left_chunks (`int`, defaults to -1): chunks of left context each chunk attends to with a chunked mask; -1 is
            every chunk before it.
        dynamic_chunk_training (`bool`, defaults to `False`): in training, draw the attention chunk per batch (WeNet's
            U2): full context with probability `dynamic_chunk_full_context_probability`, else a chunk size drawn
            uniformly from 1 .. `dynamic_chunk_max_size` output frames, with `left_chunks` of left context. One model
            then serves full context and every streaming chunk size up to the largest.
        dynamic_chunk_max_size (`int`, defaults to 25): largest chunk, in output frames, drawn in dynamic training
            (25 frames of 40 ms: 1 s).
        dynamic_chunk_full_context_probability (`float`, defaults to 0.5): probability of a full-context batch in
            dynamic chunk training; in [0, 1].
        subsampling_type (`str`, defaults to `"conv1d"`): `"conv1d"` (stride-2 1-D convolutions over time with the
            mel bins as channels, cheap on CPU) or `"conv2d"` (ESPnet-style 2-D convolutions over time and
            frequency, about 25x slower at small model sizes on CPU) or `"whisper"` (Whisper's encoder front end: a
            kernel-3 convolution at stride 1, then one at stride 2, GELU after each, `hidden_size` channels and no
            projection; needs `subsampling_factor=2`).
        subsampling_factor (`int`, defaults to 4): time reduction of the front end: 2, 4 or 8.
        subsampling_conv_channels (`int`, defaults to 256): channels of the front-end convolutions.
        hop_length (`int`, defaults to 160): audio samples per input feature frame (10 ms at 16 kHz).
        inputs_to_logits_ratio (`int`, *optional*): audio samples per output frame, `hop_length *
            subsampling_factor` when not given. The ASR pipeline needs it for chunking and timestamps.
        hidden_dropout (`float`, defaults to 0.1): dropout on residual branches and after the front end.
        attention_dropout (`float`, defaults to 0.1): dropout on attention probabilities.
        activation_dropout (`float`, defaults to 0.1): dropout inside the feed-forward blocks.
        position_embedding_type (`str`, defaults to `"rotary"`): `"rotary"` (relative positions inside every
            attention layer) or `"absolute"` (a table of `max_position_embeddings` vectors added to the front end's
            output, Whisper's layout; inputs are limited to that many output frames).
        max_position_embeddings (`int`, defaults to 1500): rows of the absolute position table (Whisper: 1500
            frames, 30 s); read only with `position_embedding_type="absolute"`.
        rope_theta (`float`, defaults to 10000.0): base of the rotary position embedding used in every attention
            layer. Rotary (relative) positions are applied inside each layer, so any subset of layers sees
            positions.
        interctc_layers (`list[int]`, defaults to `[]`): layers whose outputs also get a CTC loss through the
            shared final LayerNorm and CTC head. Must lie in `[1, num_hidden_layers - 1]`.
        interctc_weight (`float`, defaults to 0.0): lambda in `(1 - lambda) * CTC(final) + lambda * sum_k w_k *
            CTC(layer k) / sum_k w_k`; in `[0, 1)`.
        interctc_weights (`list[float]` or `str`, *optional*): the exit weights w_k, one per `interctc_layers`
            entry in the order given (sorted together with the layers), each >= 0 and not all 0; equal weights (a
            plain mean, w_k = 1) when not given. `"inverse_depth"` stands for w_k = 1 / k, which favours the shallow
            exits, and is stored as those numbers. Pruning keeps the weights of the exits that remain.
        depth_sampling (`str`, defaults to `"none"`): `"sandwich"` trains sub-networks of sampled depths at every
            training step with labels (the sandwich rule of Dynamic Encoder Size, Interspeech 2024): the smallest
            depth (1 layer) and `sandwich_random_depths` depths drawn uniformly, without replacement and with
            torch's generator, from those in between (2 .. L-1 of the L layers the pass runs). The sub-network of
            depth k is the first k of those layers, run without stochastic depth on the same front-end output
            (same SpecAugment mask) in one extra pass up to the deepest sampled depth, with self-conditioning as
            `forward(num_layers=k)` applies it; its CTC loss is read through the shared final norm and head. The
            full depth is the main pass. `"none"` trains the full depth only.
        sandwich_random_depths (`int`, defaults to 1): depths drawn per step besides the smallest one, >= 0;
            capped at the number of depths in between.
        sandwich_weight (`float`, defaults to 1.0): the sandwich loss, `sandwich_weight * mean_k CTC(sub-network
            k)` over the sampled depths, is added to the loss; > 0.
        distillation_weight (`float`, defaults to 0.0): in-place self-distillation, >= 0 (0: off). The final
            logits of the same pass, detached, teach every intermediate-CTC exit and every sandwich sub-network
            through `KL(teacher || student) * T^2` averaged over valid (non-padded) frames, then over the students;
            `distillation_weight` times it is added to the loss. The teacher is the pass that computes the loss,
            so distillation costs no extra forward pass, only the softmaxes of teacher and students; the sandwich
            sub-networks it also teaches cost their one extra pass (see `depth_sampling`) whether or not they are
            distilled. Like the intermediate CTC losses it is part of every loss with labels, in evaluation too
            (the sandwich students only in training). Needs `interctc_layers` or sandwich sampling.
        distillation_temperature (`float`, defaults to 1.0): T, dividing the teacher's and students' logits before
            the softmax; > 0.
        self_conditioning (`bool`, defaults to `False`): add a projection of each intermediate posterior back to
            the hidden state (Nozaki & Komatsu 2021).
        stochastic_depth_rate (`float`, defaults to 0.0): p_max, the largest probability of skipping a layer in
            training; in `[0, 1)`.
        stochastic_depth_schedule (`str`, defaults to `"linear"`): `"linear"` (p_l = p_max * l / L) or `"uniform"`
            (p_l = p_max).
        ctc_loss_reduction (`str`, defaults to `"mean"`): `"mean"` (each utterance's loss divided by its target
            length, then averaged, as `torch.nn.functional.ctc_loss`) or `"sum"`.
        ctc_zero_infinity (`bool`, defaults to `True`): zero the loss (and gradient) of utterances whose labels
            do not fit in their frames instead of returning inf.
        kept_layers (`list[int]`, *optional*): for each layer the model holds, its index in the originally
            trained model (strictly increasing, from 1); `[1..num_hidden_layers]` when not given. Pruning updates
            it.
        pruning_schedule (`dict[str, list[int]]`, *optional*): for each depth k (as a string key), the layers to
            keep; used by `prune_to(k)` when no strategy is named.
        spec_augment_freq_masks (`int`, defaults to 0): SpecAugment in training: frequency masks per utterance.
        spec_augment_freq_width (`int`, defaults to 15): largest width of a frequency mask, in mel bins.
        spec_augment_time_masks_per_second (`float`, defaults to 0.0): time masks per second of audio (100 frames).
        spec_augment_time_width (`int`, defaults to 40): largest width of a time mask, in frames (10 ms each).
        initializer_range (`float`, defaults to 0.02): std of the normal initialisation of linear layers.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
    """

    model_type = "prunable-ctc"

    def __init__(
        self,
        vocab_size=32,
        pad_token_id=0,
        num_mel_bins=80,
        hidden_size=144,
        num_hidden_layers=8,
        num_attention_heads=4,
        intermediate_size=576,
        encoder_type="conformer",
        conv_kernel_size=15,
        causal_conv=False,
        chunk_size=0,
        left_chunks=-1,
        dynamic_chunk_training=False,
        dynamic_chunk_max_size=25,
        dynamic_chunk_full_context_probability=0.5,
        subsampling_type="conv1d",
        subsampling_factor=4,
        subsampling_conv_channels=256,
        hop_length=160,
        inputs_to_logits_ratio=None,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.1,
        position_embedding_type="rotary",
        max_position_embeddings=1500,
        rope_theta=10000.0,
        interctc_layers=None,
        interctc_weight=0.0,
        interctc_weights=None,
        self_conditioning=False,
        stochastic_depth_rate=0.0,
        stochastic_depth_schedule="linear",
        ctc_loss_reduction="mean",
        ctc_zero_infinity=True,
        depth_sampling="none",
        sandwich_random_depths=1,
        sandwich_weight=1.0,
        distillation_weight=0.0,
        distillation_temperature=1.0,
        kept_layers=None,
        pruning_schedule=None,
        spec_augment_freq_masks=0,
        spec_augment_freq_width=15,
        spec_augment_time_masks_per_second=0.0,
        spec_augment_time_width=40,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.num_mel_bins = num_mel_bins
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.encoder_type = encoder_type
        self.conv_kernel_size = conv_kernel_size
        self.causal_conv = causal_conv
        self.chunk_size = chunk_size
        self.left_chunks = left_chunks
        self.dynamic_chunk_training = dynamic_chunk_training
        self.dynamic_chunk_max_size = dynamic_chunk_max_size
        self.dynamic_chunk_full_context_probability = dynamic_chunk_full_context_probability
        self.subsampling_type = subsampling_type
        self.subsampling_factor = subsampling_factor
        self.subsampling_conv_channels = subsampling_conv_channels
        self.hop_length = hop_length
        self.inputs_to_logits_ratio = (
            inputs_to_logits_ratio if inputs_to_logits_ratio is not None else hop_length * subsampling_factor
        )
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.position_embedding_type = position_embedding_type
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        layers = [int(i) for i in (interctc_layers or [])]
        if isinstance(interctc_weights, str) and interctc_weights in INTERCTC_WEIGHT_RECIPES:
            interctc_weights = INTERCTC_WEIGHT_RECIPES[interctc_weights](layers)
        if isinstance(interctc_weights, (list, tuple)) and len(interctc_weights) == len(layers):
            # Each weight belongs to its layer: sort them together.
            pairs = sorted(zip(layers, interctc_weights), key=lambda pair: pair[0])
            layers, interctc_weights = [i for i, _ in pairs], [w for _, w in pairs]
        self.interctc_layers = sorted(layers)
        self.interctc_weight = interctc_weight
        self.interctc_weights = list(interctc_weights) if isinstance(interctc_weights, tuple) else interctc_weights
        self.self_conditioning = self_conditioning
        self.stochastic_depth_rate = stochastic_depth_rate
        self.stochastic_depth_schedule = stochastic_depth_schedule
        self.ctc_loss_reduction = ctc_loss_reduction
        self.ctc_zero_infinity = ctc_zero_infinity
        self.depth_sampling = depth_sampling
        self.sandwich_random_depths = sandwich_random_depths
        self.sandwich_weight = sandwich_weight
        self.distillation_weight = distillation_weight
        self.distillation_temperature = distillation_temperature
        self.kept_layers = [int(i) for i in kept_layers] if kept_layers is not None else None
        if self.kept_layers is None:
            self.kept_layers = list(range(1, num_hidden_layers + 1))
        self.pruning_schedule = (
            {str(k): [int(i) for i in v] for k, v in pruning_schedule.items()} if pruning_schedule else None
        )
        self.spec_augment_freq_masks = spec_augment_freq_masks
        self.spec_augment_freq_width = spec_augment_freq_width
        self.spec_augment_time_masks_per_second = spec_augment_time_masks_per_second
        self.spec_augment_time_width = spec_augment_time_width
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.check_values()

    def check_values(self):
        """Raise `ValueError` naming the field for any inconsistent setting."""

        def fail(field, message):
            raise ValueError(f"PrunableCTCConfig.{field}: {message} (got {getattr(self, field)!r})")

        for field in ("vocab_size", "num_mel_bins", "hidden_size", "num_hidden_layers", "num_attention_heads",
                      "intermediate_size", "subsampling_conv_channels", "hop_length", "inputs_to_logits_ratio"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(field, "must be a positive integer")
        for field in ("spec_augment_freq_masks", "spec_augment_freq_width", "spec_augment_time_width"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                fail(field, "must be a non-negative integer")
        if self.spec_augment_time_masks_per_second < 0:
            fail("spec_augment_time_masks_per_second", "must be >= 0")
        if self.hidden_size % self.num_attention_heads:
            fail("num_attention_heads", f"must divide hidden_size={self.hidden_size}")
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            fail("position_embedding_type", f"must be one of {POSITION_EMBEDDING_TYPES}")
        if self.position_embedding_type == "rotary" and (self.hidden_size // self.num_attention_heads) % 2:
            fail("num_attention_heads", "hidden_size / num_attention_heads must be even for rotary positions")
        if self.position_embedding_type == "absolute" and (
                not isinstance(self.max_position_embeddings, int) or self.max_position_embeddings < 1):
            fail("max_position_embeddings", "must be a positive integer")
        if self.encoder_type not in ENCODER_TYPES:
            fail("encoder_type", f"must be one of {ENCODER_TYPES}")
        if self.subsampling_type not in SUBSAMPLING_TYPES:
            fail("subsampling_type", f"must be one of {SUBSAMPLING_TYPES}")
        if self.subsampling_factor not in (2, 4, 8):
            fail("subsampling_factor", "must be 2, 4 or 8")
        if self.subsampling_type == "whisper" and self.subsampling_factor != 2:
            fail("subsampling_factor", "must be 2 with subsampling_type='whisper' (Whisper's front end halves time)")
        if not isinstance(self.conv_kernel_size, int) or self.conv_kernel_size < 1 or self.conv_kernel_size % 2 == 0:
            fail("conv_kernel_size", "must be a positive odd integer")
        check_attention_chunk(self.chunk_size, self.left_chunks, "PrunableCTCConfig.")
        for field in ("causal_conv", "dynamic_chunk_training"):
            if not isinstance(getattr(self, field), bool):
                fail(field, "must be True or False")
        value = self.dynamic_chunk_max_size
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            fail("dynamic_chunk_max_size", "must be a positive integer (output frames)")
        if not 0.0 <= self.dynamic_chunk_full_context_probability <= 1.0:
            fail("dynamic_chunk_full_context_probability", "must be in [0, 1]")
        if self.pad_token_id is None or not 0 <= self.pad_token_id < self.vocab_size:
            fail("pad_token_id", f"must be a token id in [0, {self.vocab_size}) (it is the CTC blank)")
        for field in ("hidden_dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                fail(field, "must be in [0, 1)")
        if not 0.0 <= self.interctc_weight < 1.0:
            fail("interctc_weight", "must be in [0, 1)")
        bad = [i for i in self.interctc_layers if not 1 <= i < self.num_hidden_layers]
        if bad:
            fail("interctc_layers", f"indices {bad} are outside [1, {self.num_hidden_layers - 1}] "
                                    "(the last layer already has the final CTC loss)")
        if len(set(self.interctc_layers)) != len(self.interctc_layers):
            fail("interctc_layers", "has duplicates")
        if self.interctc_weight > 0 and not self.interctc_layers:
            fail("interctc_weight", "is > 0 but interctc_layers is empty")
        if self.self_conditioning and not self.interctc_layers:
            fail("self_conditioning", "needs interctc_layers to condition on")
        weights = self.interctc_weights
        if weights is not None:
            if not isinstance(weights, list) or any(
                    isinstance(w, bool) or not isinstance(w, (int, float)) for w in weights):
                fail("interctc_weights", f"must be a list of numbers or one of {sorted(INTERCTC_WEIGHT_RECIPES)}")
            if len(weights) != len(self.interctc_layers):
                fail("interctc_weights", f"must list one weight per interctc_layers entry "
                                         f"({len(self.interctc_layers)}: {self.interctc_layers})")
            if any(not 0.0 <= w < float("inf") for w in weights):
                fail("interctc_weights", "must be finite and >= 0")
            if not sum(weights) > 0:
                fail("interctc_weights", "must not be all 0 (set interctc_weight to 0 to turn the exits' loss off)")
        if self.depth_sampling not in DEPTH_SAMPLING:
            fail("depth_sampling", f"must be one of {DEPTH_SAMPLING}")
        if (not isinstance(self.sandwich_random_depths, int) or isinstance(self.sandwich_random_depths, bool)
                or self.sandwich_random_depths < 0):
            fail("sandwich_random_depths", "must be a non-negative integer")
        if not 0.0 < self.sandwich_weight < float("inf"):
            fail("sandwich_weight", "must be finite and > 0")
        if not 0.0 <= self.distillation_weight < float("inf"):
            fail("distillation_weight", "must be finite and >= 0")
        if self.distillation_weight > 0 and not self.interctc_layers and self.depth_sampling == "none":
            fail("distillation_weight", "is > 0 but there is no student: give interctc_layers or "
                                        "depth_sampling='sandwich'")
        if not 0.0 < self.distillation_temperature < float("inf"):
            fail("distillation_temperature", "must be finite and > 0")
        check_stochastic_depth(self.stochastic_depth_rate, self.stochastic_depth_schedule, "PrunableCTCConfig.")
        if self.ctc_loss_reduction not in CTC_LOSS_REDUCTIONS:
            fail("ctc_loss_reduction", f"must be one of {CTC_LOSS_REDUCTIONS}")
        if len(self.kept_layers) != self.num_hidden_layers:
            fail("kept_layers", f"must list one original index per layer ({self.num_hidden_layers})")
        # Pruning keeps layers in their order, so the original indices of the layers held only ever increase.
        if self.kept_layers[0] < 1 or any(b <= a for a, b in zip(self.kept_layers, self.kept_layers[1:])):
            fail("kept_layers", "must be strictly increasing original layer indices, from 1")
        if self.pruning_schedule:
            for depth, layers in self.pruning_schedule.items():
                if not depth.isdigit() or int(depth) != len(layers) or len(set(layers)) != len(layers):
                    fail("pruning_schedule", f"entry {depth!r} must list {depth} distinct layers")
                if any(not 1 <= i <= self.num_hidden_layers for i in layers):
                    fail("pruning_schedule", f"entry {depth!r} names layers outside [1, {self.num_hidden_layers}]")

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """`PretrainedConfig.from_dict`, with the overrides of this config's fields among `kwargs` (what
        `from_pretrained(path, field=value)` passes on) given to the constructor, so they are normalised and checked
        like constructor arguments instead of set unchecked on a built config.

        Overriding `num_hidden_layers` alone cannot describe fewer layers of a trained model (`interctc_layers`,
        `kept_layers` and `pruning_schedule` name its layers): the error then says to prune the loaded model.
        """
        code = cls.__init__.__code__
        fields = set(code.co_varnames[1:code.co_argcount])  # the constructor's named arguments: this config's fields
        overrides = {name: kwargs.pop(name) for name in list(kwargs) if name in fields}
        try:
            return super().from_dict({**config_dict, **overrides}, **kwargs)
        except ValueError as error:
            if "num_hidden_layers" not in overrides or overrides["num_hidden_layers"] == config_dict.get(
                    "num_hidden_layers"):
                raise
            raise ValueError(f"{error}. To use fewer layers of a trained model, load it whole and prune it: "
                             "PrunableCTCForCTC.from_pretrained(path, num_hidden_layers=k), or model.prune_to(k), "
                             "keeps the layers its pruning schedule names and updates these fields") from error


PrunableCTCConfig.register_for_auto_class("AutoConfig")
