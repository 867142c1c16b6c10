"""SVCCA (Raghu et al., NeurIPS 2017): how similar two layers' representations are, up to linear transforms.

Each representation is centred and reduced by SVD to the directions holding `variance_threshold` of its variance
(dropping noise directions); the canonical correlations between the two reduced representations are the singular
values of Qx^T Qy, with Qx, Qy orthonormal bases of the reduced data; SVCCA is their mean, in [0, 1]. It is
invariant to invertible linear maps, which is why a layer whose output is a near-linear function of its input
scores close to 1 against that input: a candidate for removal.
"""

from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import torch


def _as_matrix(x, name: str) -> np.ndarray:
    x = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (frames, features), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def reduced_basis(x, variance_threshold: float = 0.99, epsilon: float = 1e-10) -> np.ndarray:
    """Orthonormal (frames, k) basis of the centred `x` spanned by its top singular directions holding
    `variance_threshold` of the variance. A constant representation gives k = 0."""
    x = _as_matrix(x, "representation")
    x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    variance = s**2
    total = variance.sum()
    if total <= epsilon:
        return u[:, :0]
    keep = int(np.searchsorted(np.cumsum(variance) / total, variance_threshold) + 1)
    keep = min(keep, int((s > epsilon * s[0]).sum()))
    return u[:, :keep]


def _similarity_of_bases(qx: np.ndarray, qy: np.ndarray) -> float:
    if qx.shape[1] == 0 or qy.shape[1] == 0:
        return 0.0
    correlations = np.linalg.svd(qx.T @ qy, compute_uv=False)
    return float(np.clip(correlations[: min(qx.shape[1], qy.shape[1])], 0.0, 1.0).mean())


def _check_frames(num_frames: int, dims: Sequence[int]) -> None:
    # With no more frames than dimensions, any two full-rank representations span the same frame space and
    # correlate perfectly: the similarity would mean nothing.
    if num_frames <= max(dims):
        raise ValueError(f"SVCCA needs more frames than dimensions: {num_frames} frames for representations of up "
                         f"to {max(dims)} dimensions; collect more utterances")


def svcca_similarity(x, y, variance_threshold: float = 0.99) -> float:
    """Mean canonical correlation of the SVD-reduced `x` (frames, dx) and `y` (frames, dy): same frames, in [0, 1].

    1 for identical representations or an invertible linear map of one another; near 0 for independent ones
    (given many more frames than directions).
    """
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same frames: {x.shape[0]} vs {y.shape[0]}")
    _check_frames(x.shape[0], [x.shape[1], y.shape[1]])
    qx, qy = reduced_basis(x, variance_threshold), reduced_basis(y, variance_threshold)
    return _similarity_of_bases(qx, qy)


def svcca_matrix(representations: Sequence, variance_threshold: float = 0.99) -> np.ndarray:
    """(n, n) symmetric SVCCA matrix of n representations of the same frames (each SVD done once)."""
    if not representations:
        raise ValueError("svcca_matrix needs at least one representation")
    matrices = [_as_matrix(r, f"representation {i}") for i, r in enumerate(representations)]
    frames = {m.shape[0] for m in matrices}
    if len(frames) != 1:
        raise ValueError(f"representations must hold the same frames, got frame counts {sorted(frames)}")
    _check_frames(frames.pop(), [m.shape[1] for m in matrices])
    bases = [reduced_basis(m, variance_threshold) for m in matrices]
    n = len(bases)
    matrix = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            matrix[i, j] = matrix[j, i] = _similarity_of_bases(bases[i], bases[j])
    return matrix


def layer_similarity_profile(representations: Sequence, variance_threshold: float = 0.99) -> Dict[str, np.ndarray]:
    """For [input of layer 1, output of layer 1, ..., output of layer L]: each layer's similarity to its own input
    ("to_input", length L), to the final layer ("to_final", length L) and the full (L+1)x(L+1) "matrix"."""
    matrix = svcca_matrix(representations, variance_threshold)
    num_layers = len(representations) - 1
    return {
        "to_input": np.array([matrix[k, k + 1] for k in range(num_layers)]),
        "to_final": matrix[1:, -1].copy(),
        "matrix": matrix,
    }


@torch.no_grad()
def collect_layer_outputs(model, batches: Iterable[Mapping[str, torch.Tensor]],
                          max_frames: Optional[int] = None, seed: int = 0) -> List[torch.Tensor]:
    """Non-padded frames of every entry of `model(..., output_hidden_states=True).hidden_states`, over `batches`.

    Returns a list (input of the first layer, then each layer's output) of (frames, hidden) float tensors with the
    same frames in the same order; at most `max_frames` frames, drawn with a fixed seed, when given.
    """
    was_training = model.training
    model.eval()
    collected: List[List[torch.Tensor]] = []
    for batch in batches:
        out = model(input_features=batch["input_features"], attention_mask=batch.get("attention_mask"),
                    output_hidden_states=True)
        valid = torch.arange(out.hidden_states[0].shape[1], device=out.output_lengths.device)[None, :] \
            < out.output_lengths[:, None]
        if not collected:
            collected = [[] for _ in out.hidden_states]
        for store, hidden in zip(collected, out.hidden_states):
            store.append(hidden[valid].float().cpu())
    model.train(was_training)
    if not collected:
        raise ValueError("no batches to collect layer outputs from")
    outputs = [torch.cat(parts) for parts in collected]
    if max_frames is not None and outputs[0].shape[0] > max_frames:
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(outputs[0].shape[0], generator=generator)[:max_frames].sort().values
        outputs = [o[index] for o in outputs]
    return outputs
