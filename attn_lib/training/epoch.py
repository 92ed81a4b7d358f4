"""The epoch loop: SGD steps over the training batches, then evaluation, checkpoints and one
line of metrics per epoch.

One epoch: seed the RNGs from (seed, epoch), shuffle and augment (on the device, or in the
torch DataLoader's workers), mixed-precision SGD steps with the lr schedule and the EMA, a
watch for a non-finite loss read every few steps, then evaluation on the validation images (if
any) and the test set, ``best.pt`` when validation accuracy is the best so far, ``last.pt``
always, and a line of ``metrics.jsonl``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .._device import synchronize
from ..checkpoint import LAST
from ..models import split_output
from . import distributed
from .distributed import SINGLE, Distributed
from .evaluation import evaluation_sums, metrics_from_sums
from .history import append_metrics
from .precision import autocast
from .rng import seed_rngs_for_epoch
from .run import Run
from .run_folder import save_epoch_checkpoints, snapshot


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training stopped, checkpoints untouched."""


class EpochStats(NamedTuple):
    """What one epoch of training measured (before evaluation)."""

    loss: float  #: mean training loss (with label smoothing) over the epoch's images
    acc: float  #: training accuracy on the augmented batches
    images: int
    train_time: float  #: seconds of the training steps
    started: float  #: ``time.perf_counter()`` at the epoch's start


def selection_key(run: Run) -> str | None:
    """The metric ``best.pt`` is chosen by: validation accuracy (flip-TTA when the recipe
    reports it); None without a validation split -- the test set never chooses a checkpoint."""
    if run.val_loader is None:
        return None
    return "val_acc_tta" if run.recipe.tta else "val_acc"


def fit(run: Run, compile: bool = False, progress: bool = False) -> None:
    """Train epochs ``run.start_epoch .. recipe.epochs - 1``, appending to ``run.history``,
    with a one-time warm-up (compilation, cuDNN's kernel search) before the clock starts."""
    recipe, group = run.recipe, run.settings.group
    train_module = distributed.wrap(run.model, run.settings.device, group)
    if compile:
        train_module = torch.compile(train_module)
    warmup_s = 0.0
    if (compile or run.settings.device.type == "cuda") and run.start_epoch < recipe.epochs:
        warmup_s = _warm_up_run(run, train_module)
        if progress:
            what = "compiled the model" if compile else "warmed up cuDNN"
            print(f"{what} in {warmup_s:.1f} s (one-time; not counted as training time)")
    key = selection_key(run)
    best = max((row[key] for row in run.history), default=-1.0) if key else None
    for epoch in range(run.start_epoch, recipe.epochs):
        stats = train_epoch(run, train_module, epoch, progress)
        row = _epoch_row(run, epoch, stats, evaluate_epoch(run))
        row["warmup_s"] = warmup_s if epoch == run.start_epoch else 0.0
        run.history.append(row)
        is_best = key is not None and row[key] > best
        if group.is_main:  # every rank holds the same row: rank 0 writes it
            save_epoch_checkpoints(run, epoch + 1, is_best=is_best)
            append_metrics(run.settings.run_dir, row)
        if is_best:
            best = row[key]
        if progress:
            tqdm.write(_summary(row, recipe.epochs))


def _warm_up_run(run: Run, train_module: nn.Module) -> float:
    settings = run.settings
    shape = (min(run.recipe.batch_size, len(run.train_ds)), *run.train_ds.images.shape[1:])
    return warm_up(train_module, run.model, shape, settings.device, settings.precision,
                   settings.channels_last)


def train_epoch(run: Run, train_module: nn.Module, epoch: int, progress: bool) -> EpochStats:
    """One epoch of SGD steps, with the schedule, the EMA and the non-finite-loss watch."""
    settings = run.settings
    _start_epoch(run, epoch)
    steps = len(run.train_loader)
    read_every = HOST_READ_EVERY.get(settings.device.type, DEFAULT_HOST_READ_EVERY)
    watch = NonFiniteWatch(settings.device)
    meter = EpochMeter(settings.device)
    first_step = run.schedule.step_count
    synchronize(settings.device)
    started = time.perf_counter()
    bar = tqdm(run.train_loader, total=steps, desc=f"epoch {epoch + 1}/{run.recipe.epochs}",
               leave=False, disable=not progress)
    for i, (x, y) in enumerate(_on_device(bar, settings.device, settings.channels_last)):
        loss, logits = _step(run, train_module, x, y)
        watch.observe(loss)
        meter.add(loss, logits, y)
        if (i + 1) % read_every == 0 or i + 1 == steps:
            _stop_if_non_finite(watch, run, epoch, first_step)
            if progress and ((i + 1) % 10 == 0 or i + 1 == steps):
                bar.set_postfix(loss=f"{meter.mean_loss():.3f}", lr=f"{run.schedule.lr:.3g}")
    bar.close()
    loss, acc, images = meter.global_totals(settings.group)
    synchronize(settings.device)
    return EpochStats(loss, acc, images, time.perf_counter() - started, started)


