"""``attn_lib.train``: the training loop, with checkpoints, resume, metrics and attention maps.

:func:`train` reads as four steps: **resolve** the settings (arguments, preset, or the
checkpoint of a resumed run), **build** the run (data, model, loaders, optimiser, restored
state), **fit** it epoch by epoch, and **finish** (final model, figures).

One epoch: seed the RNGs from (seed, epoch), shuffle/augment on the device, mixed-precision
SGD steps, then evaluate (with flip TTA), save ``best.pt`` if better, ``last.pt`` always
(atomically), and append a line to ``metrics.jsonl``. Because every epoch's randomness is a
pure function of (seed, epoch) and the checkpoint holds everything else (weights, optimiser,
schedule, scaler, EMA, history), a run killed at any time and resumed ends with the same
metrics and weights as an unbroken one: bit for bit on CPU, and on CUDA with
``deterministic=True`` under the conditions :func:`~attn_lib.training.precision.backend_flags`
states (same GPU model, software versions, number of processes, precision and memory format).

Under ``torchrun`` (or inside an initialised process group) the same function trains one run
over several processes with DistributedDataParallel: each takes its chunk of every global
batch, and rank 0 alone writes and prints (:mod:`attn_lib.training.distributed`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import BEST, LAST, CheckpointError, load_checkpoint, save_checkpoint
from ..config import smoke_mode
from . import distributed
from .distributed import SINGLE, Distributed
from .evaluation import evaluation_sums, logits_of, metrics_from_sums
from .history import append_metrics, write_metrics
from .optim import EMA, LRSchedule, build_optimizer, load_optimizer_state
from .precision import (
    autocast,
    backend_flags,
    check_precision,
    make_scaler,
    resolve_device,
    resolve_precision,
    synchronize,
)
from .recipe import (
    Recipe,
    default_preset_name,
    get_preset,
    recipe_differences,
    resolve_recipe,
)
from .state import (
    capture_rng,
    epoch_seed,
    resolve_run_dir,
    restore_rng,
    seed_epoch,
    write_config,
)

MAIN_MODEL = "vgg-att3-concat-pc"
MAIN_DATASET = "synthetic"
ATTENTION_PNG = "attention.png"
CURVES_PNG = "curves.png"


class TrainResult(NamedTuple):
    """What :func:`train` returns."""

    model: nn.Module  #: the trained model (EMA weights if EMA is on), in eval mode
    history: list[dict[str, Any]]  #: one dict of metrics per epoch (as in metrics.jsonl)
    run_dir: Path  #: the run folder: last.pt, best.pt, metrics.jsonl, config.json, attention.png


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training stopped, checkpoints untouched."""


@dataclass(frozen=True)
class RunSettings:
    """Everything that decides a run, resolved before anything is loaded or written."""

    config: dict[str, Any]  #: the run's settings: config.json, and in every checkpoint
    recipe: Recipe
    run_dir: Path
    device: torch.device
    precision: str  #: resolved: "bf16", "fp16" or "fp32"
    channels_last: bool
    checkpoint: dict[str, Any] | None  #: the last.pt a resumed run continues from
    model: nn.Module | None  #: a model the caller built, else None (built from the config)
    save_every_epoch: bool = True  #: False: best.pt and last.pt are written at the end only
    group: Distributed = SINGLE  #: this process's place in a data-parallel run
    sync_bn: bool = False  #: batch-norm statistics over the global batch (several GPUs)


@dataclass
class Run:
    """A built run: data, model and training state, ready to fit."""

    settings: RunSettings
    train_ds: Any
    test_ds: Any
    data_info: dict[str, Any]  #: what a checkpoint needs to rebuild the input pipeline
    net: nn.Module
    ema: EMA | None
    train_loader: Any
    test_loader: Any
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    history: list[dict[str, Any]]
    start_epoch: int
    #: with checkpoints at the end only: the best epoch's checkpoint, held until then
    best_payload: dict[str, Any] | None = None

    @property
    def recipe(self) -> Recipe:
        return self.settings.recipe

    @property
    def evaluated(self) -> nn.Module:
        """The module that is evaluated and saved: the EMA average if EMA is on."""
        return self.ema.module if self.ema is not None else self.net


class EpochStats(NamedTuple):
    """What one epoch of training measured (before evaluation)."""

    loss: float  #: mean training loss (with label smoothing) over the epoch's images
    acc: float  #: training accuracy on the augmented batches
    images: int
    train_time: float  #: seconds of the training steps
    started: float  #: ``time.perf_counter()`` at the epoch's start


