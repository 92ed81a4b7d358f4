"""Seeds: one mixer that every seeded draw of attn-lib derives its seed with.

A run's randomness is a pure function of its seed: each epoch's shuffle, augmentation and
dropout masks draw from ``mix_seed(seed, epoch)`` (a data-parallel rank's from
``mix_seed(mix_seed(seed, epoch), rank)``), so a run resumed at an epoch boundary draws exactly
what an unbroken one does.
"""

from __future__ import annotations

import random

import torch

_MASK64 = 0xFFFFFFFFFFFFFFFF


def mix_seed(*values: int) -> int:
    """Combine integers into one well-spread 63-bit seed (the SplitMix64 finaliser).

    Unlike a linear formula, nearby inputs give unrelated seeds, so (seed, epoch) and
    (seed, epoch + 1), or two ranks, never draw correlated streams.
    """
    h = 0x9E3779B97F4A7C15
    for value in values:
        h = (h ^ (int(value) & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & _MASK64
    return h >> 1


def seed_global_rngs(seed: int) -> None:
    """Seed the global torch (CPU and every CUDA device) and Python RNGs with ``seed``."""
    torch.manual_seed(seed)
    random.seed(seed)