def _start_epoch(run: Run, epoch: int) -> None:
    """Seed the epoch's RNGs, tell the loader its epoch, put the model in training mode."""
    seed_rngs_for_epoch(run.settings.config["seed"], epoch, run.settings.group.rank)
    if hasattr(run.train_loader, "set_epoch"):
        run.train_loader.set_epoch(epoch)
    run.model.train()


def _on_device(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
               channels_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches on ``device`` in the run's memory format (the torch DataLoader path yields
    CPU tensors; the device loader's are there already)."""
    for x, y in batches:
        if x.device != device:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, y


def _step(run: Run, train_module: nn.Module, x: torch.Tensor, y: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step, then the lr schedule's and the EMA's."""
    loss, logits = train_step(train_module, x, y, run.optimizer, run.scaler,
                              run.settings.device, run.settings.precision,
                              run.recipe.label_smoothing)
    run.schedule.step()
    if run.ema is not None:
        run.ema.update(run.model)
    return loss, logits


def _stop_if_non_finite(watch: NonFiniteWatch, run: Run, epoch: int, first_step: int) -> None:
    failed = watch.read(run.settings.group)
    if failed is not None:
        step, value = failed
        raise NonFiniteLossError(_nan_message(value, epoch, step,
                                              run.schedule.lr_at(first_step + step), run))


class EpochMeter:
    """Training loss and hits of an epoch, summed on the device (no host synchronisation per
    step) and read once at its end."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss_sum += loss.detach() * len(labels)
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.seen += len(labels)

    def mean_loss(self) -> float:
        """This rank's mean loss so far (one host read: for the progress bar)."""
        return self.loss_sum.item() / self.seen

    def global_totals(self, group: Distributed = SINGLE) -> tuple[float, float, int]:
        """``(mean loss, accuracy, images)`` of the whole global batch: summed over the
        ranks, read once."""
        device = self.loss_sum.device
        totals = torch.stack([self.loss_sum.double(), self.correct.double(),
                              torch.tensor(self.seen, dtype=torch.float64, device=device)])
        loss_total, correct_total, images = distributed.all_reduce_sum(totals, group).tolist()
        return loss_total / images, correct_total / images, int(images)


def _epoch_row(run: Run, epoch: int, stats: EpochStats,
               evaluated: dict[str, float]) -> dict[str, Any]:
    """One line of metrics.jsonl (see :mod:`attn_lib.training.history`)."""
    schedule = run.schedule
    elapsed = stats.train_time + (run.history[-1]["elapsed_s"] if run.history else 0.0)
    return {
        "epoch": epoch + 1, "train_loss": stats.loss, "train_acc": stats.acc, **evaluated,
        "lr": schedule.lr_at(schedule.step_count - 1), "train_time_s": stats.train_time,
        "time_s": time.perf_counter() - stats.started, "elapsed_s": elapsed,
        "images_per_s": stats.images / stats.train_time,
    }


def evaluate_epoch(run: Run) -> dict[str, float]:
    """Validation (if the run holds images out) and test loss and accuracy, with flip TTA when
    the recipe asks, of the evaluated module: ``val_*`` and ``test_*`` keys. In a data-parallel
    run each rank evaluates its shard with rank 0's buffers, and the sums are all-reduced."""
    distributed.broadcast_buffers(run.eval_model, run.settings.group)
    row: dict[str, float] = {}
    if run.val_loader is not None:
        row.update(_evaluate_loader(run, run.val_loader, "val"))
    row.update(_evaluate_loader(run, run.test_loader, "test"))
    return row


def _evaluate_loader(run: Run, loader: Iterable[Any], prefix: str) -> dict[str, float]:
    # The uncompiled module: eval mode and another batch size would make torch.compile build
    # (and time) new graphs for a small share of the work.
    settings, tta = run.settings, run.recipe.tta
    sums = evaluation_sums(run.eval_model, loader, tta, settings.device, settings.precision)
    metrics = metrics_from_sums(distributed.all_reduce_sum(sums, settings.group), tta)
    row = {f"{prefix}_loss": metrics["loss"], f"{prefix}_acc": metrics["acc"]}
    if tta:
        row.update({f"{prefix}_loss_tta": metrics["loss_tta"],
                    f"{prefix}_acc_tta": metrics["acc_tta"]})
    return row


#: Steps between reads of the loss on the host. A read waits for the GPU to finish all queued
#: work, so on a GPU it happens every few dozen steps; :class:`NonFiniteWatch` still names the
#: step that failed.
HOST_READ_EVERY = {"cpu": 1}
DEFAULT_HOST_READ_EVERY = 25


class NonFiniteWatch:
    """The first step of an epoch whose loss is NaN or infinite, recorded on the device.

    Recording costs a few tiny kernels per step and no host synchronisation; :meth:`read` (one
    synchronisation) then reports the failing step even when it runs many steps later.
    """

    def __init__(self, device: torch.device) -> None:
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.value = torch.zeros((), device=device)

    def observe(self, loss: torch.Tensor) -> None:
        """Note this step's loss (a 0-dim tensor on the device)."""
        loss = loss.detach().float()
        first_bad = (self.first < 0) & ~torch.isfinite(loss)
        self.first = torch.where(first_bad, self.step, self.first)
        self.value = torch.where(first_bad, loss, self.value)
        self.step += 1

    def read(self, group: Distributed = SINGLE) -> tuple[int, float] | None:
        """``(step, loss)`` of the first non-finite loss (0-based step), or None. In a
        data-parallel run, the first over all ranks (every rank gets the same answer, so all
        stop together); the loss is this rank's at that step."""
        never = torch.iinfo(torch.long).max
        first = torch.where(self.first < 0, never, self.first)
        first = int(distributed.all_reduce_min(first, group))
        if first == never:
            return None
        return first, float(self.value) if first == int(self.first) else float("nan")


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               device: torch.device, precision: str, label_smoothing: float = 0.0,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step under autocast; returns the (un-synchronised) loss and logits."""
    with autocast(device, precision):
        logits = split_output(model(x))[0]
    # The loss in fp32: bf16/fp16 log-softmax over classes loses precision for no speed gain.
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, logits


def warm_up(train_module: nn.Module, model: nn.Module, batch_shape: tuple[int, ...],
            device: torch.device, precision: str, channels_last: bool) -> float:
    """Run one forward and backward pass of ``train_module`` so that ``torch.compile`` (and the
    cuDNN autotuner) do their one-time work before the clock starts; return its seconds.

    Nothing of it is kept: the weights and batch-norm statistics of ``model`` (which
    ``train_module`` wraps) are restored and the gradients dropped, so a run with compilation
    trains exactly as one without. (The global RNG is reseeded at the start of every epoch.)
    """
    synchronize(device)
    start = time.perf_counter()
    saved = snapshot(model)
    was_training = model.training
    x = torch.randn(batch_shape, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.zeros(batch_shape[0], dtype=torch.long, device=device)
    model.train()
    with autocast(device, precision):
        logits = split_output(train_module(x))[0]
    F.cross_entropy(logits.float(), y).backward()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)  # in place: the compiled graph keeps the same tensors
    model.train(was_training)
    synchronize(device)
    return time.perf_counter() - start


def _nan_message(value: float, epoch: int, step: int, lr: float, run: Run) -> str:
    history, run_dir = run.history, run.settings.run_dir
    if not run.settings.save_every_epoch:
        kept = "no checkpoint was written (they are written at the end only)"
    elif history:
        kept = f"the last good checkpoint {run_dir / LAST} (epoch {history[-1]['epoch']}) is kept"
    else:
        kept = "no checkpoint had been written yet"
    return (f"training loss became {value} in epoch {epoch + 1}, step {step + 1}; training "
            f"stopped and {kept}. Lower the learning rate (it was {lr:.3g})")


def _summary(row: dict[str, Any], epochs: int) -> str:
    tta = f" (flip TTA {100 * row['test_acc_tta']:.1f}%)" if "test_acc_tta" in row else ""
    val = f"val acc {100 * row['val_acc']:.1f}%  " if "val_acc" in row else ""
    return (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.3f} acc "
            f"{100 * row['train_acc']:.1f}%  {val}test loss {row['test_loss']:.3f} acc "
            f"{100 * row['test_acc']:.1f}%{tta}  lr {row['lr']:.3g}  "
            f"{row['time_s']:.1f}s ({row['images_per_s']:.0f} img/s)")