def train(
    model: str | nn.Module | None = MAIN_MODEL,
    dataset: str | None = None,
    *,
    data_dir: str | Path | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    preset: str | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    width: float | None = None,
    device: str | torch.device | None = None,
    compile: bool = False,
    seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
    progress: bool = True,
    weight_decay: float | None = None,
    momentum: float | None = None,
    nesterov: bool | None = None,
    label_smoothing: float | None = None,
    schedule: str | None = None,
    warmup: float | None = None,
    ema_decay: float | None = None,
    precision: str | None = None,
    loader: str | None = None,
    num_workers: int | None = None,
    tta: bool | None = None,
    augment: str | None = None,
    channels_last: bool | None = None,
    deterministic: bool = False,
    save_attention: bool = True,
    save_every_epoch: bool = True,
    sync_bn: bool | None = None,
    **model_options: Any,
) -> TrainResult:
    """Train a model of the paper's family and return it with its per-epoch history.

    Args:
        model: a name from :func:`attn_lib.list_models` (default ``vgg-att3-concat-pc``), or
            a model built by :func:`attn_lib.build_model`. ``None`` with ``resume``: the
            checkpoint's model.
        dataset: one of :data:`attn_lib.data.DATASETS` (default ``synthetic``): ``cifar10``,
            ``cifar100``, ``svhn``, ``svhn-extra``, ``cub200`` or an image ``folder``.
        data_dir: where the data set lives (see :func:`attn_lib.data.load_dataset`).
        epochs, batch_size, lr, width, limit_train, limit_test, weight_decay, momentum,
            nesterov, label_smoothing, schedule, warmup, ema_decay, precision, loader,
            num_workers, tta, augment: override the preset's value (see :class:`Recipe`).
            A resumed run keeps its settings; only ``precision`` may be changed explicitly
            (the run trains on in the precision it used, as stored in its config, and a
            device that cannot is an error naming this way out).
        preset: ``fast``, ``paper``, ``cpu`` or ``smoke``; default ``smoke`` in smoke mode,
            else ``fast`` on a GPU and ``cpu`` on a CPU.
        out_dir: the run folder; default ``runs/<model>-<dataset>[-k]``.
        resume: continue the run in ``out_dir`` from its ``last.pt`` (a fresh start if there
            is none); its settings are taken from the checkpoint.
        device: ``"cuda"``, ``"cpu"``, ...; default the GPU if there is one.
        compile: ``torch.compile`` the model for training.
        seed: seeds data order, augmentation, dropout and initialisation.
        progress: tqdm progress bars and one summary line per epoch.
        channels_last: channels_last memory format (default: on GPUs; a resumed run keeps
            its own). Stored in the run config; a resumed run may change it (its momentum
            buffers are rebuilt in the parameters' layout).
        deterministic: deterministic kernels (slower on GPUs), for exact resume on CUDA; see
            :func:`attn_lib.training.precision.backend_flags` for what it covers.
        save_attention: save ``attention.png`` (and ``curves.png``) in the run folder.
        save_every_epoch: write ``last.pt`` (and ``best.pt`` when better) after every epoch,
            so that a killed run can resume. ``False``: write both once, when training ends
            (the best epoch's weights wait in memory): a timed run pays no checkpoint writes,
            but a run killed before the end leaves nothing to resume from.
        sync_bn: in a data-parallel run on GPUs, batch norm with the statistics of the global
            batch (``SyncBatchNorm``) instead of each process's chunk; default off (a resumed
            run: its own setting). See :mod:`attn_lib.training.distributed`: under
            ``torchrun`` (or in an initialised process group) each process trains its chunk of
            every global batch of ``batch_size`` images, and rank 0 writes the files.
        **model_options: :data:`attn_lib.DEFAULT_OPTIONS` of the model (e.g. ``normalize``).

    Returns:
        :class:`TrainResult` ``(model, history, run_dir)``.

    Raises:
        ValueError: bad option values; CheckpointError (a ValueError) for a bad checkpoint or
        one of another model; FileNotFoundError (DatasetNotFoundError) for missing data;
        NonFiniteLossError when the loss diverges.
    """
    overrides = dict(
        epochs=epochs, batch_size=batch_size, lr=lr, width=width, limit_train=limit_train,
        limit_test=limit_test, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
        label_smoothing=label_smoothing, schedule=schedule, warmup=warmup, ema_decay=ema_decay,
        precision=precision, loader=loader, num_workers=num_workers, tta=tta, augment=augment,
    )
    dev = resolve_device(device)
    group = distributed.setup(dev.type)
    progress = progress and group.is_main
    try:
        settings = resolve_settings(
            model, dataset, overrides, model_options, data_dir=data_dir, preset=preset,
            out_dir=out_dir, resume=resume, device=distributed.rank_device(dev, group),
            seed=seed, channels_last=channels_last, progress=progress,
            save_every_epoch=save_every_epoch, group=group, sync_bn=sync_bn)
        with backend_flags(settings.device, deterministic):
            run = build_run(settings, progress)
            fit(run, compile=compile, progress=progress)
        return finish(run, save_attention, progress)
    finally:
        distributed.teardown(group)


