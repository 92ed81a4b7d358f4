"""Put trained models into the package as named weights (``attn_lib/models/pretrained``).

    python tools/ship_weights.py study results/cifar10-cpu --runs-dir runs/study/cifar10-cpu
    python tools/ship_weights.py run runs/vgg-att3-concat-pc-synthetic --weights synthetic

``study``: the first seed of every model of a study's results folder becomes weights named after
the data set and the study's scale (``cifar10-cpu``), with the study's measured figures (test
accuracy on the whole test split, without TTA) and how it was trained. ``run``: one run folder
(e.g. the main job), whose test accuracy is measured here on the data set's whole test split. Every
entry also records its accuracy on the shipped sample images (``sample_acc``) when they are of its
data set, so a test can check that the file, the model and the normalisation fit together.

``ship_trained`` (used by ``tools/merge_gpu_results.py``) ships state dicts trained elsewhere
(the GPU command's width-1/4 models) as float16 files, and refuses the lot, before writing
anything, when they would exceed :data:`GPU_WEIGHTS_LIMIT_BYTES` together.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from attn_lib.checkpoint import LAST, load_checkpoint, model_from_checkpoint
from attn_lib.data import load_dataset, load_samples, normalize, with_training_stats
from attn_lib.data.samples import SAMPLE_FILES
from attn_lib.models import build_model
from attn_lib.models.weights import export_weights, list_weights, shipped_path, state_dict_bytes
from attn_lib.training import evaluate

#: The float16 files of one weights name shipped from GPU runs, together, at most (10 MB: the
#: package stays small enough to install on Colab in seconds).
GPU_WEIGHTS_LIMIT_BYTES = 10_000_000
#: Keys of a returned facts file that describe the training, not the entry.
TRAINING_KEYS = ("command", "epochs", "seed", "recipe", "hardware", "date", "data",
                 "test_acc_tta", "selection")


def ship_trained(items: list[tuple[dict, dict[str, torch.Tensor]]], weights: str,
                 limit_bytes: int = GPU_WEIGHTS_LIMIT_BYTES) -> list[dict]:
    """Ship ``(facts, state_dict)`` pairs as float16 weights named ``weights``.

    ``facts`` holds ``model``, ``options`` (with ``width`` and ``num_classes``), ``dataset``,
    ``classes``, ``mean``, ``std``, ``image_size``, ``test_acc`` and the training facts of
    :data:`TRAINING_KEYS`. Each state dict is loaded into its model first (a mismatch is an
    error before anything is written); the accuracy on the shipped sample images is measured
    with the float16 values, as users will load them.

    Raises:
        ValueError: the files would exceed ``limit_bytes`` together (with the entries of the
            same name already shipped for other models); nothing is written then.
    """
    models = []
    for facts, state in items:
        options = {k: v for k, v in facts["options"].items() if k != "num_classes"}
        model = build_model(facts["model"], len(facts["classes"]), **options)
        model.load_state_dict(state)  # float16 values into the float32 model
        models.append((facts, model.eval()))
    replaced = {f["model"] for f, _ in models}
    kept = [e for e in list_weights() if e["weights"] == weights and e["model"] not in replaced
            and e.get("file")]
    total = (sum(len(state_dict_bytes(m, torch.float16)) for _, m in models)
             + sum(shipped_path(e).stat().st_size for e in kept))
    if total > limit_bytes:
        raise ValueError(f"{weights!r} weights would take {total / 1e6:.2f} MB together, over "
                         f"the {limit_bytes / 1e6:.0f} MB limit: ship a narrower width; "
                         "nothing was written")
    entries = []
    for facts, model in models:
        entry_facts = {k: facts[k] for k in ("dataset", "classes", "mean", "std",
                                             "image_size", "test_acc")}
        entry_facts["trained"] = {k: facts[k] for k in TRAINING_KEYS if k in facts}
        entry_facts["sample_acc"] = sample_accuracy(model, facts["dataset"], facts["mean"],
                                                    facts["std"])
        entry = export_weights(model, weights, entry_facts, dtype=torch.float16)
        print(f"{entry['model']} weights {entry['weights']!r}: test acc {entry['test_acc']:.4f},"
              f" sample acc {entry['sample_acc']}, {entry['file']}")
        entries.append(entry)
    return entries


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
        entry = export_weights(model, f"{study['dataset']}-{study['scale']}", facts)
        print(f"{entry['model']} weights {entry['weights']!r}: test acc {entry['test_acc']:.4f},"
              f" sample acc {entry['sample_acc']}, {entry['file']}")


def ship_run(run_dir: Path, weights: str, command: str, hardware: str) -> None:
    path = run_dir / LAST
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    data = ckpt["data"]
    test = load_dataset(data["dataset"], "test", data_dir=ckpt["config"].get("data_dir"))
    test = with_training_stats(test, data)
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
