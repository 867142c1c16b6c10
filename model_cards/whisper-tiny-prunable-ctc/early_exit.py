"""Early exit by confidence: stop each utterance at the first intermediate-CTC layer whose output it is sure of.

With intermediate CTC every layer in `config.interctc_layers` (and the last layer) can emit a transcript through
the shared final norm + CTC head. `early_exit_forward` runs the layers in order and, at each of these exit layers,
scores every utterance still running with `max_posterior_confidence`; utterances whose confidence reaches the
threshold leave the batch (later layers run only on the others, trimmed to their longest valid length), so the
compute saved is real. An utterance's logits are those of running it alone with `num_layers=exit_depth`.

Part of the remote code (copied next to the weights with `modeling_prunable_ctc.py`): imports only torch and
siblings.
"""

from typing import List, Optional

import torch


def max_posterior_confidence(logits: torch.Tensor, lengths: torch.Tensor, blank: int) -> torch.Tensor:
    """Per-utterance confidence in [0, 1]: the mean, over valid frames whose greedy label is not the blank, of the
    largest posterior. An utterance whose frames are all blank (greedy transcript empty) is scored over all its
    valid frames; one without valid frames scores 1 (there is nothing left to decide).

    logits: (batch, frames, vocab); lengths: (batch,) valid frames. Returns (batch,) float32.
    """
    posteriors = logits.float().softmax(dim=-1)
    best, labels = posteriors.max(dim=-1)  # (batch, frames)
    valid = torch.arange(logits.shape[1], device=logits.device)[None, :] < lengths[:, None]
    speech = valid & (labels != blank)
    # Frames that count: the non-blank ones, or all valid frames where there are none.
    counted = torch.where(speech.any(dim=1, keepdim=True), speech, valid).float()
    total = counted.sum(dim=1)
    mean = (best * counted).sum(dim=1) / total.clamp(min=1.0)
    return torch.where(total > 0, mean, torch.ones_like(mean))


def exit_layers(config) -> List[int]:
    """The (1-based) layers an utterance can stop at: the intermediate-CTC layers, then the last layer."""
    last = config.num_hidden_layers
    return sorted({layer for layer in config.interctc_layers if layer < last} | {last})


def check_threshold(threshold: float) -> float:
    """Reject a threshold that is not a real number (a string from a form, NaN)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold != threshold:
        raise ValueError(f"early_exit_threshold must be a number (0 exits at the first intermediate-CTC layer, "
                         f"above 1 never exits early), got {threshold!r}")
    return float(threshold)


def early_exit_forward(model, input_features: torch.Tensor, attention_mask: Optional[torch.Tensor],
                       threshold: float, chunk_size: Optional[int] = None, left_chunks: Optional[int] = None):
    """Run `model` (a `PrunableCTCForCTC` in eval mode) with early exit; see the module docstring.

    Args:
        input_features: (batch, frames, num_mel_bins) log-mel features.
        attention_mask: (batch, frames), 1 on valid frames, or None.
        threshold: exit once `max_posterior_confidence >= threshold`; 0 exits at the first exit layer, a value
            above 1 never exits before the last layer.
        chunk_size, left_chunks: attention chunk and left context, as `PrunableCTCModel.forward` takes them.

    Returns:
        (logits, output_lengths, exit_depths, confidences): logits (batch, frames, vocab) with each utterance's
        valid frames from its exit layer (padding frames are certain blanks, as in the plain forward); output_lengths (batch,); exit_depths (batch,)
        LongTensor of 1-based layers; confidences (batch,) float32 at the exit layer.
    """
    threshold = check_threshold(threshold)
    encoder, config = model.model, model.config
    from .modeling_prunable_ctc import attention_key_mask, blank_padded_frames, lengths_to_mask

    input_features, lengths = encoder.checked_inputs(input_features, attention_mask)
    chunk = encoder.attention_chunk(chunk_size, left_chunks)
    batch = input_features.shape[0]
    hidden, lengths = encoder.subsampling(input_features, lengths)
    output_lengths = lengths
    device = hidden.device
    logits = hidden.new_zeros(batch, hidden.shape[1], config.vocab_size)
    exit_depths = torch.full((batch,), len(encoder.layers), dtype=torch.long, device=device)
    confidences = torch.ones(batch, dtype=torch.float32, device=device)
    if hidden.shape[1] == 0:
        # No frames: nothing to encode; the logits are empty whatever the depth, so report the first exit.
        exit_depths.fill_(exit_layers(config)[0])
        return logits, output_lengths, exit_depths, confidences

    exits = set(exit_layers(config))
    last = len(encoder.layers)
    running = torch.arange(batch, device=device)  # original indices of the utterances still in the batch
    frame_mask = None
    for index, layer in enumerate(encoder.layers, start=1):
        if frame_mask is None:
            # First layer, or utterances just exited: trim the time axis to the longest remaining one (padding
            # does not change valid frames, so this only saves work) and rebuild the masks and rotary tables.
            width = int(lengths.max())
            hidden = hidden[:, :width]
            frame_mask = lengths_to_mask(lengths, width)
            key_mask = attention_key_mask(frame_mask, *chunk)
            rotary = encoder.rotary(width, hidden.dtype, device)
        hidden, _ = layer(hidden, key_mask, frame_mask, rotary, False)
        if index not in exits:
            continue
        exit_logits = model.logits_from_hidden_state(hidden)
        score = max_posterior_confidence(exit_logits, lengths, config.pad_token_id)
        leaving = score >= threshold if index < last else torch.ones_like(score, dtype=torch.bool)
        if bool(leaving.any()):
            rows = running[leaving]
            kept = exit_logits[leaving].masked_fill(~frame_mask[leaving][:, :, None], 0.0)
            logits[rows, :width] = kept.to(logits.dtype)
            exit_depths[rows] = index
            confidences[rows] = score[leaving]
            staying = ~leaving
            running, hidden, lengths = running[staying], hidden[staying], lengths[staying]
            exit_logits = exit_logits[staying]
            frame_mask = None
        if running.numel() == 0:
            break
        if config.self_conditioning:
            # As in the plain forward: intermediate-CTC layers feed their posteriors back to the next layer.
            hidden = hidden + encoder.conditioning_projection(exit_logits.softmax(dim=-1))
    return blank_padded_frames(logits, output_lengths, config.pad_token_id), output_lengths, exit_depths, confidences