# --- 1. resolve the settings ----------------------------------------------------------------


def resolve_settings(model: str | nn.Module | None, dataset: str | None,
                     overrides: dict[str, Any], model_options: dict[str, Any], *,
                     data_dir: str | Path | None, preset: str | None,
                     out_dir: str | Path | None, resume: bool,
                     device: torch.device, seed: int, channels_last: bool | None,
                     progress: bool, save_every_epoch: bool = True,
                     group: Distributed = SINGLE, sync_bn: bool | None = None) -> RunSettings:
    """The run's settings: a new run's from the preset and overrides, a resumed run's from its
    checkpoint (explicit arguments must then agree with it). Loads nothing but the checkpoint.
    In a data-parallel run, rank 0 chooses the run folder for all."""
    dev = device
    instance = model if isinstance(model, nn.Module) else None
    model_name = _model_name(model, instance)
    if instance is not None:
        if overrides["width"] is not None and overrides["width"] != instance.options["width"]:
            raise ValueError("width= conflicts with the width of the model passed in")
        overrides = dict(overrides, width=instance.options["width"])

    run_dir = distributed.agree(group, lambda: resolve_run_dir(
        out_dir, model_name or MAIN_MODEL, dataset or MAIN_DATASET, resume))
    ckpt = None
    if resume and (run_dir / LAST).exists():
        ckpt = load_checkpoint(run_dir / LAST, expect_model=model_name)
        if "train_state" not in ckpt or "config" not in ckpt:
            raise CheckpointError(f"{run_dir / LAST}: has no training state to resume from")
        config = _resume_config(ckpt["config"], run_dir / LAST, dataset, preset, overrides,
                                data_dir, model_options, instance)
    else:
        if resume and progress:
            print(f"no checkpoint in {run_dir}; starting a new run")
        config = _new_config(model_name or MAIN_MODEL, dataset or MAIN_DATASET, dev, preset,
                             overrides, data_dir, model_options, instance, seed)
    recipe = Recipe.from_dict(config["recipe"])
    config["channels_last"] = _memory_format(config.get("channels_last"), channels_last, dev)
    if ckpt is None:
        config["precision"] = resolve_precision(dev, recipe.precision)
    else:
        config["precision"] = _resumed_precision(config, overrides["precision"], dev,
                                                 run_dir / LAST, int(ckpt["epoch"]), group)
    _processes(config, sync_bn, dev, group, run_dir / LAST if ckpt is not None else None)
    return RunSettings(config=config, recipe=recipe, run_dir=run_dir, device=dev,
                       precision=config["precision"], channels_last=config["channels_last"],
                       checkpoint=ckpt, model=instance, save_every_epoch=save_every_epoch,
                       group=group, sync_bn=config["sync_bn"] and group.active)


def _processes(config: dict[str, Any], sync_bn: bool | None, dev: torch.device,
               group: Distributed, resumed_from: Path | None) -> None:
    """Record the number of processes and the batch-norm mode in ``config``; a resumed run
    keeps its batch-norm mode unless told otherwise."""
    saved = config.get("processes", 1)
    config["sync_bn"] = bool(config.get("sync_bn", False) if sync_bn is None else sync_bn)
    config["processes"] = group.world_size
    if config["sync_bn"] and group.active:
        distributed.check_sync_bn(dev)
    if resumed_from is not None and saved != group.world_size and group.is_main:
        warnings.warn(f"{resumed_from}: the run trained with {saved} process(es) and continues "
                      f"with {group.world_size}: the same global batches, but batch norm sees "
                      "other chunks, so it will not match an unbroken run bit for bit",
                      stacklevel=4)


