"""``attn_lib.training.train``: the training loop, with checkpoints, resume and metrics.

:func:`train` reads as five steps: **resolve** the settings (arguments, preset, or the
checkpoint of a resumed run: :mod:`.settings`), **build** the run (data with its validation
split, model, loaders, optimiser: :mod:`.run`), **restore** a resumed run's state and open the
run folder (:mod:`.run_folder`), **fit** it epoch by epoch (:mod:`.epoch`), and **finish**
(the final model; the caller's ``figures`` hook, which :func:`attn_lib.train` uses to draw
``curves.png`` and ``attention.png`` -- training itself draws nothing).

Because every epoch's randomness is a pure function of (seed, epoch) and the checkpoint holds
everything else (weights, optimiser, schedule, scaler, EMA, history), a run killed at any time
and resumed ends with the same metrics and weights as an unbroken one: bit for bit on CPU, and
on CUDA with ``deterministic=True`` under the conditions
:func:`~attn_lib.training.precision.backend_flags` states (same GPU model, software versions,
number of processes, precision and memory format).

Under ``torchrun`` (or inside an initialised process group) the same function trains one run
over several processes with DistributedDataParallel: each takes its chunk of every global
batch, and rank 0 alone writes and prints (:mod:`attn_lib.training.distributed`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .._device import resolve_device
from ..checkpoint import LAST
from ..data import ArrayDataset
from . import distributed
from .epoch import fit
from .precision import backend_flags
from .run import Run, build_run
from .run_folder import open_run_folder, restore_training_state
from .settings import MAIN_MODEL, resolve_settings, split_options


class TrainResult(NamedTuple):
    """What :func:`train` returns."""

    model: nn.Module  #: the trained model (EMA weights if EMA is on), in eval mode
    history: list[dict[str, Any]]  #: one dict of metrics per epoch (as in metrics.jsonl)
    run_dir: Path  #: the run folder: last.pt, best.pt, metrics.jsonl, config.json, figures


#: Called on rank 0 when training has ended: ``(final model, test set, run folder, history)``.
FiguresHook = Callable[[nn.Module, ArrayDataset, Path, list[dict[str, Any]]], None]


def train(
    model: str | nn.Module | None = MAIN_MODEL,
    dataset: str | None = None,
    *,
    data_dir: str | Path | None = None,
    preset: str | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    compile: bool = False,
    seed: int = 0,
    progress: bool = True,
    channels_last: bool | None = None,
    deterministic: bool = False,
    save_every_epoch: bool = True,
    sync_bn: bool | None = None,
    figures: FiguresHook | None = None,
    **options: Any,
) -> TrainResult:
    """Train a model of the paper's family and return it with its per-epoch history.

    Args:
        model: a name from :func:`attn_lib.list_models` (default ``vgg-att3-concat-pc``), or
            a model built by :func:`attn_lib.build_model`. ``None`` with ``resume``: the
            checkpoint's model.
        dataset: one of :data:`attn_lib.data.DATASETS` (default ``synthetic``): ``cifar10``,
            ``cifar100``, ``svhn``, ``svhn-extra``, ``cub200`` or an image ``folder``.
        data_dir: where the data set lives (see :func:`attn_lib.data.load_dataset`).
        preset: ``fast``, ``paper``, ``cpu`` or ``smoke``; default ``smoke`` in smoke mode,
            else ``fast`` on a GPU and ``cpu`` on a CPU.
        out_dir: the run folder; default ``runs/<model>-<dataset>[-k]``.
        resume: continue the run in ``out_dir`` from its ``last.pt`` (a fresh start if there
            is none); its settings are taken from the checkpoint.
        device: ``"cuda"``, ``"cpu"``, ...; default the GPU if there is one.
        compile: ``torch.compile`` the model for training.
        seed: seeds data order, augmentation, dropout, initialisation, the validation split.
        progress: tqdm progress bars and one summary line per epoch.
        channels_last: channels_last memory format (default: on GPUs; a resumed run keeps
            its own). Stored in the run config; a resumed run may change it (its momentum
            buffers are rebuilt in the parameters' layout).
        deterministic: deterministic kernels (slower on GPUs), for exact resume on CUDA; see
            :func:`attn_lib.training.precision.backend_flags` for what it covers.
        save_every_epoch: write ``last.pt`` (and ``best.pt`` when better) after every epoch,
            so that a killed run can resume. ``False``: write both once, when training ends
            (the best epoch's weights wait in memory): a timed run pays no checkpoint writes,
            but a run killed before the end leaves nothing to resume from.
        sync_bn: in a data-parallel run on GPUs, batch norm with the statistics of the global
            batch (``SyncBatchNorm``) instead of each process's chunk; default off (a resumed
            run: its own setting). See :mod:`attn_lib.training.distributed`: under
            ``torchrun`` (or in an initialised process group) each process trains its chunk of
            every global batch of ``batch_size`` images, and rank 0 writes the files.
        figures: called by rank 0 once training has ended (see :data:`FiguresHook`);
            :func:`attn_lib.train` passes the one that draws the run folder's figures.
        **options: any :class:`~attn_lib.training.recipe.Recipe` field (``epochs``, ``lr``,
            ``val_size``, ... -- the table in ``docs/RECIPES.md``) overrides the preset's
            value; any other is a model option of :data:`attn_lib.DEFAULT_OPTIONS` (e.g.
            ``normalize``). A resumed run keeps its settings; only ``precision`` may be changed
            explicitly (the run trains on in the precision it used, as stored in its config,
            and a device that cannot is an error naming this way out).

    Returns:
        :class:`TrainResult` ``(model, history, run_dir)``. With a validation split
        (``val_size`` > 0) each history row also holds ``val_loss`` and ``val_acc``, and
        ``best.pt`` is the epoch of best validation accuracy; without one no ``best.pt`` is
        written.

    Raises:
        ValueError: bad option values; CheckpointError (a ValueError) for a bad checkpoint or
        one of another model; FileNotFoundError (DatasetNotFoundError) for missing data;
        NonFiniteLossError when the loss diverges.
    """
    overrides, model_options = split_options(options)
    device = resolve_device(device)
    group = distributed.setup(device.type)
    progress = progress and group.is_main
    try:
        settings = resolve_settings(
            model, dataset, overrides, model_options, data_dir=data_dir, preset=preset,
            out_dir=out_dir, resume=resume, device=distributed.rank_device(device, group),
            seed=seed, channels_last=channels_last, progress=progress,
            save_every_epoch=save_every_epoch, group=group, sync_bn=sync_bn)
        with backend_flags(settings.device, deterministic):
            run = build_run(settings)
            if settings.checkpoint is not None:
                restore_training_state(run, settings.checkpoint, settings.run_dir / LAST)
            if group.is_main:
                open_run_folder(run)
            if progress:
                print(_run_line(run))
            fit(run, compile=compile, progress=progress)
        return finish(run, figures)
    finally:
        distributed.teardown(group)


def _run_line(run: Run) -> str:
    """The line that says what is trained where, printed before the first epoch."""
    settings, recipe = run.settings, run.recipe
    config, group = settings.config, settings.group
    processes = f" x {group.world_size} processes" if group.active else ""
    held_out = f" / {len(run.val_ds)} validation" if run.val_ds is not None else ""
    return (f"run folder {settings.run_dir} | {config['model']} (width {recipe.width}) on "
            f"{config['dataset']} ({len(run.train_ds)} train{held_out} / {len(run.test_ds)} "
            f"test) | preset {recipe.name} | {settings.device.type}{processes} "
            f"{settings.precision} | epochs {run.start_epoch}/{recipe.epochs}")


def finish(run: Run, figures: FiguresHook | None = None) -> TrainResult:
    """The trained model in eval mode (plain batch norm again after ``sync_bn``); rank 0 then
    calls the ``figures`` hook."""
    final = distributed.revert_sync_batchnorm(run.eval_model).eval()
    if figures is not None and run.settings.group.is_main:
        figures(final, run.test_ds, run.settings.run_dir, run.history)
    return TrainResult(final, run.history, run.settings.run_dir)

