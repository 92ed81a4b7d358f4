"""Probes of a trained model: robustness to FGSM and PGD, and whether ``g`` shapes the attention.

**FGSM** (Goodfellow et al., ICLR 2015), the attack of the paper's adversarial-robustness
experiment. Each test image ``x`` (pixels in [0, 1]) moves by ``epsilon`` in the direction that
increases the loss fastest under an L-infinity budget, and is clipped back to valid pixels::

    x_adv = clip(x + epsilon * sign(grad_x L(f(x), y)), 0, 1)

The perturbation is made in **pixel space** (before the data set's normalisation), so
``epsilon = 8/255`` means eight grey levels, whatever the normalisation; the model is in eval mode
(dropout off, batch-norm running statistics), as when it predicts. One gradient per image serves
every epsilon: FGSM is a single step from the clean image.

**PGD** (Madry et al., ICLR 2018, Sec. 2), the standard first-order L-infinity attack: start
at a uniformly random point of the epsilon-ball around ``x``, then take ``steps`` projected
sign steps of size ``alpha``::

    x_0     = clip(x + U(-epsilon, epsilon), 0, 1)
    x_{t+1} = clip(proj_{|. - x| <= epsilon}(x_t + alpha * sign(grad L(f(x_t), y))), 0, 1)

with ``alpha = 2.5 * epsilon / steps``, a common rule of thumb: the walk is 2.5 epsilon long,
so from the random start it can reach any corner of the ball and still move along it
(Madry et al.'s CIFAR-10 attack, 7 steps of 2/255 at epsilon 8/255, walks 1.75 epsilon).

One FGSM step can be stopped by a locally flat or noisy loss (gradient masking: label smoothing
and 100 % training accuracy both flatten it); many small steps from a random start are much
harder to stop. An honest evaluation therefore shows PGD accuracy at or below FGSM accuracy at
the same epsilon, accuracy falling as epsilon grows, and about 0 % at a very large epsilon
(:data:`LARGE_EPSILON`); the study reports all three checks. Same pixel space and eval mode
as FGSM.

**g shuffled across the batch.** An attention model computes its maps from the local features
``l_i`` and the global feature ``g`` (Sec. 3). Replacing each image's ``g`` by another image's
before the estimators, and nothing else, measures how much the maps (and so the prediction)
depend on ``g``. For ``pc`` with softmax the answer is *not at all*:
``<u, l_i + g> = <u, l_i> + <u, g>`` and the softmax cancels the constant ``<u, g>``, so the
accuracy change is zero up to float rounding; for ``dp`` (``<l_i, g>``) it is not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._device import model_device
from ..data import ArrayDataset, normalize
from ..models import split_output

#: The paper's experiment's budgets as used by the study: 1, 2, 4 and 8 grey levels of 255.
EPSILONS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
#: A budget far beyond the others (64 grey levels) at which any classifier whose gradients are
#: not masked falls to about 0 % accuracy under PGD: the study's sanity check of the attack.
LARGE_EPSILON = 64 / 255
#: PGD steps of the study (Madry et al. use 7 to 20 on CIFAR-10; 10 is the common choice).
PGD_STEPS = 10
#: PGD step size in units of epsilon / steps (see the module docstring).
PGD_STEP_FACTOR = 2.5


def _check_pixels(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError("images must be a batch (N, C, H, W) of pixels in [0, 1] or uint8")
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float pixels in [0, 1], got {images.dtype}")
    if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
        raise ValueError("float images must be pixels in [0, 1] (not normalised): the attacks "
                         "perturb and clip in pixel space")
    return images.float()


def _check_epsilons(epsilons: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(e) for e in epsilons)
    if not values or any(not 0 <= e <= 1 for e in values):
        raise ValueError(f"epsilons must be numbers in [0, 1] (pixel units; 8/255 = 8 grey "
                         f"levels), got {list(epsilons)}")
    return values


def fgsm_perturb(model: nn.Module, images: Tensor, labels: Tensor, epsilon: float,
                 mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """FGSM adversarial images (N, C, H, W), pixels in [0, 1] (see the module docstring).

    Args:
        model: a classifier taking images normalised with ``mean``/``std``; run in eval mode
            (its mode is restored).
        images: clean pixels, uint8 or float in [0, 1].
        labels: true classes (N,).
        epsilon: the L-infinity budget in pixel units (``4 / 255`` = four grey levels).
        mean, std: the model's normalisation statistics.
    """
    (epsilon,) = _check_epsilons([epsilon])
    x = _check_pixels(images).to(model_device(model))
    sign = _loss_gradient_sign(model, x, labels.to(x.device), mean, std)
    return (x + epsilon * sign).clamp(0, 1)


def _loss_gradient_sign(model: nn.Module, pixels: Tensor, labels: Tensor,
                        mean: Sequence[float], std: Sequence[float]) -> Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = pixels.detach().clone().requires_grad_(True)
            loss = F.cross_entropy(split_output(model(normalize(x, mean, std)))[0].float(), labels)
            (grad,) = torch.autograd.grad(loss, x)
    finally:
        model.train(was_training)
    return grad.sign()


@torch.no_grad()
def _correct(model: nn.Module, pixels: Tensor, labels: Tensor, mean: Sequence[float],
             std: Sequence[float]) -> int:
    return int((split_output(model(normalize(pixels, mean, std)))[0].argmax(1) == labels).sum())


def _batches(dataset: ArrayDataset, batch_size: int, device: torch.device
             ) -> Iterator[tuple[Tensor, Tensor]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    # A generator expression, not a generator function: the checks above run when called.
    return ((dataset.images[start:start + batch_size].to(device).float() / 255,
             dataset.labels[start:start + batch_size].to(device))
            for start in range(0, len(dataset), batch_size))


def fgsm_accuracy(model: nn.Module, dataset: ArrayDataset,
                  epsilons: Sequence[float] = EPSILONS, *, batch_size: int = 500,
                  progress: bool = False) -> dict[float, float]:
    """Accuracy on FGSM images at each epsilon, as ``{epsilon: accuracy}`` (fractions).

    Args:
        model: the classifier, in any mode (evaluated in eval mode) on any device.
        dataset: uint8 images and labels; ``dataset.mean``/``dataset.std`` must be the
            statistics the model was trained with.
        epsilons: budgets in pixel units; 0 gives the clean accuracy.
        batch_size: images per gradient computation.
        progress: show a progress bar.
    """
    values = _check_epsilons(epsilons)

    def adversaries(pixels: Tensor, labels: Tensor) -> Iterator[tuple[float, Tensor]]:
        # One gradient per batch serves every budget: FGSM is one signed step.
        sign = _loss_gradient_sign(model, pixels, labels, dataset.mean, dataset.std)
        for eps in values:
            yield eps, (pixels + eps * sign).clamp(0, 1)

    return _accuracy_under(model, dataset, values, adversaries, batch_size, "FGSM", progress)


def _accuracy_under(model: nn.Module, dataset: ArrayDataset, values: tuple[float, ...],
                    adversaries: Callable[[Tensor, Tensor], Iterator[tuple[float, Tensor]]],
                    batch_size: int, desc: str, progress: bool) -> dict[float, float]:
    """Accuracy per budget on the images ``adversaries(pixels, labels)`` yields for each batch
    (as ``(epsilon, adversarial pixels)``), the model in eval mode meanwhile."""
    from tqdm.auto import tqdm

    correct = dict.fromkeys(values, 0)
    batches = _batches(dataset, batch_size, model_device(model))
    total = -(-len(dataset) // batch_size)
    was_training = model.training
    model.eval()
    try:
        for pixels, labels in tqdm(batches, total=total, desc=desc, leave=False,
                                   disable=not progress):
            for eps, adversarial in adversaries(pixels, labels):
                correct[eps] += _correct(model, adversarial, labels, dataset.mean, dataset.std)
    finally:
        model.train(was_training)
    return {eps: correct[eps] / len(dataset) for eps in values}


def pgd_perturb(model: nn.Module, images: Tensor, labels: Tensor, epsilon: float,
                mean: Sequence[float], std: Sequence[float], *, steps: int = PGD_STEPS,
                step_size: float | None = None, generator: torch.Generator | None = None
                ) -> Tensor:
    """PGD adversarial images (N, C, H, W), pixels in [0, 1] (see the module docstring).

    Args:
        model: a classifier taking images normalised with ``mean``/``std``; run in eval mode
            (its mode is restored).
        images: clean pixels, uint8 or float in [0, 1].
        labels: true classes (N,).
        epsilon: the L-infinity budget in pixel units (``8 / 255`` = eight grey levels).
        mean, std: the model's normalisation statistics.
        steps: projected sign steps after the random start (at least 1).
        step_size: pixel units per step; default ``2.5 * epsilon / steps``.
        generator: draws the random start (seed it for a repeatable attack).
    """
    (epsilon,) = _check_epsilons([epsilon])
    steps, alpha = _check_pgd(steps, step_size, epsilon)
    x = _check_pixels(images).to(model_device(model))
    labels = labels.to(x.device)
    # The random start: uniform in the ball, drawn on the CPU so a seed gives the same start
    # on every device.
    noise = torch.rand(x.shape, generator=generator).mul_(2).sub_(1).mul_(epsilon)
    adversarial = (x + noise.to(x.device)).clamp(0, 1)
    for _ in range(steps):
        sign = _loss_gradient_sign(model, adversarial, labels, mean, std)
        stepped = adversarial + alpha * sign
        # Projection onto the epsilon-ball around x, then onto valid pixels; the ball and the
        # pixel box are both boxes, so clamping to one then the other is the exact projection
        # onto their intersection.
        adversarial = torch.min(torch.max(stepped, x - epsilon), x + epsilon).clamp(0, 1)
    return adversarial.detach()


def _check_pgd(steps: int, step_size: float | None, epsilon: float) -> tuple[int, float]:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer (the study uses {PGD_STEPS}), "
                         f"got {steps!r}")
    if step_size is None:
        return steps, PGD_STEP_FACTOR * epsilon / steps
    if not 0 < float(step_size) <= 1:
        raise ValueError(f"step_size must be in (0, 1] pixel units (default 2.5 * epsilon / "
                         f"steps), got {step_size!r}")
    return steps, float(step_size)


def pgd_accuracy(model: nn.Module, dataset: ArrayDataset,
                 epsilons: Sequence[float] = EPSILONS, *, steps: int = PGD_STEPS,
                 batch_size: int = 500, seed: int = 0, progress: bool = False
                 ) -> dict[float, float]:
    """Accuracy on PGD images at each epsilon, as ``{epsilon: accuracy}`` (fractions).

    Each epsilon gets its own attack (``steps`` steps of ``2.5 * epsilon / steps`` from a
    random start drawn from ``seed``), so the cost is ``steps`` gradients per image per epsilon.

    Args:
        model: the classifier, in any mode (evaluated in eval mode) on any device.
        dataset: uint8 images and labels; ``dataset.mean``/``dataset.std`` must be the
            statistics the model was trained with.
        epsilons: budgets in pixel units; 0 gives the clean accuracy.
        steps: projected sign steps per attack.
        batch_size: images per gradient computation.
        seed: seeds the random starts: the same seed gives the same accuracies.
        progress: show a progress bar.
    """
    values = _check_epsilons(epsilons)
    _check_pgd(steps, None, 0.0)
    generator = torch.Generator().manual_seed(seed)

    def adversaries(pixels: Tensor, labels: Tensor) -> Iterator[tuple[float, Tensor]]:
        # Each budget its own attack; the random starts come from one seeded generator.
        for eps in values:
            yield eps, pgd_perturb(model, pixels, labels, eps, dataset.mean, dataset.std,
                                   steps=steps, generator=generator)

    return _accuracy_under(model, dataset, values, adversaries, batch_size, "PGD", progress)


@contextmanager
def shuffled_global(model: nn.Module, permutation: Tensor) -> Iterator[None]:
    """Within the block, the attention estimators of ``model`` see ``g[permutation]``.

    Only the estimators' input changes: the backbone's ``g`` is replaced on its way out of the
    backbone, and an attention model's classifier reads the attended descriptors, not ``g``.
    The permutation must match the batch size of every forward pass inside the block.
    """
    backbone = getattr(model, "backbone", None)
    if not getattr(model, "levels", ()) or backbone is None:
        raise ValueError(f"{getattr(model, 'name', type(model).__name__)} has no attention "
                         "estimators: there is no g to shuffle before them")

    def hook(_module: nn.Module, _inputs: Any, features: Any) -> Any:
        if len(permutation) != len(features.global_):
            raise ValueError(f"permutation of {len(permutation)} for a batch of "
                             f"{len(features.global_)}")
        return features._replace(global_=features.global_[permutation.to(
            features.global_.device)])

    handle = backbone.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def derangement(n: int, generator: torch.Generator) -> Tensor:
    """A random permutation of ``range(n)`` that moves every index (n >= 2): each image gets
    another image's ``g``, never its own."""
    if n < 2:
        raise ValueError("shuffling g needs at least two images per batch")
    # A random cyclic shift of a random order: no fixed points, uniform over the order.
    order = torch.randperm(n, generator=generator)
    shift = int(torch.randint(1, n, (1,), generator=generator))
    permutation = torch.empty(n, dtype=torch.long)
    permutation[order] = order.roll(shift)
    return permutation