def _resumed_precision(config: dict[str, Any], requested: str | None, dev: torch.device,
                       path: Path, epochs_done: int, group: Distributed = SINGLE) -> str:
    """The precision a resumed run continues in: the one it trained in (``precision="auto"``
    is not resolved afresh: an A100's bf16 run resumed on a T4 would silently become an fp16
    one, or the reverse), unless the caller asks for one explicitly -- a change of recipe,
    warned about and recorded in the config's ``precision_changes``."""
    saved = config.get("precision")  # None: written before the precision was stored
    if requested is None:
        precision = saved or resolve_precision(dev, config["recipe"]["precision"])
        try:
            check_precision(dev, precision)
        except ValueError as exc:
            raise ValueError(
                f"{path}: the run trains in {precision}, but {exc}. Resume it on a device that "
                f"can, or pass precision= (--precision) to continue in another precision -- an "
                f"explicit change of recipe, recorded in config.json") from None
        return precision
    precision = resolve_precision(dev, requested)
    if saved is not None and precision != saved:
        if group.is_main:
            warnings.warn(f"{path}: the run trained in {saved} for {epochs_done} epoch(s) and "
                          f"continues in {precision}, as asked", stacklevel=4)
        changes = list(config.get("precision_changes", []))
        config["precision_changes"] = [*changes, {"after_epoch": epochs_done, "from": saved,
                                                   "to": precision}]
    return precision


def _memory_format(saved: bool | None, requested: bool | None, dev: torch.device) -> bool:
    """channels_last or not: as asked, else as the resumed run had it (its kernels, hence its
    rounding, depend on it), else on GPUs only (where tensor cores want it)."""
    if requested is not None:
        return bool(requested)
    return saved if saved is not None else dev.type == "cuda"


def _model_name(model: str | nn.Module | None, instance: nn.Module | None) -> str | None:
    if instance is None:
        return model  # a name, or None (the checkpoint's, on resume)
    name = getattr(instance, "name", None)
    if name is None:
        raise ValueError("pass a model built by attn_lib.build_model (it records its name)")
    return name


def _caller_model_options(model_options: dict[str, Any],
                          instance: nn.Module | None) -> dict[str, Any]:
    """The model options the caller chose (those of a model passed in), without the two the
    run decides itself (classes: the data set's; width: the recipe's)."""
    options = dict(instance.options) if instance is not None else dict(model_options)
    options.pop("num_classes", None)
    options.pop("width", None)
    return options


def _new_config(model_name: str, dataset: str, dev: torch.device, preset: str | None,
                overrides: dict[str, Any], data_dir: str | Path | None,
                model_options: dict[str, Any], instance: nn.Module | None,
                seed: int) -> dict[str, Any]:
    """A new run's settings: the preset (default: by device) with the caller's overrides."""
    base = get_preset(preset or default_preset_name(dev.type, smoke_mode()), model=model_name)
    recipe = resolve_recipe(base, **overrides)
    options = _caller_model_options(model_options, instance)
    if recipe.dropout is not None:
        options.setdefault("dropout", recipe.dropout)
    return {
        "model": model_name, "model_options": options, "dataset": dataset,
        "data_dir": None if data_dir is None else str(data_dir), "seed": int(seed),
        "recipe": recipe.to_dict(),
    }


def _resume_config(saved: dict[str, Any], path: Path, dataset: str | None,
                   preset: str | None, overrides: dict[str, Any],
                   data_dir: str | Path | None, model_options: dict[str, Any],
                   instance: nn.Module | None) -> dict[str, Any]:
    """The saved settings of a run; explicit arguments must agree with them."""
    if dataset is not None and dataset != saved["dataset"]:
        raise CheckpointError(f"{path}: the run was trained on {saved['dataset']!r}, not the "
                              f"requested {dataset!r}")
    base = Recipe.from_dict(saved["recipe"])
    if preset is not None and preset != base.name:
        raise ValueError(f"{path}: the run uses preset {base.name!r}, not {preset!r}; resume "
                         "without --preset")
    # The precision is checked apart (see _resumed_precision): it may be changed explicitly.
    problems = recipe_differences(base, resolve_recipe(base, **{**overrides, "precision": None}))
    options = _caller_model_options(model_options, instance)
    problems += [f"{k}: {saved['model_options'].get(k)!r} -> {v!r}" for k, v in options.items()
                 if saved["model_options"].get(k) != v]
    if problems:
        raise ValueError(f"{path}: a resumed run keeps its settings, but these differ: "
                         f"{'; '.join(problems)}")
    config = dict(saved)
    if data_dir is not None:  # the data may have moved; that is allowed
        config["data_dir"] = str(data_dir)
    return config


