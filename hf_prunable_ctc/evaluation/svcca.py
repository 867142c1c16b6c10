"""SVCCA (Raghu et al., NeurIPS 2017): how similar two layers' representations are, up to linear transforms.

Each representation (frames x features) is centred and reduced by SVD to the top directions holding
`variance_threshold` of its variance, which drops the low-variance noise directions that would otherwise find
spurious correlations. The canonical correlations between two reduced representations are the singular values of
Qx^T Qy, where Qx, Qy are orthonormal bases of the reduced data (the left singular vectors: already whitened, so no
covariance matrix is ever inverted). SVCCA is their mean, in [0, 1].

It is invariant to invertible linear maps, which is why a layer whose output is nearly a linear function of its
input scores close to 1 against that input: a candidate for removal.
"""

from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import torch


# The linear algebra runs in torch (float64, CPU) rather than numpy: numpy's multithreaded OpenBLAS can be 100x
# slower on a tall (frames, features) SVD when the cores are shared, torch's LAPACK path is not.


def _as_matrix(x, name: str) -> torch.Tensor:
    """`x` as a float64 CPU (frames, features) tensor, or a ValueError saying what is wrong with it."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to(device="cpu", dtype=torch.float64)
    else:
        x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (frames, features), got shape {x.shape}")
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"{name} needs at least 2 frames and 1 feature, got shape {x.shape}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _check_arguments(variance_threshold: float, epsilon: float) -> None:
    if not 0.0 < variance_threshold <= 1.0:
        raise ValueError(f"variance_threshold must be in (0, 1], got {variance_threshold}")
    if not epsilon > 0.0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")


def _reduced_basis(x: torch.Tensor, variance_threshold: float, epsilon: float, name: str) -> torch.Tensor:
    """Orthonormal (frames, k) basis of the centred `x` spanned by its top k singular directions, the fewest
    holding `variance_threshold` of the variance, and never a direction with a singular value under `epsilon`
    times the largest (numerically zero: the layer maps into a subspace)."""
    centred = x - x.mean(dim=0, keepdim=True)
    # A representation constant over frames has no directions to correlate: SVCCA is undefined, not 0 or 1.
    if centred.abs().max() <= epsilon * x.abs().max():
        raise ValueError(f"{name} is constant over frames: SVCCA is undefined for it")
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    variance = s**2
    explained = torch.cumsum(variance, 0) / variance.sum()
    keep = int((explained < variance_threshold).sum()) + 1  # the fewest leading directions reaching the threshold
    rank = int((s > epsilon * s[0]).sum())
    # A copy, so that the full (frames, features) U is freed once only k columns are needed.
    return u[:, : min(keep, rank)].clone()


def _check_frames(num_frames: int, reduced_dims: Sequence[int]) -> None:
    # Centred frames live in a (frames - 1)-dimensional space: two subspaces of kx + ky > frames - 1 dimensions
    # must intersect there, so some canonical correlations are 1 whatever the data. The similarity would be
    # inflated (identical for unrelated layers), so refuse rather than return it.
    largest = sorted(reduced_dims)[-2:]
    if num_frames <= sum(largest):
        raise ValueError(
            f"SVCCA needs more frames than the reduced dimensions of the two representations together: "
            f"{num_frames} frames for {' + '.join(map(str, largest))} directions kept by the SVD; collect more "
            f"frames (utterances), ideally many times more")


def _similarity_of_bases(qx: torch.Tensor, qy: torch.Tensor) -> float:
    # Only min(kx, ky) canonical correlations exist; rounding can push them a hair above 1.
    correlations = torch.linalg.svdvals(qx.T @ qy)
    return float(correlations.clamp(0.0, 1.0).mean())


def svcca_similarity(x, y, variance_threshold: float = 0.99, epsilon: float = 1e-6) -> float:
    """SVCCA similarity of two representations of the same frames.

    Args:
        x: (num_frames, dim_x) array or tensor, e.g. one layer's output on the non-padded frames of a dev set.
        y: (num_frames, dim_y) array or tensor of the same frames in the same order (dim_y may differ from dim_x).
        variance_threshold: fraction of each representation's variance (in (0, 1]) that the SVD step keeps.
        epsilon: singular values below `epsilon` times the largest count as zero (rank deficiency).

    Returns:
        The mean canonical correlation between the SVD-reduced x and y, a float in [0, 1]: 1 for identical
        representations or invertible linear maps of one another, near 0 for independent ones given many more
        frames than kept directions. Computed in float64.

    Raises:
        ValueError: x or y not 2-D, containing NaN/inf, or constant over frames; different frame counts; or
            num_frames not exceeding the number of directions the SVD keeps in x and y together.
    """
    _check_arguments(variance_threshold, epsilon)
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same frames: {x.shape[0]} vs {y.shape[0]} frames")
    qx = _reduced_basis(x, variance_threshold, epsilon, "x")
    qy = _reduced_basis(y, variance_threshold, epsilon, "y")
    _check_frames(x.shape[0], [qx.shape[1], qy.shape[1]])
    return _similarity_of_bases(qx, qy)


def svcca_matrix(representations: Sequence, variance_threshold: float = 0.99, epsilon: float = 1e-6) -> np.ndarray:
    """Pairwise SVCCA similarities of n representations of the same frames.

    Args:
        representations: n arrays or tensors of shape (num_frames, dim_i); the widths may differ.
        variance_threshold, epsilon: as in [`svcca_similarity`].

    Returns:
        (n, n) float64 array, symmetric, ones on the diagonal, entry (i, j) = svcca_similarity(rep_i, rep_j).
        Each representation's SVD is computed once, not once per pair.

    Raises:
        ValueError: no representations, different frame counts, or any of the problems [`svcca_similarity`]
            raises for.
    """
    _check_arguments(variance_threshold, epsilon)
    if len(representations) == 0:
        raise ValueError("svcca_matrix needs at least one representation")
    matrices = [_as_matrix(r, f"representation {i}") for i, r in enumerate(representations)]
    frames = sorted({m.shape[0] for m in matrices})
    if len(frames) != 1:
        raise ValueError(f"representations must hold the same frames, got frame counts {frames}")
    bases = [_reduced_basis(m, variance_threshold, epsilon, f"representation {i}") for i, m in enumerate(matrices)]
    n = len(bases)
    if n > 1:
        _check_frames(frames[0], [b.shape[1] for b in bases])
    matrix = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            matrix[i, j] = matrix[j, i] = _similarity_of_bases(bases[i], bases[j])
    return matrix


def layer_similarity_profile(representations: Sequence, variance_threshold: float = 0.99,
                             epsilon: float = 1e-6) -> Dict[str, np.ndarray]:
    """How much each encoder layer changes its input, and how close each layer already is to the last one.

    Args:
        representations: L + 1 arrays or tensors of shape (num_frames, hidden) of the same frames:
            [input of layer 1, output of layer 1, ..., output of layer L], e.g. from [`collect_layer_outputs`].
        variance_threshold, epsilon: as in [`svcca_similarity`].

    Returns:
        "to_input": (L,) similarity of layer k's output to its own input (entry k - 1); close to 1 means the
            layer is nearly linear in its input, a candidate for removal.
        "to_final": (L,) similarity of layer k's output to layer L's output (the last entry is 1).
        "matrix": the (L + 1, L + 1) [`svcca_matrix`] of all representations.
    """
    if len(representations) < 2:
        raise ValueError("layer_similarity_profile needs the input of layer 1 and at least one layer output, got "
                         f"{len(representations)} representation(s)")
    matrix = svcca_matrix(representations, variance_threshold, epsilon)
    num_layers = len(representations) - 1
    return {
        "to_input": np.array([matrix[k, k + 1] for k in range(num_layers)]),
        "to_final": matrix[1:, -1].copy(),
        "matrix": matrix,
    }


@torch.no_grad()
def collect_layer_outputs(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                          max_frames: Optional[int] = None, seed: int = 0) -> List[torch.Tensor]:
    """Every layer's representation of the non-padded frames of `batches`, ready for SVCCA.

    Args:
        model: called as `model(input_features=..., attention_mask=..., output_hidden_states=True)`; its output
            must have `hidden_states` (tuple of (B, T', H) tensors: index 0 the input of the first layer, index k
            the output of layer k) and `output_lengths` ((B,) LongTensor: valid frames of each item along T').
            Run in eval mode without gradients; its training mode is restored afterwards.
        batches: iterable of dicts with `input_features` (B, T, F) and `attention_mask` (B, T); other keys
            (e.g. `labels`) are ignored. Moved to the model's device.
        max_frames: keep at most this many frames, drawn uniformly without replacement from a generator seeded
            with `seed` (the same frames for every layer, in their original order); None keeps all.
        seed: seed of that draw, so that repeated analyses see the same frames.

    Returns:
        len(hidden_states) float32 CPU tensors of shape (N, H), one per hidden state, holding the same N frames
        in the same order (utterance by utterance, batch by batch), padding excluded.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be a positive number of frames or None, got {max_frames}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    collected: List[List[torch.Tensor]] = []
    try:
        for batch in batches:
            mask = batch.get("attention_mask")
            out = model(input_features=batch["input_features"].to(device),
                        attention_mask=mask.to(device) if mask is not None else None, output_hidden_states=True)
            hidden_states, lengths = getattr(out, "hidden_states", None), getattr(out, "output_lengths", None)
            if hidden_states is None or lengths is None:
                raise ValueError("the model's output needs `hidden_states` and `output_lengths` to collect layer "
                                 "outputs")
            if collected and len(hidden_states) != len(collected):
                raise ValueError(f"the model returned {len(hidden_states)} hidden states for one batch and "
                                 f"{len(collected)} for an earlier one")
            num_out_frames = hidden_states[0].shape[1]
            if int(lengths.max()) > num_out_frames:
                raise ValueError(f"output_lengths (max {int(lengths.max())}) exceed the {num_out_frames} frames of "
                                 "the hidden states")
            # Padded frames hold whatever the layers computed from padding: they must not enter the statistics.
            valid = torch.arange(num_out_frames, device=lengths.device)[None, :] < lengths[:, None]
            valid = valid.to(hidden_states[0].device)
            if not collected:
                collected = [[] for _ in hidden_states]
            for store, hidden in zip(collected, hidden_states):
                store.append(hidden[valid].float().cpu())
    finally:
        model.train(was_training)
    if not collected:
        raise ValueError("no batches to collect layer outputs from")
    outputs = [torch.cat(parts) for parts in collected]
    if max_frames is not None and outputs[0].shape[0] > max_frames:
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(outputs[0].shape[0], generator=generator)[:max_frames].sort().values
        outputs = [o[index] for o in outputs]
    return outputs