@torch.no_grad()
def global_shuffle_effect(model: nn.Module, dataset: ArrayDataset, *, batch_size: int = 500,
                          seed: int = 0) -> dict[str, float]:
    """How much ``model`` depends on ``g``: accuracy with each image's own ``g`` and with
    ``g`` shuffled across the batch before the attention estimators.

    Returns:
        ``acc`` (own g), ``acc_shuffled``, ``delta_acc`` (shuffled - own; 0 for ``pc``),
        ``max_attention_change`` (the largest change of any attention weight, which lie in
        [0, 1]; float rounding only, ~1e-8, for ``pc``) and ``changed_predictions`` (the
        fraction of images whose predicted class changes).
    """
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    totals = {"own": 0, "shuffled": 0, "changed": 0, "seen": 0}
    max_change = 0.0
    try:
        for pixels, labels in _batches(dataset, batch_size, device):
            if len(labels) < 2:
                continue  # a last batch of one image has no other g to take
            x = normalize(pixels, dataset.mean, dataset.std)
            own = model(x)
            permutation = derangement(len(labels), generator)
            with shuffled_global(model, permutation):
                shuffled = model(x)
            own_pred = split_output(own)[0].argmax(1)
            shuffled_pred = split_output(shuffled)[0].argmax(1)
            totals["own"] += int((own_pred == labels).sum())
            totals["shuffled"] += int((shuffled_pred == labels).sum())
            totals["changed"] += int((own_pred != shuffled_pred).sum())
            totals["seen"] += len(labels)
            for a, b in zip(own.attention, shuffled.attention):
                max_change = max(max_change, float((a - b).abs().max()))
    finally:
        model.train(was_training)
    n = totals["seen"]
    if n == 0:
        raise ValueError("shuffling g needs batches of at least two images")
    acc, shuffled_acc = totals["own"] / n, totals["shuffled"] / n
    return {"acc": acc, "acc_shuffled": shuffled_acc, "delta_acc": shuffled_acc - acc,
            "max_attention_change": max_change, "changed_predictions": totals["changed"] / n}
