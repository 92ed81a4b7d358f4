"""Put trained models into the package as named weights (``attn_lib/models/pretrained``).

    python tools/ship_weights.py study results/cifar10-cpu --runs-dir runs/study/cifar10-cpu
    python tools/ship_weights.py run runs/vgg-att3-concat-pc-synthetic --weights synthetic

``study``: the first seed of every model of a study's results folder becomes weights named after
the data set (``cifar10``), with the study's measured figures (test accuracy on the whole test
split, without TTA) and how it was trained. ``run``: one run folder (e.g. the main job), whose
test accuracy is measured here on the data set's whole test split. Every entry also records its
accuracy on the shipped sample images (``sample_acc``) when they are of its data set, so a test
can check that the file, the model and the normalisation fit together.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from attn_lib.checkpoint import LAST, load_checkpoint, model_from_checkpoint
from attn_lib.data import load_dataset, load_samples, normalize
from attn_lib.data.samples import SAMPLE_FILES
from attn_lib.models.weights import export_weights
from attn_lib.training import evaluate


def sample_accuracy(model: torch.nn.Module, dataset: str, mean, std) -> float | None:
    """Accuracy on the shipped sample images of ``dataset`` (None if there are none)."""
    if dataset not in SAMPLE_FILES:
        return None
    samples = load_samples(dataset)
    with torch.no_grad():
        x = normalize(samples.images, mean, std)
        correct = int((model.eval()(x).logits.argmax(1) == samples.labels).sum())
    return round(correct / len(samples), 6)


def facts_of(ckpt: dict, test_acc: float, command: str, extra: dict) -> dict:
    data, config = ckpt["data"], ckpt["config"]
    recipe = config["recipe"]
    return {
        "dataset": data["dataset"], "classes": list(data["classes"]),
        "mean": [float(m) for m in data["mean"]], "std": [float(s) for s in data["std"]],
        "image_size": int(data["image_size"]), "test_acc": round(float(test_acc), 6),
        "trained": {"command": command, "epochs": int(ckpt["epoch"]), "seed": config["seed"],
                    "recipe": recipe, **extra},
    }


def ship_study(results_dir: Path, runs_dir: Path) -> None:
    results = json.loads((results_dir / "results.json").read_text())
    study, env = results["study"], results["environment"]
    first = {}
    for run in results["runs"]:
        first.setdefault(run["model"], run)
    for model_name, run in first.items():
        path = runs_dir / f"{model_name}-seed{run['seed']}" / LAST
        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt, path)
        command = (f"python -m attn_lib reproduce --scale {study['scale']} --dataset "
                   f"{study['dataset']} (run {model_name}, seed {run['seed']})")
        extra = {"hardware": f"{env['device_name']} ({env['device']}, {env['torch_threads']} "
                             f"threads), torch {env['torch']}",
                 "date": env["date"], "data": study["data_source"],
                 "test_acc_tta": run["test_acc_tta"],
                 "fgsm": {f"{f['epsilon_255']:g}/255": f["acc"] for f in run["fgsm"]}}
        facts = facts_of(ckpt, run["test_acc"], command, extra)
        facts["sample_acc"] = sample_accuracy(model, facts["dataset"], facts["mean"],
                                              facts["std"])
        entry = export_weights(model, study["dataset"], facts)
        print(f"{entry['model']} weights {entry['weights']!r}: test acc {entry['test_acc']:.4f},"
              f" sample acc {entry['sample_acc']}, {entry['file']}")


def ship_run(run_dir: Path, weights: str, command: str, hardware: str) -> None:
    path = run_dir / LAST
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    data = ckpt["data"]
    test = load_dataset(data["dataset"], "test", data_dir=ckpt["config"].get("data_dir"))
    import dataclasses

    test = dataclasses.replace(test, mean=tuple(data["mean"]), std=tuple(data["std"]))
    metrics = evaluate(model, test, tta=True)
    facts = facts_of(ckpt, metrics["acc"], command,
                     {"hardware": hardware, "test_acc_tta": metrics["acc_tta"],
                      "data": f"{data['dataset']} ({metrics['n']} test images)"})
    facts["sample_acc"] = sample_accuracy(model, facts["dataset"], facts["mean"], facts["std"])
    entry = export_weights(model, weights, facts)
    print(f"{entry['model']} weights {entry['weights']!r}: test acc {entry['test_acc']:.4f} "
          f"on {metrics['n']} images, {entry['file']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("study", help="the first seed of each model of a study")
    s.add_argument("results_dir", type=Path)
    s.add_argument("--runs-dir", type=Path, required=True)
    r = sub.add_parser("run", help="one run folder")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--weights", required=True, help="the weights' name, e.g. synthetic")
    r.add_argument("--command", required=True, help="the command that trained it")
    r.add_argument("--hardware", required=True,
                   help="where and when it was trained, e.g. 'Intel Xeon, 2 cores, 2026-11-28'")
    args = p.parse_args(argv)
    if args.what == "study":
        ship_study(args.results_dir, args.runs_dir)
    else:
        ship_run(args.run_dir, args.weights, args.command, args.hardware)
    return 0


if __name__ == "__main__":
    sys.exit(main())
