"""A built run: its data (with the validation split held out of the training images), model,
loaders, optimiser, schedule and scaler, ready to fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._seed import mix_seed
from ..data import ArrayDataset, DeviceLoader, load_dataset, torch_dataloader
from ..models import build_model
from . import distributed
from .optim import EMA, LRSchedule, build_optimizer
from .precision import make_scaler
from .recipe import Recipe
from .settings import RunSettings

#: Mixed into the run's seed for the validation draw, so that it is independent of every
#: other draw of the run (``limit_train``'s subset, the epochs' shuffles).
VALIDATION_STREAM = 0x56414C  # "VAL"


@dataclass
class Run:
    """A built run: data, model and training state, ready to fit."""

    settings: RunSettings
    train_ds: ArrayDataset
    val_ds: ArrayDataset | None  #: images held out of the training split; None without
    test_ds: ArrayDataset
    data_info: dict[str, Any]  #: what a checkpoint needs to rebuild the input pipeline
    model: nn.Module  #: the model the optimiser trains (its raw weights)
    ema: EMA | None
    train_loader: Any
    val_loader: DeviceLoader | None
    test_loader: DeviceLoader
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    history: list[dict[str, Any]]
    start_epoch: int
    #: with checkpoints at the end only: the best epoch's checkpoint, held until then
    best_checkpoint: dict[str, Any] | None = None

    @property
    def recipe(self) -> Recipe:
        return self.settings.recipe

    @property
    def eval_model(self) -> nn.Module:
        """The module that is evaluated and saved: the EMA average if EMA is on."""
        return self.ema.module if self.ema is not None else self.model


def validation_indices(images: int, size: int, seed: int) -> torch.Tensor:
    """The training-split indices held out for validation: ``size`` of ``images`` drawn with
    the run's ``seed`` (sorted). The rest are trained on; ``config.json`` records the three
    numbers (``validation``), so the split can be drawn again from it."""
    if size >= images:
        raise ValueError(f"val_size {size} leaves no training images: the training split has "
                         f"{images}; hold out fewer (e.g. val_size={images // 10})")
    generator = torch.Generator().manual_seed(mix_seed(seed, VALIDATION_STREAM))
    return torch.randperm(images, generator=generator)[:size].sort().values


def split_validation(train_ds: ArrayDataset, size: int, seed: int
                     ) -> tuple[ArrayDataset, ArrayDataset | None, dict[str, int] | None]:
    """``(images to train on, validation images, the record for config.json)``; without a
    validation split (``size`` 0) the training split whole, None, None."""
    if size == 0:
        return train_ds, None, None
    held_out = validation_indices(len(train_ds), size, seed)
    keep = torch.ones(len(train_ds), dtype=torch.bool)
    keep[held_out] = False
    record = {"size": size, "seed": seed, "train_images": len(train_ds)}
    return train_ds.subset(keep.nonzero().flatten()), train_ds.subset(held_out), record


def build_run(settings: RunSettings) -> Run:
    """Load the data, split off the validation images, build the model, loaders and
    optimiser. Writes nothing: a missing data set leaves no run folder behind."""
    config, recipe, device = settings.config, settings.recipe, settings.device
    full_train = load_dataset(config["dataset"], "train", data_dir=config["data_dir"],
                              limit=recipe.limit_train, seed=config["seed"])
    test_ds = load_dataset(config["dataset"], "test", data_dir=config["data_dir"],
                           limit=recipe.limit_test, seed=config["seed"])
    train_ds, val_ds, validation = split_validation(full_train, recipe.val_size, config["seed"])
    if config.setdefault("validation", validation) != validation:
        raise ValueError(f"{settings.run_dir}: the run validated on {config['validation']}, "
                         f"but its data now gives {validation}; resume it on the same data")
    model = _build_model(settings, num_classes=len(train_ds.classes))
    train_loader = _train_loader(settings, train_ds)
    optimizer = build_optimizer(model, recipe, device)
    return Run(
        settings=settings, train_ds=train_ds, val_ds=val_ds, test_ds=test_ds,
        data_info=_data_info(config["dataset"], full_train), model=model,
        ema=EMA(model, recipe.ema_decay) if recipe.ema_decay > 0 else None,
        train_loader=train_loader, val_loader=_eval_loader(settings, val_ds),
        test_loader=_eval_loader(settings, test_ds), optimizer=optimizer,
        schedule=LRSchedule(optimizer, recipe, len(train_loader)),
        scaler=make_scaler(device, settings.precision), history=[], start_epoch=0,
    )


def _data_info(dataset: str, train_ds: ArrayDataset) -> dict[str, Any]:
    return {
        "dataset": dataset, "classes": [str(c) for c in train_ds.classes],
        "mean": tuple(float(m) for m in train_ds.mean),
        "std": tuple(float(s) for s in train_ds.std), "image_size": int(train_ds.image_size),
    }


def _build_model(settings: RunSettings, num_classes: int) -> nn.Module:
    """The caller's model or a new one (initialised from the run's seed), on the device in the
    run's memory format."""
    torch.manual_seed(settings.config["seed"])
    model = settings.model
    if model is not None:
        if model.options["num_classes"] != num_classes:
            raise ValueError(f"the model has {model.options['num_classes']} classes, the data "
                             f"set {settings.config['dataset']!r} has {num_classes}")
    else:
        model = build_model(settings.config["model"], num_classes=num_classes,
                            width=settings.recipe.width, **settings.config["model_options"])
    if settings.sync_bn:
        distributed.convert_sync_batchnorm(model, settings.device)
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    return model.to(settings.device, memory_format=memory_format)


