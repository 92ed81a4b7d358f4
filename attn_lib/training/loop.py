"""``attn_lib.train``: the training loop, with checkpoints, resume, metrics and attention maps.

One epoch: seed the RNGs from (seed, epoch), shuffle/augment on the device, mixed-precision
SGD steps, then evaluate (with flip TTA), save ``best.pt`` if better, ``last.pt`` always
(atomically), and append a line to ``metrics.jsonl``. Because every epoch's randomness is a
pure function of (seed, epoch) and the checkpoint holds everything else (weights, optimiser,
schedule, scaler, EMA, history), a run killed at any time and resumed ends with the same
metrics as an unbroken one (with deterministic kernels).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import BEST, LAST, CheckpointError, load_checkpoint, save_checkpoint
from ..config import smoke_mode
from .evaluation import evaluate, logits_of
from .history import append_metrics, write_metrics
from .optim import EMA, LRSchedule, build_optimizer, load_optimizer_state
from .precision import autocast, make_scaler, resolve_device, resolve_precision, synchronize
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
    **model_options: Any,
) -> TrainResult:
    """Train a model of the paper's family and return it with its per-epoch history.

    Args:
        model: a name from :func:`attn_lib.list_models` (default ``vgg-att3-concat-pc``), or
            a model built by :func:`attn_lib.build_model`. ``None`` with ``resume``: the
            checkpoint's model.
        dataset: ``synthetic`` (default), ``cifar10``, ``cifar100`` or ``folder``.
        data_dir: where the data set lives (see :func:`attn_lib.data.load_dataset`).
        epochs, batch_size, lr, width, limit_train, limit_test, weight_decay, momentum,
            nesterov, label_smoothing, schedule, warmup, ema_decay, precision, loader,
            num_workers, tta, augment: override the preset's value (see :class:`Recipe`).
        preset: ``fast``, ``paper``, ``cpu`` or ``smoke``; default ``smoke`` in smoke mode,
            else ``fast`` on a GPU and ``cpu`` on a CPU.
        out_dir: the run folder; default ``runs/<model>-<dataset>[-k]``.
        resume: continue the run in ``out_dir`` from its ``last.pt`` (a fresh start if there
            is none); its settings are taken from the checkpoint.
        device: ``"cuda"``, ``"cpu"``, ...; default the GPU if there is one.
        compile: ``torch.compile`` the model for training.
        seed: seeds data order, augmentation, dropout and initialisation.
        progress: tqdm progress bars and one summary line per epoch.
        channels_last: channels_last memory format (default: on GPUs).
        deterministic: deterministic kernels (bit-exact resume on GPU; slower).
        save_attention: save ``attention.png`` (and ``curves.png``) in the run folder.
        **model_options: :data:`attn_lib.DEFAULT_OPTIONS` of the model (e.g. ``normalize``).

    Returns:
        :class:`TrainResult` ``(model, history, run_dir)``.

    Raises:
        ValueError: bad option values; CheckpointError (a ValueError) for a bad checkpoint or
        one of another model; FileNotFoundError (DatasetNotFoundError) for missing data;
        NonFiniteLossError when the loss diverges.
    """
    from ..data import DeviceLoader, load_dataset, torch_dataloader
    from ..models import build_model

    dev = resolve_device(device)
    instance = model if isinstance(model, nn.Module) else None
    model_name = getattr(instance, "name", None) if instance is not None else model
    if instance is not None and model_name is None:
        raise ValueError("pass a model built by attn_lib.build_model (it records its name)")
    overrides = dict(
        epochs=epochs, batch_size=batch_size, lr=lr, width=width, limit_train=limit_train,
        limit_test=limit_test, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
        label_smoothing=label_smoothing, schedule=schedule, warmup=warmup, ema_decay=ema_decay,
        precision=precision, loader=loader, num_workers=num_workers, tta=tta, augment=augment,
    )
    if instance is not None:
        if width is not None and width != instance.options["width"]:
            raise ValueError("width= conflicts with the width of the model passed in")
        overrides["width"] = instance.options["width"]

    run_dir = resolve_run_dir(out_dir, model_name or MAIN_MODEL, dataset or MAIN_DATASET, resume)
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
        base = get_preset(preset or default_preset_name(dev.type, smoke_mode()),
                          model=model_name or MAIN_MODEL)
        recipe = resolve_recipe(base, **overrides)
        options = dict(instance.options) if instance is not None else dict(model_options)
        options.pop("num_classes", None)
        options.pop("width", None)
        if recipe.dropout is not None:
            options.setdefault("dropout", recipe.dropout)
        config = {
            "model": model_name or MAIN_MODEL, "model_options": options,
            "dataset": dataset or MAIN_DATASET,
            "data_dir": None if data_dir is None else str(data_dir), "seed": int(seed),
            "recipe": recipe.to_dict(),
        }
    recipe = Recipe.from_dict(config["recipe"])
    seed = config["seed"]
    data_dir = config["data_dir"]
    prec = resolve_precision(dev, recipe.precision)
    use_cl = dev.type == "cuda" if channels_last is None else bool(channels_last)

    # Data first: a missing data set should fail before anything is written.
    train_ds = load_dataset(config["dataset"], "train", data_dir=data_dir,
                            limit=recipe.limit_train, seed=seed)
    test_ds = load_dataset(config["dataset"], "test", data_dir=data_dir,
                           limit=recipe.limit_test, seed=seed)
    data_info = {
        "dataset": config["dataset"], "classes": [str(c) for c in train_ds.classes],
        "mean": tuple(float(m) for m in train_ds.mean),
        "std": tuple(float(s) for s in train_ds.std), "image_size": int(train_ds.image_size),
    }

    torch.manual_seed(seed)
    if instance is not None:
        net = instance
        if net.options["num_classes"] != len(train_ds.classes):
            raise ValueError(f"the model has {net.options['num_classes']} classes, the data set "
                             f"{config['dataset']!r} has {len(train_ds.classes)}")
    else:
        net = build_model(config["model"], num_classes=len(train_ds.classes),
                          width=recipe.width, **config["model_options"])
    net = net.to(dev, memory_format=torch.channels_last if use_cl else torch.contiguous_format)

    if recipe.loader == "device":
        train_loader = DeviceLoader(train_ds, recipe.batch_size, train=True, device=dev,
                                    seed=seed, channels_last=use_cl,
                                    augment=recipe.augment)
    else:
        train_loader = _EpochDataLoader(torch_dataloader, train_ds, recipe.batch_size,
                                        recipe.num_workers, seed)
    test_loader = DeviceLoader(test_ds, recipe.eval_batch_size, train=False, device=dev,
                               channels_last=use_cl)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {recipe.batch_size} is larger than the training set "
                         f"({len(train_ds)} images)")

    optimizer = build_optimizer(net, recipe, dev)
    sched = LRSchedule(optimizer, recipe, steps_per_epoch)
    scaler = make_scaler(dev, prec)
    ema = EMA(net, recipe.ema_decay) if recipe.ema_decay > 0 else None
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if ckpt is not None:
        _restore(ckpt, net, optimizer, sched, scaler, ema, run_dir / LAST)
        history = list(ckpt["history"])
        start_epoch = int(ckpt["epoch"])

    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    write_metrics(run_dir, history)  # on resume: exactly the epochs the checkpoint holds
    if progress:
        print(f"run folder {run_dir} | {config['model']} (width {recipe.width}) on "
              f"{config['dataset']} ({len(train_ds)} train / {len(test_ds)} test) | preset "
              f"{recipe.name} | {dev.type} {prec} | epochs {start_epoch}/{recipe.epochs}")

    settings = _set_backend_flags(dev, deterministic)
    try:
        step_model = torch.compile(net) if compile else net
        warmup_s = 0.0
        # One-time work (compilation; cuDNN's kernel search on GPUs) before the clock starts.
        if (compile or dev.type == "cuda") and start_epoch < recipe.epochs:
            batch_shape = (min(recipe.batch_size, len(train_ds)), *train_ds.images.shape[1:])
            warmup_s = warm_up(step_model, net, batch_shape, dev, prec, use_cl)
            if progress:
                what = "compiled the model" if compile else "warmed up cuDNN"
                print(f"{what} in {warmup_s:.1f} s (one-time; not counted as training time)")
        _fit(step_model, net, ema, train_loader, test_loader, optimizer, sched, scaler, recipe,
             dev, prec, use_cl, seed, start_epoch, history, run_dir, config, data_info,
             progress, warmup_s)
    finally:
        _restore_backend_flags(settings)

    final = (ema.module if ema is not None else net).eval()
    if save_attention:
        _save_figures(final, test_ds, run_dir, history, progress)
    return TrainResult(final, history, run_dir)


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


def _fit(step_model: nn.Module, net: nn.Module, ema: EMA | None, train_loader: Any,
         test_loader: Any, optimizer: torch.optim.Optimizer, sched: LRSchedule,
         scaler: torch.amp.GradScaler, recipe: Recipe, dev: torch.device, prec: str,
         use_cl: bool, seed: int, start_epoch: int, history: list[dict[str, Any]],
         run_dir: Path, config: dict[str, Any], data_info: dict[str, Any],
         progress: bool, warmup_s: float = 0.0) -> None:
    """Epochs ``start_epoch .. recipe.epochs - 1``, appending to ``history`` in place.

    ``warmup_s`` (the warm-up before the first of these epochs) is recorded in that epoch's
    row, outside its training time.
    """
    from tqdm.auto import tqdm

    steps = len(train_loader)
    # On a GPU, reading the loss back every step would stall the queue: check every k steps.
    check_every = 1 if dev.type == "cpu" else 25
    score_key = "test_acc_tta" if recipe.tta else "test_acc"
    best = max((row[score_key] for row in history), default=-1.0)
    for epoch in range(start_epoch, recipe.epochs):
        seed_epoch(seed, epoch)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        net.train()
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen = 0
        synchronize(dev)
        t0 = time.perf_counter()
        bar = tqdm(train_loader, total=steps, desc=f"epoch {epoch + 1}/{recipe.epochs}",
                   leave=False, disable=not progress)
        for i, (x, y) in enumerate(bar):
            if x.device != dev:  # the torchvision DataLoader path yields CPU tensors
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if use_cl:
                x = x.contiguous(memory_format=torch.channels_last)
            loss, logits = train_step(step_model, x, y, optimizer, scaler, dev, prec,
                                      recipe.label_smoothing)
            sched.step()
            if ema is not None:
                ema.update(net)
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if (i + 1) % check_every == 0 or i + 1 == steps:
                running = loss_sum.item() / seen
                if not math.isfinite(running):
                    raise NonFiniteLossError(_nan_message(running, epoch, i, sched, history,
                                                          run_dir))
                if progress and ((i + 1) % 10 == 0 or i + 1 == steps):
                    bar.set_postfix(loss=f"{running:.3f}", lr=f"{sched.lr:.3g}")
        bar.close()
        synchronize(dev)
        train_time = time.perf_counter() - t0
        # Evaluate the uncompiled module: eval mode and another batch size would make
        # torch.compile build (and time) new graphs for a small share of the work.
        eval_model = ema.module if ema is not None else net
        metrics = evaluate(eval_model, test_loader, tta=recipe.tta, precision=prec)
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum.item() / seen,
            "train_acc": correct.item() / seen,
            "test_loss": metrics["loss"],
            "test_acc": metrics["acc"],
        }
        if recipe.tta:
            row.update(test_loss_tta=metrics["loss_tta"], test_acc_tta=metrics["acc_tta"])
        elapsed = train_time + (history[-1]["elapsed_s"] if history else 0.0)
        row.update(lr=sched.lr_at(sched.step_count - 1), train_time_s=train_time,
                   time_s=time.perf_counter() - t0, elapsed_s=elapsed,
                   images_per_s=seen / train_time,
                   warmup_s=warmup_s if epoch == start_epoch else 0.0)
        history.append(row)
        payload = _payload(net, ema, config, data_info, history, epoch + 1)
        if row[score_key] > best:
            best = row[score_key]
            save_checkpoint(run_dir / BEST, payload)
        payload["train_state"] = _train_state(net, optimizer, sched, scaler, ema)
        save_checkpoint(run_dir / LAST, payload)
        append_metrics(run_dir, row)
        if progress:
            tqdm.write(_summary(row, recipe.epochs))


class _EpochDataLoader:
    """The torchvision ``DataLoader`` path, rebuilt each epoch with a seed from (seed, epoch),
    so that its shuffle and worker augmentation are reproducible after a resume too."""

    def __init__(self, factory: Any, dataset: Any, batch_size: int, num_workers: int,
                 seed: int) -> None:
        self.factory, self.dataset, self.seed = factory, dataset, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.loader = self.factory(self.dataset, self.batch_size, train=True,
                                   num_workers=self.num_workers, seed=epoch_seed(self.seed, epoch))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


def _payload(net: nn.Module, ema: EMA | None, config: dict[str, Any],
             data_info: dict[str, Any], history: list[dict[str, Any]],
             epoch: int) -> dict[str, Any]:
    evaluated = ema.module if ema is not None else net
    return {
        "model_name": config["model"],
        "model_options": {**net.options},
        "state_dict": evaluated.state_dict(),
        "epoch": epoch,
        "history": [dict(row) for row in history],
        "data": dict(data_info),
        "config": config,
    }


def _train_state(net: nn.Module, optimizer: torch.optim.Optimizer, sched: LRSchedule,
                 scaler: torch.amp.GradScaler, ema: EMA | None) -> dict[str, Any]:
    state = {
        "optimizer": optimizer.state_dict(),
        "schedule": sched.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": capture_rng(),
    }
    if ema is not None:  # state_dict holds the EMA weights; the raw ones are needed to go on
        state["model"] = net.state_dict()
        state["ema"] = ema.state_dict()
    return state


def _restore(ckpt: dict[str, Any], net: nn.Module, optimizer: torch.optim.Optimizer,
             sched: LRSchedule, scaler: torch.amp.GradScaler, ema: EMA | None,
             path: Path) -> None:
    state = ckpt["train_state"]
    try:
        net.load_state_dict(state.get("model", ckpt["state_dict"]))
        load_optimizer_state(optimizer, state["optimizer"])
        sched.load_state_dict(state["schedule"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        restore_rng(state["rng"])
    except (KeyError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot restore the training state: {first[:200]}") \
            from None


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
    problems = recipe_differences(base, resolve_recipe(base, **overrides))
    options = dict(instance.options) if instance is not None else dict(model_options)
    options.pop("num_classes", None)
    options.pop("width", None)
    problems += [f"{k}: {saved['model_options'].get(k)!r} -> {v!r}" for k, v in options.items()
                 if saved["model_options"].get(k) != v]
    if problems:
        raise ValueError(f"{path}: a resumed run keeps its settings, but these differ: "
                         f"{'; '.join(problems)}")
    config = dict(saved)
    if data_dir is not None:  # the data may have moved; that is allowed
        config["data_dir"] = str(data_dir)
    return config


def _nan_message(value: float, epoch: int, step: int, sched: LRSchedule,
                 history: list[dict[str, Any]], run_dir: Path) -> str:
    if history:
        kept = f"the last good checkpoint {run_dir / LAST} (epoch {history[-1]['epoch']}) is kept"
    else:
        kept = "no checkpoint had been written yet"
    return (f"training loss became {value} in epoch {epoch + 1}, step {step + 1}; training "
            f"stopped and {kept}. Lower the learning rate (it was {sched.lr:.3g})")


def _summary(row: dict[str, Any], epochs: int) -> str:
    tta = f" (flip TTA {100 * row['test_acc_tta']:.1f}%)" if "test_acc_tta" in row else ""
    return (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.3f} acc "
            f"{100 * row['train_acc']:.1f}%  test loss {row['test_loss']:.3f} acc "
            f"{100 * row['test_acc']:.1f}%{tta}  lr {row['lr']:.3g}  "
            f"{row['time_s']:.1f}s ({row['images_per_s']:.0f} img/s)")


def _set_backend_flags(dev: torch.device, deterministic: bool) -> tuple[Any, ...]:
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick kernels
    return saved


def _restore_backend_flags(saved: tuple[Any, ...]) -> None:
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.benchmark = saved[1]


def _save_figures(model: nn.Module, test_ds: Any, run_dir: Path,
                  history: list[dict[str, Any]], progress: bool) -> None:
    """``attention.png`` (first test images) and ``curves.png``; skipped if unavailable."""
    from .history import plot_history

    if history:
        plot_history(history).savefig(run_dir / CURVES_PNG, dpi=100)
    if not getattr(model, "levels", ()):
        return  # the plain VGG baseline has no attention maps
    try:
        from ..maps.viz import plot_attention_grid
    except ImportError as exc:  # attn_lib.maps is optional for training
        if progress:
            print(f"note: attention.png not written ({exc})")
        return
    from ..data import normalize

    n = min(8, len(test_ds))
    dev = next(model.parameters()).device
    images = normalize(test_ds.images[:n], test_ds.mean, test_ds.std).to(dev)
    plot_attention_grid(model, images, labels=test_ds.labels[:n], classes=test_ds.classes,
                        mean=test_ds.mean, std=test_ds.std, save_path=run_dir / ATTENTION_PNG)

