"""``attn_lib.reproduce``: the paper's comparison as one resumable study.

A study is models x seeds on one data set at one scale (:mod:`attn_lib.study.scales`). Each
run is an ordinary run folder of :func:`attn_lib.train` under ``runs_dir``; after training, the
final weights (never the best epoch: that would pick by test accuracy) are evaluated:

* clean test accuracy, plain and with flip test-time augmentation;
* FGSM and PGD accuracy at epsilon 1, 2, 4 and 8 / 255, and at 64 / 255 where any model
  should fall to about 0 % (:mod:`attn_lib.study.robustness`), on the same images: the whole
  test split, or a seeded random subset of it where the scale says so (``attack_images``);
* for attention models, the accuracy with ``g`` shuffled across the batch before the
  estimators (zero change for ``pc`` by the maths, not for ``dp``);
* on data with object masks (synthetic), the localisation scores with the Jaccard index.

Each run's figures go to ``evaluation.json`` in its folder. A rerun skips runs that are
evaluated, resumes a run that was killed mid-training (``train(resume=True)``) and evaluates a
trained one; so a study survives a lost Colab runtime or a SIGKILL. The results folder gets
``results.json``, ``RESULTS.md`` and figures (:mod:`attn_lib.study.report`), never checkpoints,
and one record per run (:mod:`attn_lib.study.records`): a run whose record is there already is
taken from it, so a study continues across machines from its committed results folder.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .._device import resolve_device
from .._io import atomic_write_bytes
from ..checkpoint import LAST, load_checkpoint, model_from_checkpoint
from ..data import ArrayDataset, load_dataset, with_training_stats
from ..models import list_models
from ..training import evaluate, train
from .records import load_record, provenance_note, save_record
from .report import write_report
from .robustness import (
    EPSILONS,
    LARGE_EPSILON,
    PGD_STEP_FACTOR,
    PGD_STEPS,
    fgsm_accuracy,
    global_shuffle_effect,
    pgd_accuracy,
)
from .scales import get_scale, run_name

EVALUATION_FILE = "evaluation.json"
#: Bumped when the evaluation changes, so older evaluation.json files are recomputed.
EVALUATION_VERSION = 2
#: Seeds the attacked subset of the test split and PGD's random starts.
ATTACK_SEED = 0
RUNS_ROOT = Path("runs") / "study"


class StudyResult(NamedTuple):
    """What :func:`reproduce` returns."""

    results: dict[str, Any]  #: everything written to results.json
    out_dir: Path  #: the results folder (results.json, RESULTS.md, figures)


def reproduce(
    dataset: str | None = None,
    scale: str = "cpu",
    *,
    models: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    epochs: int | None = None,
    progress: bool = True,
    figures: bool = True,
    note: str | None = None,
) -> StudyResult:
    """Train and evaluate every model x seed of a study, then write its results folder.

    Args:
        dataset: ``cifar10`` (default for the ``cpu``/``gpu``/``paper`` scales), ``cifar100``,
            ``synthetic``, ``folder``, ... (see :func:`attn_lib.data.load_dataset`).
        scale: ``cpu``, ``gpu``, ``paper`` or ``smoke`` (see :mod:`attn_lib.study.scales`).
        models: model names (default: the scale's; the paper's baseline ``vgg`` first).
        seeds: seeds per model (default: the scale's).
        data_dir: where the data set lives (an extracted CIFAR image tree works).
        out_dir: the results folder (default ``results/<dataset>-<scale>``).
        runs_dir: where the run folders (checkpoints) go (default
            ``runs/study/<dataset>-<scale>``); keep it out of version control.
        device: default: the GPU if there is one.
        epochs: override the scale's epochs (for a shorter try; recorded in the results).
        progress: a progress bar over the study's runs (and each run's epochs).
        figures: write the PNG figures (needs matplotlib).
        note: a sentence for the report about the data or the run (e.g. where a local copy
            of the data comes from), kept in results.json and printed in RESULTS.md.

    Returns:
        :class:`StudyResult` ``(results, out_dir)``.
    """
    spec = get_scale(scale)
    dataset = dataset or spec.dataset
    models = tuple(models or spec.models)
    seeds = tuple(spec.seeds if seeds is None else seeds)
    _check_plan(models, seeds)
    out = Path(out_dir) if out_dir is not None else Path("results") / f"{dataset}-{scale}"
    runs = Path(runs_dir) if runs_dir is not None else RUNS_ROOT / f"{dataset}-{scale}"
    dev = resolve_device(device)
    train_kw = dict(spec.train, **({"epochs": epochs} if epochs else {}))
    # Data first: a missing data set fails before anything is trained or written.
    test_set = load_dataset(dataset, "test", data_dir=data_dir, limit=spec.limit_test)

    from tqdm.auto import tqdm

    # Seed-major: every model's first seed is done before any second seed, so an interrupted
    # study already compares all models.
    plan = [(m, s) for s in seeds for m in models]
    started = time.perf_counter()
    study = {"dataset": dataset, "scale": scale, "scale_description": spec.description,
             "models": list(models), "seeds": list(seeds), "train": train_kw,
             "data_source": _data_source(dataset, data_dir, test_set),
             "test_images": len(test_set), "epsilons": list(EPSILONS),
             "large_epsilon": LARGE_EPSILON,
             "attack_images": len(_attack_set(test_set, spec.attack_images)),
             # a local path says nothing on another machine: keep the folder's name
             "runs_dir": runs.name if runs.is_absolute() else str(runs), "note": note}
    records: list[dict[str, Any]] = []
    bar = tqdm(plan, desc=f"study {dataset}-{scale}", unit="run", disable=not progress)
    for model_name, seed in bar:
        bar.set_postfix_str(f"{model_name} seed {seed}")
        run_dir = runs / run_name(model_name, seed)
        # A run committed to the results folder (records.py) is taken, not trained again.
        records.append(load_record(out, model_name, seed, train_kw, len(test_set),
                                   EVALUATION_VERSION)
                       or save_record(out, run_one(model_name, seed, dataset, run_dir, test_set,
                                                   train_kw, data_dir=data_dir, device=dev,
                                                   progress=progress,
                                                   attack_images=spec.attack_images),
                                       environment(dev)))
        if len(records) < len(plan):
            # The tables so far, so a study cut short (a time limit, a lost runtime) still
            # leaves its numbers; the figures come at the end.
            _report(study, records, models, dev, started, out, test_set, runs, figures=False)
    bar.close()
    results = _report(study, records, models, dev, started, out, test_set, runs, figures)
    return StudyResult(results, out)


def _report(study: dict[str, Any], records: list[dict[str, Any]], models: Sequence[str],
            dev: torch.device, started: float, out: Path, test_set: ArrayDataset, runs: Path,
            figures: bool) -> dict[str, Any]:
    ordered = sorted(records, key=lambda r: (models.index(r["model"]), r["seed"]))
    study = {**study, "note": provenance_note(study["note"], ordered)}
    results = {"study": study, "environment": environment(dev),
               "wall_s": time.perf_counter() - started,
               "train_s": sum(r["train_time_s"] for r in ordered), "runs": ordered}
    write_report(results, out, test_set=test_set, runs_dir=runs, figures=figures)
    return results


def _check_plan(models: Sequence[str], seeds: Sequence[int]) -> None:
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; available: "
                         f"{', '.join(list_models())}")
    if not models or not seeds:
        raise ValueError("a study needs at least one model and one seed")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative integers, got {list(seeds)}")
    if len(set(models)) != len(models) or len(set(seeds)) != len(seeds):
        raise ValueError("models and seeds must not repeat")


def run_one(model_name: str, seed: int, dataset: str, run_dir: Path, test_set: ArrayDataset,
            train_kw: dict[str, Any], *, data_dir: Any = None,
            device: torch.device | None = None, progress: bool = True,
            attack_images: int | None = None) -> dict[str, Any]:
    """Train (or resume) one run and evaluate it, unless its evaluation is already there.

    A run folder whose training finished (``last.pt`` of the last epoch) but whose evaluation
    is missing or older than :data:`EVALUATION_VERSION` is evaluated again without training.
    """
    done = _finished_evaluation(run_dir, train_kw, len(test_set),
                                len(_attack_set(test_set, attack_images)))
    if done is not None:
        return done
    dev = resolve_device(device)
    started = time.perf_counter()
    last = run_dir / LAST
    resume = last.exists()
    result = train(model_name, dataset, data_dir=data_dir, out_dir=run_dir, resume=resume,
                   seed=seed, device=dev, progress=progress, **train_kw)
    history = result.history
    ckpt = load_checkpoint(last)
    model = model_from_checkpoint(ckpt, last).to(dev)
    record = {
        "model": model_name, "seed": seed, "run_dir": run_dir.name,  # no local paths in results
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": len(history), "recipe": ckpt["config"]["recipe"],
        "train_time_s": history[-1]["elapsed_s"],
        "train_images_per_s": sum(r["images_per_s"] for r in history) / len(history),
        "history": [{k: r[k] for k in ("epoch", "train_loss", "test_acc", "elapsed_s")}
                    for r in history],
        **evaluate_model(model, with_training_stats(test_set, ckpt["data"]),
                         attack_images=attack_images, progress=progress),
        "evaluation_version": EVALUATION_VERSION, "train_settings": train_kw,
    }
    # This call's time, training included unless it resumed a finished run.
    record["wall_s"] = time.perf_counter() - started
    atomic_write_bytes(run_dir / EVALUATION_FILE,
                       (json.dumps(record, indent=1) + "\n").encode("utf-8"))
    return record


def _finished_evaluation(run_dir: Path, train_kw: dict[str, Any], test_images: int,
                         attack_images: int) -> dict[str, Any] | None:
    path = run_dir / EVALUATION_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: evaluate again
    same = (record.get("evaluation_version") == EVALUATION_VERSION
            and record.get("train_settings") == json.loads(json.dumps(train_kw))
            and record.get("test_images") == test_images
            and record.get("attack", {}).get("images") == attack_images)
    return record if same else None


def evaluate_model(model: nn.Module, test_set: ArrayDataset, *,
                   epsilons: Sequence[float] = EPSILONS, attack_images: int | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """The study's figures for one trained model on ``test_set`` (normalised with the model's
    own statistics): clean and flip-TTA accuracy, FGSM and PGD accuracy per epsilon (and at
    :data:`~attn_lib.study.robustness.LARGE_EPSILON`), the effect of shuffling ``g``
    (attention models) and localisation scores (data with masks).

    Args:
        attack_images: attack a seeded random subset of this many test images (the same for
            FGSM and PGD); None attacks all of them. The clean accuracy on the attacked images
            is recorded beside the attacks so their drop can be read.
    """
    clean = evaluate(model, test_set, tta=True, batch_size=500)
    attacked = _attack_set(test_set, attack_images)
    budgets = (*epsilons, LARGE_EPSILON)
    fgsm = fgsm_accuracy(model, attacked, (0.0, *budgets), progress=progress)
    pgd = pgd_accuracy(model, attacked, budgets, steps=PGD_STEPS, seed=ATTACK_SEED,
                       progress=progress)
    record: dict[str, Any] = {
        "test_images": clean["n"], "test_acc": clean["acc"], "test_acc_tta": clean["acc_tta"],
        "test_loss": clean["loss"],
        "attack": {"images": len(attacked), "seed": ATTACK_SEED, "clean_acc": fgsm.pop(0.0),
                   "pgd_steps": PGD_STEPS, "pgd_step_size": f"{PGD_STEP_FACTOR:g} * epsilon / "
                   "steps", "pgd_random_start": True, "large_epsilon": LARGE_EPSILON},
        "fgsm": _by_epsilon(fgsm), "pgd": _by_epsilon(pgd),
    }
    if getattr(model, "levels", ()):
        record["g_shuffle"] = global_shuffle_effect(model, test_set)
    if test_set.masks is not None:
        from ..maps.localize import localization_scores

        # Grad-CAM is scored at the VGG's conv7/conv10/conv13; a model that names its own
        # Grad-CAM layer (the ResNet rows) has no such levels, so only its attention is scored.
        vgg_levels = getattr(model, "gradcam_layer", None) is None
        rows = localization_scores(model, test_set,
                                   gradcam=vgg_levels and not getattr(model, "levels", ()))
        record["localization"] = [row._asdict() for row in rows]
    return record


def _attack_set(test_set: ArrayDataset, attack_images: int | None) -> ArrayDataset:
    """The attacked images: all, or a seeded random subset (nested: 500 lie within 1,000)."""
    if attack_images is None:
        return test_set
    return test_set.subset(attack_images, seed=ATTACK_SEED)


def _by_epsilon(accuracies: dict[float, float]) -> list[dict[str, float]]:
    return [{"epsilon": eps, "epsilon_255": round(eps * 255, 6), "acc": acc}
            for eps, acc in accuracies.items()]


def _data_source(dataset: str, data_dir: Any, test_set: ArrayDataset) -> str:
    if dataset == "synthetic":
        return "synthetic shapes in clutter, generated offline (attn_lib.data.synthetic)"
    if not data_dir:
        return f"{dataset} downloaded by torchvision ({len(test_set)} test images)"
    kind = "an image tree" if (Path(data_dir) / "train").is_dir() else "a local copy"
    return f"{dataset} read from {kind} ({len(test_set)} test images)"


def environment(device: torch.device) -> dict[str, Any]:
    """Where a study ran: device, processor, threads, versions, date (UTC)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {"device": device.type, "device_name": name, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