# --- 2. build the run -----------------------------------------------------------------------


def build_run(settings: RunSettings, progress: bool = False) -> Run:
    """Load the data, build the model, loaders and optimiser, restore a resumed run's state,
    and create the run folder (only once the data has loaded: a missing data set writes
    nothing)."""
    from ..data import load_dataset

    config, recipe, dev = settings.config, settings.recipe, settings.device
    train_ds = load_dataset(config["dataset"], "train", data_dir=config["data_dir"],
                            limit=recipe.limit_train, seed=config["seed"])
    test_ds = load_dataset(config["dataset"], "test", data_dir=config["data_dir"],
                           limit=recipe.limit_test, seed=config["seed"])
    net = _build_model(settings, num_classes=len(train_ds.classes))
    train_loader, test_loader = _build_loaders(settings, train_ds, test_ds)
    optimizer = build_optimizer(net, recipe, dev)
    run = Run(
        settings=settings, train_ds=train_ds, test_ds=test_ds,
        data_info=_data_info(config["dataset"], train_ds), net=net,
        ema=EMA(net, recipe.ema_decay) if recipe.ema_decay > 0 else None,
        train_loader=train_loader, test_loader=test_loader, optimizer=optimizer,
        schedule=LRSchedule(optimizer, recipe, len(train_loader)),
        scaler=make_scaler(dev, settings.precision), history=[], start_epoch=0,
    )
    if settings.checkpoint is not None:
        _restore(run, settings.checkpoint, settings.run_dir / LAST)

    if settings.group.is_main:
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(settings.run_dir, config)
        write_metrics(settings.run_dir, run.history)  # on resume: the checkpoint's epochs
    if progress:
        processes = (f" x {settings.group.world_size} processes"
                     if settings.group.active else "")
        print(f"run folder {settings.run_dir} | {config['model']} (width {recipe.width}) on "
              f"{config['dataset']} ({len(train_ds)} train / {len(test_ds)} test) | preset "
              f"{recipe.name} | {dev.type}{processes} {settings.precision} | epochs "
              f"{run.start_epoch}/{recipe.epochs}")
    return run


def _data_info(dataset: str, train_ds: Any) -> dict[str, Any]:
    return {
        "dataset": dataset, "classes": [str(c) for c in train_ds.classes],
        "mean": tuple(float(m) for m in train_ds.mean),
        "std": tuple(float(s) for s in train_ds.std), "image_size": int(train_ds.image_size),
    }


def _build_model(settings: RunSettings, num_classes: int) -> nn.Module:
    """The caller's model or a new one (initialised from the run's seed), on the device in the
    run's memory format."""
    from ..models import build_model

    torch.manual_seed(settings.config["seed"])
    net = settings.model
    if net is not None:
        if net.options["num_classes"] != num_classes:
            raise ValueError(f"the model has {net.options['num_classes']} classes, the data set "
                             f"{settings.config['dataset']!r} has {num_classes}")
    else:
        net = build_model(settings.config["model"], num_classes=num_classes,
                          width=settings.recipe.width, **settings.config["model_options"])
    if settings.sync_bn:
        distributed.convert_sync_batchnorm(net, settings.device)
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    return net.to(settings.device, memory_format=fmt)


def _build_loaders(settings: RunSettings, train_ds: Any, test_ds: Any) -> tuple[Any, Any]:
    from ..data import DeviceLoader, torch_dataloader

    recipe, dev, seed = settings.recipe, settings.device, settings.config["seed"]
    group = settings.group
    distributed.check_global_batch(recipe.batch_size, len(train_ds), group)
    # Each rank takes its chunk of every global batch (see attn_lib.training.distributed).
    shard = dict(rank=group.rank, world_size=group.world_size)
    if recipe.loader == "device":
        train_loader = DeviceLoader(train_ds, recipe.batch_size, train=True, device=dev,
                                    seed=seed, channels_last=settings.channels_last,
                                    augment=recipe.augment, **shard)
    else:
        train_loader = _EpochDataLoader(torch_dataloader, train_ds, recipe.batch_size,
                                        recipe.num_workers, seed, shard)
    test_loader = DeviceLoader(test_ds, recipe.eval_batch_size, train=False, device=dev,
                               channels_last=settings.channels_last, **shard)
    if len(train_loader) == 0:
        raise ValueError(f"batch size {recipe.batch_size} is larger than the training set "
                         f"({len(train_ds)} images)")
    return train_loader, test_loader


