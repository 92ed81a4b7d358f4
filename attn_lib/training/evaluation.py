"""Accuracy and loss of a model on a data set, optionally with flip test-time augmentation.

Flip TTA averages the class probabilities of each image and of its mirror image; CIFAR
classes are symmetric under horizontal flips, so this is a free accuracy gain at test time.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._device import model_device
from ..checkpoint import load_model
from ..data import ArrayDataset, DeviceLoader
from ..models import split_output
from .precision import autocast, resolve_precision


@torch.no_grad()
def evaluate(
    model: nn.Module | str | Path,
    data: Any,
    tta: bool = False,
    *,
    batch_size: int = 500,
    device: str | torch.device | None = None,
    precision: str = "auto",
    channels_last: bool = False,
    progress: bool = False,
) -> dict[str, float]:
    """Evaluate ``model`` on ``data``.

    Args:
        model: a model, or the path of a checkpoint (see :func:`attn_lib.load_model`).
        data: an ``ArrayDataset`` (normalised with its own mean/std) or an iterable of
            ``(x, y)`` batches of normalised images and labels, such as a ``DeviceLoader``.
        tta: also compute flip test-time-augmented loss and accuracy.
        batch_size: batch size when ``data`` is a data set.
        device: where to run; default the model's device.
        precision: ``"auto"`` (bf16/fp16 on GPU, fp32 on CPU), ``"bf16"``, ``"fp16"``, ``"fp32"``.
        channels_last: feed channels_last batches (faster on GPUs with tensor cores).
        progress: show a progress bar.

    Returns:
        ``{"loss", "acc", "n"}`` and, with ``tta``, ``"loss_tta"`` and ``"acc_tta"``. The loss is
        the mean cross-entropy (no label smoothing); accuracies are fractions in [0, 1].
    """
    if isinstance(model, (str, Path)):
        model, _ = load_model(model)
    device = torch.device(device) if device is not None else model_device(model)
    if model_device(model) != device:
        model = model.to(device)
    resolved = resolve_precision(device, precision)
    batches = _batches(data, batch_size, device, channels_last)
    sums = evaluation_sums(model, batches, tta, device, resolved, channels_last, progress)
    return metrics_from_sums(sums, tta)


#: Positions in the vector :func:`evaluation_sums` returns.
LOSS, CORRECT, LOSS_TTA, CORRECT_TTA, N = range(5)


@torch.no_grad()
def evaluation_sums(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], tta: bool,
                    device: torch.device, precision: str, channels_last: bool = False,
                    progress: bool = False) -> Tensor:
    """Summed loss and hits over ``batches``, accumulated on ``device``: no host
    synchronisation per batch (read the result once).

    Returns a float64 vector on ``device`` indexed by :data:`LOSS`, :data:`CORRECT`,
    :data:`LOSS_TTA`, :data:`CORRECT_TTA` and :data:`N`: sums, not means, so that the parts of a
    test set evaluated by several processes add up (an all-reduce, see
    :mod:`attn_lib.training.distributed`).
    """
    was_training = model.training
    model.eval()
    # float64, like the Python floats a per-batch read would add up (a float32 sum of 10,000
    # losses would lose digits).
    sums = torch.zeros(5, dtype=torch.float64, device=device)
    try:
        for x, y in tqdm(batches, desc="evaluate", leave=False, disable=not progress):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                logits = split_output(model(x))[0].float()
                logits_flip = split_output(model(x.flip(3)))[0].float() if tta else None
            sums[LOSS] += F.cross_entropy(logits, y, reduction="sum")
            sums[CORRECT] += (logits.argmax(1) == y).sum()
            if logits_flip is not None:
                probs = (logits.softmax(1) + logits_flip.softmax(1)) / 2
                sums[LOSS_TTA] += F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum")
                sums[CORRECT_TTA] += (probs.argmax(1) == y).sum()
            sums[N] += len(y)
    finally:
        model.train(was_training)
    return sums


def metrics_from_sums(sums: Tensor, tta: bool) -> dict[str, float]:
    """The metrics dict of :func:`evaluate` from summed losses and hits (one read)."""
    total = sums.tolist()
    n = int(total[N])
    if n == 0:
        raise ValueError("cannot evaluate on an empty data set")
    result = {"loss": total[LOSS] / n, "acc": total[CORRECT] / n, "n": n}
    if tta:
        result.update(loss_tta=total[LOSS_TTA] / n, acc_tta=total[CORRECT_TTA] / n)
    return result


def _batches(data: Any, batch_size: int, device: torch.device,
             channels_last: bool) -> Iterable[tuple[Tensor, Tensor]]:
    """Batches of (normalised images, labels) from a data set or an existing loader."""
    # Duck typing too: a data set has images, labels and statistics, and is not iterable.
    is_dataset = isinstance(data, ArrayDataset) or (
        all(hasattr(data, a) for a in ("images", "labels", "mean", "std"))
        and not hasattr(data, "__iter__"))
    if is_dataset:
        return DeviceLoader(data, batch_size, train=False, device=device,
                            channels_last=channels_last)
    if isinstance(data, Iterable):
        return data
    raise ValueError(
        f"expected an ArrayDataset or an iterable of (images, labels) batches, "
        f"got {type(data).__name__}"
    )
