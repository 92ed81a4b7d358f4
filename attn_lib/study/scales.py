"""The study's scales (how big each training run is) and the numbers it is compared with.

A scale fixes the recipe of every run of a study; the models and seeds have defaults per scale
that the caller may override:

* ``cpu``   -- the ``fast`` recipe at 1/16 width on all 50,000 training images for 6 epochs,
  batch 128, sized so 3 models x 3 seeds on CIFAR-10 finish in about 90 minutes on two CPU
  cores (see :data:`CPU_EPOCHS`); the default 4 models (the backbone control included) take
  about a third longer;
* ``gpu``   -- the ``fast`` preset at full width (50 epochs, batch 512; minutes per run on one
  H100-class GPU), the paper's models and the backbone control;
* ``paper`` -- the ``paper`` preset at full width (300 epochs, the authors' schedule);
* ``smoke`` -- seconds per run on synthetic data, to check the machinery (tests, CI).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The paper's comparison (Table 1 rows on CIFAR) in this library's names.
PAPER_MODELS = ("vgg", "vgg-att2-concat-pc", "vgg-att3-concat-pc", "vgg-att3-concat-dp",
                "vgg-att3-indep-pc")
#: The backbone control: the attention models' backbone without attention. Beside the paper's
#: baseline ``vgg`` it separates what the backbone adds from what attention adds.
BACKBONE_CONTROL = "vgg-noatt"
#: A study's default models at full width: the paper's comparison and the backbone control.
DEFAULT_MODELS = (PAPER_MODELS[0], BACKBONE_CONTROL, *PAPER_MODELS[1:])
#: The models a CPU can train in the time: the baseline, the backbone control and the two
#: compatibilities of att3.
CPU_MODELS = ("vgg", BACKBONE_CONTROL, "vgg-att3-concat-pc", "vgg-att3-concat-dp")
#: Epochs of a cpu-scale run. Measured on the project's 2-core machine (Intel Xeon, 2 threads,
#: torch 2.14, fp32, batch 128, 1/16 width, 2026-11-28): training vgg 2,830 images/s,
#: vgg-att3-concat-pc 515, vgg-att3-concat-dp 490; an epoch of 50,000 images is 18 s, 97 s
#: and 102 s. Three seeds are the fewest that give a spread worth reading, so the epochs are
#: what fits 3 seeds x 3 models in the budget with the evaluation (~4 min per seed: flip TTA,
#: FGSM at four budgets and g shuffled on 10,000 test images): 6 epochs, ~26 min per seed.
CPU_EPOCHS = 6
#: Test images evaluated after each training epoch of a cpu-scale run (the curves); the
#: study's figures use the whole test split.
CPU_EPOCH_TEST_IMAGES = 2000
#: Test images attacked at the cpu scale. PGD costs 10 input gradients per image and budget
#: (five budgets: 50 per image): on 1,000 images of a 1/16-width vgg-att3-concat-pc it took
#: 740 s, FGSM 69 s (one thread of the project's 2-core Xeon, shared with other jobs, torch
#: 2.14.1, 2026-12-03); all 10,000 test images would take ten times as long per run. The
#: standard error of an accuracy p on 1,000 images, sqrt(p (1 - p) / 1000), is at most 1.6
#: points.
CPU_ATTACK_IMAGES = 1000


@dataclass(frozen=True)
class Scale:
    """How a study trains: the recipe of :func:`attn_lib.train` and default models/seeds."""

    name: str
    description: str
    train: dict[str, Any] = field(default_factory=dict)  #: keyword arguments of train()
    models: tuple[str, ...] = DEFAULT_MODELS
    seeds: tuple[int, ...] = (0, 1, 2)
    #: test images for the evaluation (None = the whole test split)
    limit_test: int | None = None
    #: test images attacked by FGSM and PGD, a seeded random subset of the evaluated ones, the
    #: same for both attacks (None = all of them)
    attack_images: int | None = None
    #: default dataset of a study at this scale
    dataset: str = "cifar10"


SCALES: dict[str, Scale] = {
    "cpu": Scale(
        name="cpu",
        description=f"fast recipe at 1/16 width, {CPU_EPOCHS} epochs of the full training set, "
                    "batch 128, lr 0.1 (one-cycle), fp32 on the CPU",
        train=dict(preset="fast", width=0.0625, epochs=CPU_EPOCHS, batch_size=128, lr=0.1,
                   tta=False, limit_test=CPU_EPOCH_TEST_IMAGES),
        models=CPU_MODELS,
        attack_images=CPU_ATTACK_IMAGES,
    ),
    "gpu": Scale(
        name="gpu",
        description="fast preset at full width: 50 epochs, batch 512, lr 0.4 one-cycle, "
                    "bf16/fp16 autocast, channels_last, torch.compile",
        # torch.compile: 18,272 against 13,199 training images/s eager for full-width
        # vgg-att3-concat-pc on one H200 (benchmarks/bench_train.py, 2026-11-28).
        train=dict(preset="fast", tta=False, compile=True),
        models=DEFAULT_MODELS,
    ),
    "paper": Scale(
        name="paper",
        description="paper preset at full width: 300 epochs, lr 0.1 halved every 25, flip "
                    "augmentation, batch 64 for three-level models, 128 otherwise, fp32",
        train=dict(preset="paper"),
        models=DEFAULT_MODELS,
    ),
    "smoke": Scale(
        name="smoke",
        description="seconds per run on a few hundred images at 1/16 width (checks the "
                    "machinery only; its accuracies mean nothing)",
        train=dict(preset="smoke", tta=False),
        models=CPU_MODELS,
        seeds=(0, 1),
        limit_test=64,
        # PGD's 50 gradients per image would make the attacks most of a smoke study's time
        attack_images=16,
        dataset="synthetic",
    ),
}


def get_scale(name: str) -> Scale:
    """The scale called ``name`` (one of :data:`SCALES`)."""
    if name not in SCALES:
        raise ValueError(f"unknown scale {name!r}; available: {', '.join(SCALES)}")
    return SCALES[name]


#: Published and recorded accuracies to print beside the measured ones. Every number names its
#: source; ``kind`` says what it is. The paper's full Table 1 (CIFAR-10 included) was not at
#: hand: only the two CIFAR-100 cells quoted by the PyTorch port's README are confirmed.
REFERENCES: dict[str, dict[str, list[dict[str, Any]]]] = {
    "cifar10": {
        "vgg": [{"acc": 0.923, "kind": "authors' run script comment",
                 "source": "VGGNet/run_expt_cifar10.sh:167 (vgg_bn_drop)"}],
        "vgg-att2-concat-pc": [{"acc": 0.9458, "kind": "authors' run script comment",
                                "source": "VGGNet/run_expt_cifar10.sh:235 (2level_1global)"}],
        "vgg-att3-concat-pc": [{"acc": 0.9355, "kind": "authors' run script comment",
                                "source": "VGGNet/run_expt_cifar10.sh:304 (3level_1global, "
                                          "g projected down)"}],
    },
    "cifar100": {
        "vgg": [{"acc": 1 - 0.3062, "kind": "paper, Table 1 (top-1 error 30.62%)",
                 "source": "quoted in SaoYan/LearnToPayAttention README.md:67"},
                {"acc": 0.6929, "kind": "authors' run script comment",
                 "source": "VGGNet/run_expt_cifar100.sh:191"}],
        "vgg-att2-concat-pc": [{"acc": 0.7683, "kind": "authors' run script comment",
                                "source": "VGGNet/run_expt_cifar100.sh:230"}],
        "vgg-att3-concat-pc": [{"acc": 1 - 0.2297, "kind": "paper, Table 1 (top-1 error 22.97%)",
                                "source": "quoted in SaoYan/LearnToPayAttention README.md:67"},
                               {"acc": 0.7702, "kind": "authors' run script comment",
                                "source": "VGGNet/run_expt_cifar100.sh:278"}],
    },
}
#: What every reference was measured on, for the report.
REFERENCE_NOTE = ("References were measured at full width with the authors' 300-epoch schedule "
                  "on the lossless CIFAR arrays (the authors' own preprocessing); the paper's "
                  "CIFAR-10 column is not confirmed here.")


def run_name(model: str, seed: int) -> str:
    """The folder name of one run of a study."""
    return f"{model}-seed{seed}"
