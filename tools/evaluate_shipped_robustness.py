"""FGSM and PGD on the shipped CIFAR-10 weights: a robustness table without retraining.

The study (``python -m attn_lib reproduce``) evaluates every run it trains; when its run
folders are not at hand, the seed-0 models it shipped as package data (``weights="cifar10-cpu"``)
can still be attacked with the study's own functions, on the same seeded subset of the test
split the study uses. Writes ``robustness-shipped.json`` and ``robustness-shipped.md``:

    python tools/evaluate_shipped_robustness.py --data-dir .data --out results/cifar10-cpu
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import attn_lib
from attn_lib.data import load_dataset, with_training_stats
from attn_lib.study.robustness import (
    EPSILONS,
    LARGE_EPSILON,
    PGD_STEPS,
    fgsm_accuracy,
    pgd_accuracy,
)
from attn_lib.study.runner import ATTACK_SEED, environment

MODELS = ("vgg", "vgg-noatt", "vgg-att3-concat-pc", "vgg-att3-concat-dp")


def evaluate_shipped(model_name: str, weights: str, test_set, images: int) -> dict:
    """Clean accuracy on the whole test split, FGSM and PGD on a seeded subset."""
    model = attn_lib.build_model(model_name, weights=weights)
    info = model.weights_info
    data = with_training_stats(test_set, info)
    clean = attn_lib.evaluate(model, data, batch_size=500)
    attacked = data.subset(images, seed=ATTACK_SEED)
    budgets = (*EPSILONS, LARGE_EPSILON)
    fgsm = fgsm_accuracy(model, attacked, (0.0, *budgets))
    pgd = pgd_accuracy(model, attacked, budgets, steps=PGD_STEPS, seed=ATTACK_SEED)
    return {"model": model_name, "weights": weights, "seed": info.get("seed"),
            "test_acc": clean["acc"], "attacked_clean_acc": fgsm.pop(0.0),
            "fgsm": {f"{e * 255:g}/255": a for e, a in fgsm.items()},
            "pgd": {f"{e * 255:g}/255": a for e, a in pgd.items()}}


def markdown(result: dict) -> str:
    eps = list(result["rows"][0]["fgsm"])
    head = ("| model | test acc | clean (attacked images) | "
            + " | ".join(f"FGSM {e} | PGD {e}" for e in eps) + " |")
    rule = "|---|---:|---:|" + "---:|---:|" * len(eps)
    lines = [
        "# FGSM and PGD on the shipped seed-0 weights",
        "",
        f"{result['note']}",
        "",
        head, rule,
    ]
    for r in result["rows"]:
        cells = " | ".join(f"{100 * r['fgsm'][e]:.1f} | {100 * r['pgd'][e]:.1f}" for e in eps)
        lines.append(f"| `{r['model']}` | {100 * r['test_acc']:.2f} | "
                     f"{100 * r['attacked_clean_acc']:.1f} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 (image tree or torchvision)")
    parser.add_argument("--out", default="results/cifar10-cpu", help="folder for the two files")
    parser.add_argument("--images", type=int, default=500, help="attacked test images")
    parser.add_argument("--weights", default="cifar10-cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    test_set = load_dataset("cifar10", "test", data_dir=args.data_dir)
    started = time.perf_counter()
    rows = [evaluate_shipped(m, args.weights, test_set, args.images) for m in MODELS]
    env = environment(torch.device("cpu"))
    note = (f"Weights `{args.weights}` (the `cpu` study's seed-0 runs, 1/16 width, 6 epochs). "
            f"Test accuracy on all {len(test_set):,} test images; FGSM and PGD (L-infinity, "
            f"{PGD_STEPS} steps of 2.5·ε/{PGD_STEPS} from a random start) on the same "
            f"{args.images} test images drawn with seed {ATTACK_SEED}, accuracies in %. One seed "
            f"per model: differences of a point or two are within seed noise. Measured on "
            f"{env['device_name']} ({env['torch_threads']} threads), torch {torch.__version__}, "
            f"{env['date']}, "
            f"{time.perf_counter() - started:.0f} s.")
    result = {"note": note, "environment": env, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness-shipped.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "robustness-shipped.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
