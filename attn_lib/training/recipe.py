"""Training recipes: the hyper-parameters of a run, as named presets.

A :class:`Recipe` holds everything that decides *what* is trained (schedule, optimiser, data
size, model width); :func:`resolve_recipe` picks a preset and applies the caller's overrides.

Presets:

* ``fast``  -- the GPU recipe: SGD + Nesterov, one-cycle schedule, label smoothing, large batch,
  whole data set resident on the GPU, mixed precision, flip test-time augmentation.
* ``paper`` -- the authors' CIFAR training as their code runs it (``main*.lua``): SGD with
  momentum 0.9 and weight decay 5e-4, 300 epochs, the learning rate halved every 25 epochs,
  horizontal flips as the only augmentation (their random-crop function is never called),
  batch 128 -- 64 for the three-level attention models (their run scripts set it) -- and fp32;
  no label smoothing, Nesterov, EMA or test-time augmentation. Their ``lr 1`` is Torch7's SGD
  with dampened momentum (``v = 0.9 v + 0.1 g``), which steps exactly as PyTorch's undampened
  SGD with ``lr 0.1`` after the first step; so ``lr=0.1`` here. Unlike their code, 5,000 of
  the training images are held out to choose ``best.pt`` on (``val_size``). What still differs
  from their code is listed in ``docs/DEVIATIONS.md``.
* ``cpu``   -- the main job on a laptop-class CPU: a narrow model on the synthetic data, a few
  minutes on two cores.
* ``smoke`` -- seconds, for CI and notebooks when :func:`attn_lib.smoke_mode` is true.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from typing import Any

from .._validation import check_choice
from ..data.loaders import AUGMENTATIONS

SCHEDULES = ("onecycle", "step")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
LOADERS = ("device", "torch")


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def setting(default: Any = MISSING, *, help: str, choices: tuple[str, ...] | None = None,
            flag: str | None = None, metavar: str | None = None) -> Any:
    """A :class:`Recipe` field with everything its users read: the default, the help text,
    the allowed values and, where it is not ``--name-with-dashes``, the command-line flag.
    :func:`attn_lib.train`'s keyword overrides, ``python -m attn_lib train``'s options and
    ``docs/RECIPES.md`` all read these, so a new setting is one field here."""
    metadata = {"help": help, "choices": choices, "flag": flag, "metavar": metavar}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training run (see the module docstring for the presets)."""

    name: str = setting(help="the preset this recipe comes from (chosen with --preset)")
    epochs: int = setting(help="passes over the training images")
    batch_size: int = setting(help="images per step; under torchrun the global batch, split "
                                   "evenly over the processes")
    lr: float = setting(help="peak (one-cycle) or initial (step) learning rate")
    momentum: float = setting(0.9, help="SGD momentum")
    nesterov: bool = setting(True, help="Nesterov momentum (--no-nesterov: plain momentum)")
    weight_decay: float = setting(5e-4, help="L2 weight decay (on all parameters, as in the "
                                             "paper)")
    label_smoothing: float = setting(0.1, help="label smoothing of the training loss")
    schedule: str = setting("onecycle", choices=SCHEDULES,
                            help="onecycle: linear warm-up, then cosine decay; step: the "
                                 "paper's, the lr times step_gamma every step_epochs")
    warmup: float = setting(0.15, help="fraction of all steps spent warming up (one-cycle "
                                       "only)")
    step_epochs: int = setting(25, help="epochs between the step schedule's lr drops")
    step_gamma: float = setting(0.5, help="the step schedule's lr factor at each drop")
    milestones: tuple[int, ...] = setting((), metavar="EPOCH",
                                          help="epochs at which the step schedule multiplies "
                                               "the lr by step_gamma (default: every "
                                               "step_epochs)")
    ema_decay: float = setting(0.0, flag="--ema", metavar="DECAY",
                               help="exponential moving average of the weights with this "
                                    "decay, e.g. 0.999 (0 = off); evaluated and saved "
                                    "instead of the raw weights")
    width: float = setting(1.0, help="channel multiplier of the model (1.0 = the paper)")
    dropout: bool | None = setting(None, help="the paper's dropout pattern (0.3-0.5 after "
                                              "nearly every conv); default: the model's (on)")
    limit_train: int | None = setting(None, metavar="N",
                                      help="train on N training images drawn at random "
                                           "(seeded; default: all)")
    limit_test: int | None = setting(None, metavar="N",
                                     help="test on N test images drawn at random (seeded; "
                                          "default: all)")
    val_size: int = setting(0, metavar="N",
                            help="hold out N of the training images (drawn with the run's "
                                 "seed) to validate on each epoch; best.pt is then the epoch "
                                 "of best validation accuracy. 0: no validation split and no "
                                 "best.pt (the test set never selects a checkpoint)")
    tta: bool = setting(True, help="also report flip test-time-augmented accuracy each epoch")
    augment: str = setting("crop-flip", choices=AUGMENTATIONS,
                           help="training augmentation: random crop (pad 4) + flip (the CIFAR "
                                "standard), flip only, or none")
    precision: str = setting("auto", choices=PRECISIONS,
                             help="auto: bf16 on Ampere+ GPUs, fp16 + GradScaler before them, "
                                  "fp32 on a CPU")
    loader: str = setting("device", choices=LOADERS,
                          help="device: the uint8 data set resident on the device, augmented "
                               "there; torch: torchvision transforms in a DataLoader")
    num_workers: int = setting(2, flag="--workers", metavar="N",
                               help="worker processes of the torch loader")
    eval_batch_size: int = setting(1024, metavar="N", help="images per evaluation batch")

    def __post_init__(self) -> None:
        _check_positive_int("epochs", self.epochs)
        _check_positive_int("batch_size", self.batch_size)
        _check_positive_int("eval_batch_size", self.eval_batch_size)
        _check_positive_int("step_epochs", self.step_epochs)
        if isinstance(self.val_size, bool) or not isinstance(self.val_size, int) \
                or self.val_size < 0:
            raise ValueError(f"val_size must be a non-negative integer (0 = no validation "
                             f"split), got {self.val_size!r}")
        object.__setattr__(self, "milestones", tuple(self.milestones))  # a JSON list reads back
        for m in self.milestones:
            _check_positive_int("each milestone", m)
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ValueError(f"milestones must increase, got {self.milestones!r}")
        for name in ("limit_train", "limit_test"):
            value = getattr(self, name)
            if value is not None:
                _check_positive_int(name, value)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {self.warmup!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay!r}")
        if not 0 < self.width <= 4:
            raise ValueError(f"width must be in (0, 4], got {self.width!r}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers!r}")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("loader", self.loader, LOADERS)
        check_choice("augment", self.augment, AUGMENTATIONS)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON and ``torch.load(weights_only=True)`` safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`; unknown keys (from a newer version) are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown recipe field(s): {', '.join(unknown)}")
        return cls(**data)


PRESETS: dict[str, Recipe] = {
    # Large batch, one-cycle; the lr follows the linear scaling rule from 0.1 at batch 128. The
    # paper's dropout is off: it regularises a 300-epoch schedule and costs accuracy in 50.
    # On one H200 (bf16, torch.compile): 137 s of training, 91.3% test accuracy (92.0% with
    # flip TTA); results/bench-h200/bench.json. How lr and warm-up were chosen: docs/RECIPES.md.
    # The authors' ResNet training (RESNET/scripts/main.sh:35-41, train_attenunit_2levels.lua:
    # 22-52): lr 0.1 x0.2 at epochs 60/120/160, 200 epochs, Nesterov, batch 64, weight decay
    # 5e-4, flips and 4-pixel crops (theirs reflection-padded, here zero-padded), fp32.
    "resnet": Recipe(
        name="resnet", epochs=200, batch_size=64, lr=0.1, nesterov=True, label_smoothing=0.0,
        schedule="step", warmup=0.0, step_gamma=0.2, milestones=(60, 120, 160), tta=False,
        augment="crop-flip", precision="fp32",
    ),
    "fast": Recipe(name="fast", epochs=50, batch_size=512, lr=0.4, warmup=0.15, dropout=False),
    # 5,000 of CIFAR's 50,000 training images are held out: over 300 epochs the best epoch
    # differs from the last, and it is chosen on them, never on the test set.
    "paper": Recipe(
        name="paper", epochs=300, batch_size=128, lr=0.1, nesterov=False, label_smoothing=0.0,
        schedule="step", warmup=0.0, step_epochs=25, step_gamma=0.5, tta=False,
        augment="flip", precision="fp32", val_size=5000,
    ),
    # The CPU main job: a 1/16-width model on the whole synthetic training set (10,000 images),
    # 10 epochs, on 2 CPU cores; no dropout (it only slows a short run down), random crops
    # (they sharpen the attention maps). Measurements: docs/RECIPES.md.
    "cpu": Recipe(
        name="cpu", epochs=10, batch_size=64, lr=0.05, width=0.0625, dropout=False,
        limit_train=None, limit_test=500, eval_batch_size=250,
    ),
    # CI / notebooks with ATTN_LIB_SMOKE=1: seconds, only checks that everything runs.
    "smoke": Recipe(
        name="smoke", epochs=2, batch_size=32, lr=0.05, width=0.0625, dropout=False,
        augment="flip", limit_train=256, limit_test=128, eval_batch_size=128,
    ),
}


def default_preset_name(device_type: str, smoke: bool) -> str:
    """The preset used when none is named: smoke mode, else ``fast`` on a GPU, else ``cpu``."""
    if smoke:
        return "smoke"
    return "fast" if device_type == "cuda" else "cpu"


#: Per-model changes to a preset, keyed by a regular expression that must match the whole
#: model name. ``paper``: the authors' run scripts train the three-level attention models with
#: batch 64 (run_expt_cifar10.sh:47, run_expt_cifar100.sh:59), the rest with 128. ``cpu``: the
#: paper's baseline pools after every block and needs more steps to find the synthetic task's
#: shape (measurements: docs/RECIPES.md); 30 epochs of it take less time than 10 of an
#: attention model, so the comparison's baseline is trained to convergence.
MODEL_ADJUSTMENTS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {r"vgg-att3-.*": {"batch_size": 64}},
    "cpu": {r"vgg": {"epochs": 30}},
}


def get_preset(name: str, model: str | None = None) -> Recipe:
    """Return the preset called ``name`` (one of :data:`PRESETS`), as it applies to ``model``
    (see :data:`MODEL_ADJUSTMENTS`: ``paper`` trains three-level models with batch 64, ``cpu``
    trains the pooled baseline ``vgg`` for 30 epochs)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    recipe = PRESETS[name]
    for pattern, changes in MODEL_ADJUSTMENTS.get(name, {}).items():
        if model is not None and re.fullmatch(pattern, model):
            recipe = replace(recipe, **changes)
    return recipe


def resolve_recipe(base: Recipe, **overrides: Any) -> Recipe:
    """``base`` with every override that is not ``None`` applied (and validated)."""
    known = {f.name for f in fields(Recipe)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown recipe option(s): {', '.join(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **given) if given else base


def recipe_fields() -> tuple[Field, ...]:
    """The settings a caller may override: every :class:`Recipe` field but ``name`` (the
    preset's, chosen by naming the preset)."""
    return tuple(f for f in fields(Recipe) if f.name != "name")


def recipe_differences(a: Recipe, b: Recipe) -> list[str]:
    """Fields where two recipes differ, as ``"name: a -> b"`` strings (``name`` excluded)."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: {da[k]!r} -> {db[k]!r}" for k in da if k != "name" and da[k] != db[k]]