def _shard(settings: RunSettings) -> dict[str, int]:
    """This rank's chunk of every global batch (see :mod:`attn_lib.training.distributed`)."""
    return dict(rank=settings.group.rank, world_size=settings.group.world_size)


def _train_loader(settings: RunSettings, train_ds: ArrayDataset) -> Any:
    recipe, seed = settings.recipe, settings.config["seed"]
    distributed.check_global_batch(recipe.batch_size, len(train_ds), settings.group)
    if recipe.loader == "device":
        loader: Any = DeviceLoader(train_ds, recipe.batch_size, train=True,
                                   device=settings.device, seed=seed,
                                   channels_last=settings.channels_last,
                                   augment=recipe.augment, **_shard(settings))
    else:
        loader = EpochDataLoader(train_ds, recipe.batch_size, recipe.num_workers, seed,
                                 recipe.augment, _shard(settings))
    if len(loader) == 0:
        raise ValueError(f"batch size {recipe.batch_size} is larger than the training set "
                         f"({len(train_ds)} images)")
    return loader


def _eval_loader(settings: RunSettings, ds: ArrayDataset | None) -> DeviceLoader | None:
    if ds is None:
        return None
    return DeviceLoader(ds, settings.recipe.eval_batch_size, train=False,
                        device=settings.device, channels_last=settings.channels_last,
                        **_shard(settings))


class EpochDataLoader:
    """The torchvision ``DataLoader`` path, rebuilt each epoch with a seed from (seed, epoch)
    -- as :class:`~attn_lib.data.DeviceLoader` draws its own -- so that its shuffle and worker
    augmentation are reproducible after a resume too."""

    def __init__(self, dataset: ArrayDataset, batch_size: int, num_workers: int, seed: int,
                 augment: str, shard: dict[str, int] | None = None) -> None:
        self.dataset, self.seed, self.augment = dataset, seed, augment
        self.batch_size, self.num_workers = batch_size, num_workers
        self.shard = shard or {}
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.loader = torch_dataloader(self.dataset, self.batch_size, train=True,
                                       num_workers=self.num_workers,
                                       seed=mix_seed(self.seed, epoch), augment=self.augment,
                                       **self.shard)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)
