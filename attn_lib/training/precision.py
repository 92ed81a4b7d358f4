"""Device and numeric precision: which autocast dtype, whether a GradScaler, channels_last.

* CPU: fp32 (bf16 autocast on CPUs is slower than fp32 for these convs on most machines).
* CUDA, compute capability >= 8.0 (Ampere, Hopper, ...): bf16 autocast, no scaler needed.
* CUDA before Ampere (T4, V100): fp16 autocast with a GradScaler, since fp16 gradients
  underflow without loss scaling and these cards have no fast bf16.
"""

from __future__ import annotations

import contextlib

import torch

from .._validation import check_choice
from .recipe import PRECISIONS

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` = the first CUDA GPU if there is one, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available here")
    return device


def resolve_precision(device: torch.device, requested: str = "auto") -> str:
    """The precision to train in: ``"bf16"``, ``"fp16"`` or ``"fp32"`` (see module docstring)."""
    check_choice("precision", requested, PRECISIONS)
    if device.type != "cuda":
        if requested in ("auto", "fp32"):
            return "fp32"
        if requested == "bf16":
            return "bf16"  # allowed if asked for explicitly; CPU autocast supports bf16
        raise ValueError("fp16 training needs a CUDA GPU; use --precision fp32 or bf16 on CPU")
    if requested != "auto":
        return requested
    # is_bf16_supported() can be True on pre-Ampere cards (emulated, slow): check the hardware.
    major, _ = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 else "fp16"


def check_precision(device: torch.device, precision: str) -> None:
    """Raise ``ValueError`` if ``device`` cannot train in the resolved ``precision``: fp16 needs
    a CUDA GPU, and bf16 on a GPU needs compute capability 8.0 or newer (before Ampere it is
    emulated, far slower than fp16)."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 training (autocast + GradScaler) needs a CUDA GPU")
    if precision == "bf16" and device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            raise ValueError(f"this GPU (compute capability {major}.{minor}) has no fast bf16; "
                             "bf16 training needs compute capability 8.0 or newer (Ampere+)")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """An autocast context for ``precision`` (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def make_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (a disabled one is a pass-through)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
