"""Device and numeric precision: which autocast dtype, whether a GradScaler, channels_last.

* CPU: fp32 (bf16 autocast on CPUs is slower than fp32 for these convs on most machines).
* CUDA, compute capability >= 8.0 (Ampere, Hopper, ...): bf16 autocast, no scaler needed.
* CUDA before Ampere (T4, V100): fp16 autocast with a GradScaler, since fp16 gradients
  underflow without loss scaling and these cards have no fast bf16.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from .._validation import check_choice
from .recipe import PRECISIONS

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


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


#: cuBLAS gives bit-wise repeatable results only with a fixed workspace configuration (CUDA >=
#: 10.2); PyTorch's deterministic mode checks for one of ":4096:8" and ":16:8".
CUBLAS_WORKSPACE_VAR = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


@contextlib.contextmanager
def backend_flags(device: torch.device, deterministic: bool) -> Iterator[None]:
    """The kernel-selection flags of a training run, restored exactly on exit.

    ``deterministic=False``: on a GPU, cuDNN benchmarks its kernels for the (fixed) input
    shapes and keeps the fastest (``cudnn.benchmark``), whose choice may differ between runs.

    ``deterministic=True``: ``torch.use_deterministic_algorithms(True, warn_only=True)``,
    ``cudnn.deterministic`` on, ``cudnn.benchmark`` off and, on CUDA,
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless it is set (PyTorch reads it when the process
    first uses cuBLAS: a process that used CUDA matrix products before should set it itself,
    before that). With it, a resumed run ends bit-identical to an unbroken one on CUDA as on
    CPU, provided it runs on the same GPU model with the same PyTorch, CUDA and cuDNN versions,
    the same number of processes, the same precision and memory format (all stored in the run
    config, and kept on resume unless changed explicitly). ``warn_only`` because PyTorch
    flags one kernel of these models as having no deterministic CUDA version: the backward of
    adaptive average pooling (``adaptive_avg_pool2d_backward_cuda``, a ``UserWarning``). Here
    it pools to 1x1, so every input gradient receives exactly one atomic add and its result
    does not vary; an error would forbid deterministic training of these models altogether.
    Not checked: runs with ``torch.compile`` (its generated kernels). On a CPU, results also
    depend on the number of threads.
    """
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             os.environ.get(CUBLAS_WORKSPACE_VAR))
    try:
        if deterministic:
            if device.type == "cuda" and saved[4] is None:
                os.environ[CUBLAS_WORKSPACE_VAR] = CUBLAS_WORKSPACE_CONFIG
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick kernels
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2:4]
        if saved[4] is None:
            os.environ.pop(CUBLAS_WORKSPACE_VAR, None)
        else:
            os.environ[CUBLAS_WORKSPACE_VAR] = saved[4]
