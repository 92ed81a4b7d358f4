"""A run's settings, resolved before anything is loaded or written: a new run's from the preset
and the caller's overrides, a resumed run's from its checkpoint (which explicit arguments must
then agree with; only the precision, the memory format and the batch-norm mode may change)."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import LAST, CheckpointError, load_checkpoint
from ..config import smoke_mode
from . import distributed
from .distributed import SINGLE, Distributed
from .precision import check_precision, resolve_precision
from .recipe import (
    Recipe,
    default_preset_name,
    get_preset,
    recipe_differences,
    recipe_fields,
    resolve_recipe,
)

#: The paper's best CIFAR model (Table 1), trained by ``python -m attn_lib`` and
#: :func:`attn_lib.train` unless another is named.
MAIN_MODEL = "vgg-att3-concat-pc"
#: The data set of the main job: offline, with object masks for localisation.
MAIN_DATASET = "synthetic"
#: Where run folders go when no ``out_dir`` is given (under the current directory).
RUNS_ROOT = "runs"


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


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``train(**options)`` as (recipe overrides: one entry per :class:`Recipe` field, ``None``
    where not given; model options: the rest, checked by :func:`attn_lib.build_model`)."""
    rest = dict(options)
    overrides = {f.name: rest.pop(f.name, None) for f in recipe_fields()}
    return overrides, rest


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
    instance = model if isinstance(model, nn.Module) else None
    model_name = _model_name(model, instance)
    if instance is not None:
        if overrides["width"] is not None and overrides["width"] != instance.options["width"]:
            raise ValueError("width= conflicts with the width of the model passed in")
        overrides = dict(overrides, width=instance.options["width"])

    run_dir = distributed.decide_on_main(group, lambda: resolve_run_dir(
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
        config = _new_config(model_name or MAIN_MODEL, dataset or MAIN_DATASET, device, preset,
                             overrides, data_dir, model_options, instance, seed)
    recipe = Recipe.from_dict(config["recipe"])
    config["recipe"] = recipe.to_dict()  # an older run's: with the fields added since
    config["channels_last"] = _memory_format(config.get("channels_last"), channels_last, device)
    if ckpt is None:
        config["precision"] = resolve_precision(device, recipe.precision)
    else:
        config["precision"] = _resumed_precision(config, overrides["precision"], device,
                                                 run_dir / LAST, int(ckpt["epoch"]), group)
    _record_processes(config, sync_bn, device, group,
                      run_dir / LAST if ckpt is not None else None)
    return RunSettings(config=config, recipe=recipe, run_dir=run_dir, device=device,
                       precision=config["precision"], channels_last=config["channels_last"],
                       checkpoint=ckpt, model=instance, save_every_epoch=save_every_epoch,
                       group=group, sync_bn=config["sync_bn"] and group.active)


def resolve_run_dir(out_dir: str | Path | None, model_name: str, dataset: str,
                    resume: bool) -> Path:
    """The folder a run writes to.

    With ``out_dir``: that folder (an existing run there needs ``resume``, so a finished run is
    never overwritten by accident). Without: ``runs/<model>-<dataset>`` under the current
    directory, with ``-2``, ``-3``, ... when taken; with ``resume`` the newest such folder that
    holds a ``last.pt``.
    """
    if out_dir is not None:
        run_dir = Path(out_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise ValueError(f"output folder {run_dir} exists and is not a folder")
        if not resume and (run_dir / LAST).exists():
            raise ValueError(
                f"{run_dir} already holds a run ({LAST}); pass --resume (resume=True) to "
                "continue it, or choose another output folder"
            )
        return run_dir
    base = Path(RUNS_ROOT) / f"{model_name}-{dataset}"
    pattern = re.compile(rf"^{re.escape(base.name)}(-\d+)?$")
    if resume and base.parent.is_dir():
        runs = [p for p in base.parent.iterdir()
                if pattern.match(p.name) and (p / LAST).is_file()]
        if runs:
            return max(runs, key=lambda p: (p / LAST).stat().st_mtime)
    run_dir, k = base, 2
    while run_dir.exists() and any(run_dir.iterdir()):
        run_dir, k = base.with_name(f"{base.name}-{k}"), k + 1
    return run_dir


def _record_processes(config: dict[str, Any], sync_bn: bool | None, device: torch.device,
                      group: Distributed, resumed_from: Path | None) -> None:
    """Record the number of processes and the batch-norm mode in ``config``; a resumed run
    keeps its batch-norm mode unless told otherwise."""
    saved = config.get("processes", 1)
    config["sync_bn"] = bool(config.get("sync_bn", False) if sync_bn is None else sync_bn)
    config["processes"] = group.world_size
    if config["sync_bn"] and group.active:
        distributed.check_sync_bn(device)
    if resumed_from is not None and saved != group.world_size and group.is_main:
        warnings.warn(f"{resumed_from}: the run trained with {saved} process(es) and continues "
                      f"with {group.world_size}: the same global batches, but batch norm sees "
                      "other chunks, so it will not match an unbroken run bit for bit",
                      stacklevel=5)
def _resumed_precision(config: dict[str, Any], requested: str | None, device: torch.device,
                       path: Path, epochs_done: int, group: Distributed = SINGLE) -> str:
    """The precision a resumed run continues in: the one it trained in (``precision="auto"``
    is not resolved afresh: an A100's bf16 run resumed on a T4 would silently become an fp16
    one, or the reverse), unless the caller asks for one explicitly -- a change of recipe,
    warned about and recorded in the config's ``precision_changes``."""
    saved = config.get("precision")  # None: written before the precision was stored
    if requested is None:
        precision = saved or resolve_precision(device, config["recipe"]["precision"])
        try:
            check_precision(device, precision)
        except ValueError as exc:
            raise ValueError(
                f"{path}: the run trains in {precision}, but {exc}. Resume it on a device that "
                f"can, or pass precision= (--precision) to continue in another precision -- an "
                f"explicit change of recipe, recorded in config.json") from None
        return precision
    precision = resolve_precision(device, requested)
    if saved is not None and precision != saved:
        if group.is_main:
            warnings.warn(f"{path}: the run trained in {saved} for {epochs_done} epoch(s) and "
                          f"continues in {precision}, as asked", stacklevel=5)
        changes = list(config.get("precision_changes", []))
        config["precision_changes"] = [*changes, {"after_epoch": epochs_done, "from": saved,
                                                   "to": precision}]
    return precision


def _memory_format(saved: bool | None, requested: bool | None, device: torch.device) -> bool:
    """channels_last or not: as asked, else as the resumed run had it (its kernels, hence its
    rounding, depend on it), else on GPUs only (where tensor cores want it)."""
    if requested is not None:
        return bool(requested)
    return saved if saved is not None else device.type == "cuda"


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


def _new_config(model_name: str, dataset: str, device: torch.device, preset: str | None,
                overrides: dict[str, Any], data_dir: str | Path | None,
                model_options: dict[str, Any], instance: nn.Module | None,
                seed: int) -> dict[str, Any]:
    """A new run's settings: the preset (default: by device) with the caller's overrides."""
    base = get_preset(preset or default_preset_name(device.type, smoke_mode()), model=model_name)
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


