"""RNG state: seeding each epoch, and the states a resumed run restores besides the weights."""

from __future__ import annotations

import random
from typing import Any

import torch

from .._seed import mix_seed, seed_global_rngs


def seed_rngs_for_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed every global RNG the training loop uses (dropout, the torch loader's transforms
    without workers) from ``(seed, epoch)``: a run resumed at an epoch boundary draws exactly
    what an unbroken one does. In a data-parallel run each rank's differently (rank 0 as a lone
    process), so that the ranks' dropout masks are independent."""
    epoch_seed = mix_seed(seed, epoch)
    seed_global_rngs(mix_seed(epoch_seed, rank) if rank else epoch_seed)


def capture_rng() -> dict[str, Any]:
    """The state of the torch (CPU and CUDA), Python and NumPy RNGs, weights_only-safe."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _python_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.astype("int64")), int(pos),
                          int(has_gauss), float(cached)]
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only when the device count matches)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