class _EpochDataLoader:
    """The torchvision ``DataLoader`` path, rebuilt each epoch with a seed from (seed, epoch),
    so that its shuffle and worker augmentation are reproducible after a resume too."""

    def __init__(self, factory: Any, dataset: Any, batch_size: int, num_workers: int,
                 seed: int, shard: dict[str, int] | None = None) -> None:
        self.factory, self.dataset, self.seed = factory, dataset, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.shard = shard or {}
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.loader = self.factory(self.dataset, self.batch_size, train=True,
                                   num_workers=self.num_workers, seed=epoch_seed(self.seed, epoch),
                                   **self.shard)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


def _restore(run: Run, ckpt: dict[str, Any], path: Path) -> None:
    """Load a checkpoint's training state into a built run (weights, optimiser, schedule,
    scaler, EMA, RNG states, history)."""
    state = ckpt["train_state"]
    try:
        run.net.load_state_dict(state.get("model", ckpt["state_dict"]))
        load_optimizer_state(run.optimizer, state["optimizer"])
        run.schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
        if run.ema is not None:
            run.ema.load_state_dict(state["ema"])
        restore_rng(state["rng"])
    except (KeyError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot restore the training state: {first[:200]}") \
            from None
    run.history = list(ckpt["history"])
    run.start_epoch = int(ckpt["epoch"])


# --- 3. fit ---------------------------------------------------------------------------------


def fit(run: Run, compile: bool = False, progress: bool = False) -> None:
    """Train epochs ``run.start_epoch .. recipe.epochs - 1``, appending to ``run.history``,
    with a one-time warm-up (compilation, cuDNN's kernel search) before the clock starts."""
    from tqdm.auto import tqdm

    recipe, group = run.recipe, run.settings.group
    step_model = distributed.wrap(run.net, run.settings.device, group)
    if compile:
        step_model = torch.compile(step_model)
    warmup_s = 0.0
    if (compile or run.settings.device.type == "cuda") and run.start_epoch < recipe.epochs:
        warmup_s = _warm_up_run(run, step_model)
        if progress:
            what = "compiled the model" if compile else "warmed up cuDNN"
            print(f"{what} in {warmup_s:.1f} s (one-time; not counted as training time)")
    score_key = "test_acc_tta" if recipe.tta else "test_acc"
    best = max((row[score_key] for row in run.history), default=-1.0)
    for epoch in range(run.start_epoch, recipe.epochs):
        stats = _train_epoch(run, step_model, epoch, progress)
        row = _epoch_row(run, epoch, stats, _evaluate_epoch(run))
        row["warmup_s"] = warmup_s if epoch == run.start_epoch else 0.0
        run.history.append(row)
        if group.is_main:  # every rank holds the same row: rank 0 writes it
            _save_epoch(run, epoch + 1, is_best=row[score_key] > best)
            append_metrics(run.settings.run_dir, row)
        best = max(best, row[score_key])
        if progress:
            tqdm.write(_summary(row, recipe.epochs))


def _warm_up_run(run: Run, step_model: nn.Module) -> float:
    s = run.settings
    shape = (min(run.recipe.batch_size, len(run.train_ds)), *run.train_ds.images.shape[1:])
    return warm_up(step_model, run.net, shape, s.device, s.precision, s.channels_last)


def _train_epoch(run: Run, step_model: nn.Module, epoch: int, progress: bool) -> EpochStats:
    """One epoch of SGD steps."""
    from tqdm.auto import tqdm

    s, recipe, sched = run.settings, run.recipe, run.schedule
    dev = s.device
    seed_epoch(s.config["seed"], epoch, s.group.rank)
    if hasattr(run.train_loader, "set_epoch"):
        run.train_loader.set_epoch(epoch)
    run.net.train()
    steps = len(run.train_loader)
    sync_every = HOST_READ_EVERY.get(dev.type, DEFAULT_HOST_READ_EVERY)
    watch = NonFiniteWatch(dev)
    first_step = sched.step_count
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    seen = 0
    synchronize(dev)
    t0 = time.perf_counter()
    bar = tqdm(run.train_loader, total=steps, desc=f"epoch {epoch + 1}/{recipe.epochs}",
               leave=False, disable=not progress)
    for i, (x, y) in enumerate(bar):
        if x.device != dev:  # the torchvision DataLoader path yields CPU tensors
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss, logits = train_step(step_model, x, y, run.optimizer, run.scaler, dev,
                                  s.precision, recipe.label_smoothing)
        sched.step()
        if run.ema is not None:
            run.ema.update(run.net)
        watch.observe(loss)
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if (i + 1) % sync_every == 0 or i + 1 == steps:
            failed = watch.read(s.group)
            if failed is not None:
                step, value = failed
                raise NonFiniteLossError(_nan_message(value, epoch, step,
                                                      sched.lr_at(first_step + step), run))
            if progress and ((i + 1) % 10 == 0 or i + 1 == steps):
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", lr=f"{sched.lr:.3g}")
    bar.close()
    # The whole global batch's figures: summed over the ranks, read once.
    totals = torch.stack([loss_sum.double(), correct.double(),
                          torch.tensor(seen, dtype=torch.float64, device=dev)])
    loss_total, correct_total, images = distributed.all_reduce_sum(totals, s.group).tolist()
    synchronize(dev)
    return EpochStats(loss_total / images, correct_total / images, int(images),
                      time.perf_counter() - t0, t0)


def _epoch_row(run: Run, epoch: int, stats: EpochStats,
               test: dict[str, float]) -> dict[str, Any]:
    """One line of metrics.jsonl (see :mod:`attn_lib.training.history`)."""
    sched = run.schedule
    elapsed = stats.train_time + (run.history[-1]["elapsed_s"] if run.history else 0.0)
    return {
        "epoch": epoch + 1, "train_loss": stats.loss, "train_acc": stats.acc, **test,
        "lr": sched.lr_at(sched.step_count - 1), "train_time_s": stats.train_time,
        "time_s": time.perf_counter() - stats.started, "elapsed_s": elapsed,
        "images_per_s": stats.images / stats.train_time,
    }


def _evaluate_epoch(run: Run) -> dict[str, float]:
    """Test loss and accuracy (and flip TTA) of the evaluated module; in a data-parallel run
    each rank evaluates its shard of the test set with rank 0's buffers, and the sums are
    all-reduced."""
    # The uncompiled module: eval mode and another batch size would make torch.compile build
    # (and time) new graphs for a small share of the work.
    s = run.settings
    distributed.broadcast_buffers(run.evaluated, s.group)
    sums = evaluation_sums(run.evaluated, run.test_loader, run.recipe.tta, s.device,
                           s.precision)
    metrics = metrics_from_sums(distributed.all_reduce_sum(sums, s.group), run.recipe.tta)
    row = {"test_loss": metrics["loss"], "test_acc": metrics["acc"]}
    if run.recipe.tta:
        row.update(test_loss_tta=metrics["loss_tta"], test_acc_tta=metrics["acc_tta"])
    return row


def _save_epoch(run: Run, epoch: int, is_best: bool) -> None:
    """``best.pt`` when the epoch is the best so far, ``last.pt`` (with the training state)
    always; both atomically. ``epoch`` counts the epochs done. With checkpoints at the end only,
    the best epoch's checkpoint is kept in memory and both are written after the last epoch."""
    run_dir = run.settings.run_dir
    payload = _payload(run, epoch)
    if is_best and run.settings.save_every_epoch:
        save_checkpoint(run_dir / BEST, payload)
    elif is_best:  # copies: training goes on changing the weights in place
        run.best_payload = dict(payload, state_dict=_snapshot(run.evaluated))
    if not run.settings.save_every_epoch:
        if epoch < run.recipe.epochs:
            return
        if run.best_payload is not None:
            save_checkpoint(run_dir / BEST, run.best_payload)
    payload["train_state"] = _train_state(run)
    save_checkpoint(run_dir / LAST, payload)


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
               dev: torch.device, prec: str, label_smoothing: float = 0.0,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step under autocast; returns the (un-synchronised) loss and logits."""
    with autocast(dev, prec):
        logits = logits_of(model(x))
    # The loss in fp32: bf16/fp16 log-softmax over classes loses precision for no speed gain.
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, logits


@torch.no_grad()
def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def warm_up(step_model: nn.Module, net: nn.Module, batch_shape: tuple[int, ...],
            dev: torch.device, prec: str, channels_last: bool) -> float:
    """Run one forward and backward pass of ``step_model`` so that ``torch.compile`` (and the
    cuDNN autotuner) do their one-time work before the clock starts; return its seconds.

    Nothing of it is kept: the weights and batch-norm statistics of ``net`` (which
    ``step_model`` wraps) are restored and the gradients dropped, so a run with compilation
    trains exactly as one without. (The global RNG is reseeded at the start of every epoch.)
    """
    synchronize(dev)
    start = time.perf_counter()
    saved = _snapshot(net)
    was_training = net.training
    x = torch.randn(batch_shape, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.zeros(batch_shape[0], dtype=torch.long, device=dev)
    net.train()
    with autocast(dev, prec):
        logits = logits_of(step_model(x))
    F.cross_entropy(logits.float(), y).backward()
    net.zero_grad(set_to_none=True)
    net.load_state_dict(saved)  # in place: the compiled graph keeps the same tensors
    net.train(was_training)
    synchronize(dev)
    return time.perf_counter() - start


def _payload(run: Run, epoch: int) -> dict[str, Any]:
    """A checkpoint of the evaluated module (``best.pt``; ``last.pt`` adds the train state)."""
    return {
        "model_name": run.settings.config["model"],
        "model_options": {**run.net.options},
        "state_dict": run.evaluated.state_dict(),
        "epoch": epoch,
        "history": [dict(row) for row in run.history],
        "data": dict(run.data_info),
        "config": run.settings.config,
    }


def _train_state(run: Run) -> dict[str, Any]:
    state = {
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": capture_rng(),
    }
    if run.ema is not None:  # state_dict holds the EMA weights; the raw ones are needed to go on
        state["model"] = run.net.state_dict()
        state["ema"] = run.ema.state_dict()
    return state


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
    return (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.3f} acc "
            f"{100 * row['train_acc']:.1f}%  test loss {row['test_loss']:.3f} acc "
            f"{100 * row['test_acc']:.1f}%{tta}  lr {row['lr']:.3g}  "
            f"{row['time_s']:.1f}s ({row['images_per_s']:.0f} img/s)")


# --- 4. finish ------------------------------------------------------------------------------


def finish(run: Run, save_attention: bool = True, progress: bool = False) -> TrainResult:
    """The trained model in eval mode (plain batch norm again after ``sync_bn``), and the run's
    figures (drawn by rank 0)."""
    final = distributed.revert_sync_batchnorm(run.evaluated).eval()
    if save_attention and run.settings.group.is_main:
        _save_figures(final, run.test_ds, run.settings.run_dir, run.history)
    return TrainResult(final, run.history, run.settings.run_dir)


class FigureWarning(UserWarning):
    """A figure of the run folder (``curves.png``, ``attention.png``) could not be written."""


#: Images in ``attention.png``: one per class, for the first classes.
ATTENTION_IMAGES = 8


def _save_figures(model: nn.Module, test_ds: Any, run_dir: Path,
                  history: list[dict[str, Any]]) -> None:
    """``curves.png`` and ``attention.png`` (one test image per class). Training has
    succeeded when they are drawn, so a failure is a :class:`FigureWarning` naming its
    cause -- a missing optional dependency or an error while plotting -- not an exception."""
    if history:
        _draw(CURVES_PNG, lambda: _plot_curves(history, run_dir / CURVES_PNG))
    if getattr(model, "levels", ()):  # the plain VGG baseline has no attention maps
        _draw(ATTENTION_PNG, lambda: _plot_attention(model, test_ds, run_dir / ATTENTION_PNG))


def _draw(name: str, plot: Any) -> None:
    try:
        plot()
    except ImportError as exc:
        warnings.warn(f"{name} not written: an optional dependency is missing ({exc})",
                      FigureWarning, stacklevel=5)
    except Exception as exc:
        warnings.warn(f"{name} not written: plotting failed ({type(exc).__name__}: {exc})",
                      FigureWarning, stacklevel=5)


def _plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    from .history import plot_history

    plot_history(history).savefig(path, dpi=100)


def _plot_attention(model: nn.Module, test_ds: Any, path: Path) -> None:
    from ..data import normalize, one_per_class
    from ..maps.viz import plot_attention_grid

    # A test split stored class by class would otherwise show one class only.
    index = torch.tensor(one_per_class(test_ds.labels, ATTENTION_IMAGES))
    dev = next(model.parameters()).device
    images = normalize(test_ds.images[index], test_ds.mean, test_ds.std).to(dev)
    plot_attention_grid(model, images, labels=test_ds.labels[index], classes=test_ds.classes,
                        mean=test_ds.mean, std=test_ds.std, save_path=path)
