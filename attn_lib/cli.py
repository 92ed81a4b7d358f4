"""Command line: ``python -m attn_lib [train|evaluate|localize|reproduce] ...``.

With no arguments it runs the main job: train ``vgg-att3-concat-pc`` on the synthetic data
(narrow on a CPU, a few minutes on two cores; full width on a GPU) and leave a checkpoint,
metrics and an attention-map PNG in ``runs/``. Mistakes a user can make (bad paths, corrupt
checkpoints, missing data or optional packages, bad option values) end with one ``error: ...``
line and exit status 2; a diverging loss ends with exit status 1.

The ``train`` options of the recipe are derived from :class:`attn_lib.training.Recipe`'s
fields (their help, choices and defaults), and every list of allowed values comes from the
module that defines it, so nothing here repeats a setting.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import Field
from typing import Any

import torch

from ._device import resolve_device
from ._validation import first_line
from .checkpoint import (
    load_checkpoint,
    load_model,
    model_from_checkpoint,
    resolve_checkpoint_path,
)
from .data import DATASETS, SPLITS, load_checkpoint_data
from .maps.localize import FORMATS, format_rows, localization_scores
from .models import list_models
from .models.attention import NORMALIZATIONS, WIDTH_MATCHES
from .models.attn_vgg import POSITIONS
from .runs import train
from .study import SCALES, reproduce
from .training import MAIN_MODEL, PRESETS, NonFiniteLossError, evaluate
from .training.recipe import PRECISIONS, recipe_fields

EXAMPLES = """examples:
  python -m attn_lib                                   # the main job (synthetic data)
  python -m attn_lib train --dataset cifar10 --preset fast
  python -m attn_lib train --dataset folder --data-dir .data --epochs 30
  python -m attn_lib train --out runs/a --resume       # continue an interrupted run
  python -m attn_lib evaluate --checkpoint runs/a      # its best.pt, else last.pt
  python -m attn_lib localize --checkpoint runs/a
  python -m attn_lib reproduce --scale cpu --data-dir .data   # the paper's comparison
  torchrun --standalone --nproc_per_node 8 -m attn_lib train --dataset cifar10 --preset fast
                                                       # data-parallel on 8 GPUs
"""
#: What ``--checkpoint`` accepts (evaluate, localize).
CHECKPOINT_HELP = ("a .pt file or a run folder (its best.pt -- written with a validation split, "
                   "--val-size -- else its last.pt)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="python -m attn_lib",
        description="Learn To Pay Attention (Jetley et al., ICLR 2018): train, evaluate and "
                    "localise with attention-augmented VGGs. Without a command: the main job "
                    f"(train {MAIN_MODEL} on synthetic data).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(commands.add_parser(
        "train", help="train a model (default: the main job)",
        description="Train a model of the paper's family; checkpoints, metrics.jsonl and "
                    "attention.png go to the run folder. Explicit options override the preset.",
        epilog=_presets_text(), formatter_class=argparse.RawDescriptionHelpFormatter))
    _add_evaluate(commands.add_parser(
        "evaluate", help="accuracy (and flip-TTA accuracy) of a checkpoint",
        description="Print the test accuracy of a checkpoint, plain and with flip test-time "
                    "augmentation."))
    _add_reproduce(commands.add_parser(
        "reproduce", help="the paper's comparison: models x seeds, FGSM, g shuffled, report",
        description="Train and evaluate the paper's models over several seeds at a named "
                    "scale and write results.json, RESULTS.md and figures. A rerun skips "
                    "finished runs and resumes a killed one.",
        epilog=_scales_text(), formatter_class=argparse.RawDescriptionHelpFormatter))
    _add_localize(commands.add_parser(
        "localize", help="score where attention points (pointing game, mass in mask)",
        description="Score the attention maps of a checkpoint against object masks "
                    "(synthetic data; CUB-200-2011's boxes): pointing game, attention mass "
                    "inside the object and the Jaccard index of the thresholded map."))
    return parser


def _presets_text() -> str:
    keys = ("epochs", "batch_size", "lr", "schedule", "width", "dropout", "augment",
            "limit_train", "val_size")
    lines = ["presets (explicit options override them):"]
    for name, recipe in PRESETS.items():
        values = recipe.to_dict()
        shown = ", ".join(f"{k}={values[k]}" for k in keys if values[k] is not None)
        lines.append(f"  {name:6s} {shown}")
    return "\n".join(lines)


def _scales_text() -> str:
    lines = ["scales (default models and seeds in brackets):"]
    for name, scale in SCALES.items():
        lines.append(f"  {name:6s} {scale.description} [{', '.join(scale.models)}; seeds "
                     f"{', '.join(map(str, scale.seeds))}]")
    return "\n".join(lines)


def _add_reproduce(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", choices=list(SCALES), default="cpu", help="default: cpu")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="default: the scale's (cifar10; synthetic for smoke)")
    p.add_argument("--data-dir", metavar="DIR", help="where the data set lives")
    p.add_argument("--models", nargs="+", choices=list_models(), metavar="NAME",
                   help="models to compare (default: the scale's)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                   help="seeds per model (default: the scale's)")
    p.add_argument("--epochs", type=int, help="override the scale's epochs (a shorter try)")
    p.add_argument("--out", metavar="DIR", help="results folder (default results/<dataset>-"
                                                "<scale>)")
    p.add_argument("--runs-dir", metavar="DIR",
                   help="run folders with checkpoints (default runs/study/<dataset>-<scale>)")
    p.add_argument("--device", help="torch device (default: GPU if any)")
    p.add_argument("--no-figures", dest="figures", action="store_false",
                   help="skip the PNG figures")
    p.add_argument("--note", help="a sentence for the report, e.g. where the data comes from")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def recipe_flag(f: Field) -> str:
    """The command-line flag of a :class:`~attn_lib.training.Recipe` field: its own
    (``--ema``, ``--workers``) or ``--name-with-dashes``."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def _value_type(f: Field) -> type:
    """int, float, bool or str: the field's type without ``| None`` (a ``tuple[int, ...]``
    field's items are ints)."""
    names = [n.strip() for n in str(f.type).split("|") if n.strip() != "None"]
    if names[0] == "tuple[int, ...]":
        return int
    return {"int": int, "float": float, "bool": bool, "str": str}[names[0]]


def add_recipe_arguments(group: argparse._ArgumentGroup) -> None:
    """One option per :class:`~attn_lib.training.Recipe` field (but ``name``: ``--preset``),
    with the field's help and choices; unset options stay ``None`` (the preset's value). A
    yes/no field gets ``--x`` and ``--no-x``."""
    for f in recipe_fields():
        kind, meta = _value_type(f), f.metadata
        if kind is bool:
            group.add_argument(recipe_flag(f), dest=f.name, default=None,
                               action=argparse.BooleanOptionalAction, help=meta["help"])
        else:
            many = str(f.type).startswith("tuple")  # e.g. --milestones 60 120 160
            group.add_argument(recipe_flag(f), dest=f.name, type=kind, default=None,
                               nargs="+" if many else None, choices=meta["choices"],
                               metavar=meta["metavar"], help=meta["help"])


def _add_train(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--model", choices=list_models(), default=None, metavar="NAME",
                   help=f"model name, one of {', '.join(list_models())}; default {MAIN_MODEL}, "
                        "or the checkpoint's with --resume")
    g.add_argument("--dataset", choices=DATASETS, default=None,
                   help="data set; default synthetic (or the checkpoint's with --resume)")
    g.add_argument("--data-dir", metavar="DIR", help="where the data set lives")
    g.add_argument("--preset", choices=list(PRESETS),
                   help="recipe; default: fast on a GPU, cpu on a CPU, smoke if ATTN_LIB_SMOKE=1")
    g.add_argument("--out", metavar="DIR", help="run folder (default runs/<model>-<dataset>)")
    g.add_argument("--resume", action="store_true",
                   help="continue from the run folder's last.pt (newest matching run without "
                        "--out)")
    g.add_argument("--device", help="torch device, e.g. cuda, cuda:1, cpu (default: GPU if any)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels (exact resume on GPU; slower)")
    g.add_argument("--sync-bn", dest="sync_bn", action="store_const", const=True, default=None,
                   help="under torchrun on GPUs: batch-norm statistics over the global batch "
                        "(SyncBatchNorm) rather than each process's share")
    g.add_argument("--channels-last", dest="channels_last", default=None,
                   action=argparse.BooleanOptionalAction,
                   help="channels_last memory format (default on GPUs)")
    g.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    add_recipe_arguments(p.add_argument_group("recipe (default: the preset's value)"))
    m = p.add_argument_group("model options (default: the paper's)")
    m.add_argument("--attention-position", choices=POSITIONS)
    m.add_argument("--normalize", choices=NORMALIZATIONS)
    m.add_argument("--match", choices=WIDTH_MATCHES)


#: The ``train`` options that are model options (the rest of the parsed arguments are train()'s).
MODEL_OPTION_KEYS = ("attention_position", "normalize", "match")
#: Parsed arguments that are not keywords of train().
NOT_TRAIN_KEYS = ("command", "debug", "quiet", "model", "dataset", "out", *MODEL_OPTION_KEYS)


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help=CHECKPOINT_HELP)
    p.add_argument("--model", choices=list_models(), metavar="NAME",
                   help="fail unless the checkpoint holds this model")
    p.add_argument("--dataset", choices=DATASETS, help="default: the checkpoint's")
    p.add_argument("--data-dir", metavar="DIR", help="default: the checkpoint's")
    p.add_argument("--split", default="test", choices=SPLITS,
                   help="default: test")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate N images (default: all)")
    p.add_argument("--batch-size", type=int, default=500, help="default: 500")
    p.add_argument("--device", help="torch device (default: GPU if any)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="default: auto (bf16/fp16 on GPUs, fp32 on CPU)")


def _add_localize(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help=f"the model whose attention is scored: {CHECKPOINT_HELP}")
    parser.add_argument("--baseline", metavar="PATH",
                        help="a baseline checkpoint or run folder (e.g. of vgg) whose Grad-CAM is "
                             "scored too")
    parser.add_argument("--gradcam", action="store_true",
                        help="also score Grad-CAM of the --checkpoint model itself")
    parser.add_argument("--dataset", default=None, choices=DATASETS,
                        help="dataset with object masks (default: the checkpoint's, synthetic)")
    parser.add_argument("--split", default="test", choices=SPLITS,
                        help="dataset split (default: test)")
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="where the data lives")
    parser.add_argument("--limit", type=int, default=1000, metavar="N",
                        help="score N images, a seeded random draw (default: 1000; 0 = all)")
    parser.add_argument("--batch-size", type=int, default=100, metavar="N",
                        help="images per forward pass (default: 100)")
    parser.add_argument("--device", default=None,
                        help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--format", choices=FORMATS, default=FORMATS[0],
                        help="output format (default: table)")



def train_command(args: argparse.Namespace) -> int:
    """``train`` (and the no-argument main job)."""
    options = {k: getattr(args, k) for k in MODEL_OPTION_KEYS if getattr(args, k) is not None}
    options.update({k: v for k, v in vars(args).items() if k not in NOT_TRAIN_KEYS})
    model = args.model
    if model is None and not args.resume:
        model = MAIN_MODEL
    result = train(model, args.dataset, out_dir=args.out, progress=not args.quiet, **options)
    last = result.history[-1] if result.history else {}
    if last and os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 speaks
        tta = (f" (flip TTA {100 * last['test_acc_tta']:.2f}%)" if "test_acc_tta" in last
               else "")
        print(f"done: {len(result.history)} epochs, test accuracy "
              f"{100 * last['test_acc']:.2f}%{tta}; run folder {result.run_dir}")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    """``evaluate``: print accuracy and flip-TTA accuracy of a checkpoint."""
    device = resolve_device(args.device)
    path = resolve_checkpoint_path(args.checkpoint)
    ckpt = load_checkpoint(path, expect_model=args.model)
    model = model_from_checkpoint(ckpt, path).to(device)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a positive integer, got {args.limit}")
    name, dataset = load_checkpoint_data(ckpt, path, dataset=args.dataset,
                                         data_dir=args.data_dir, split=args.split,
                                         limit=args.limit)
    metrics = evaluate(model, dataset, tta=True, batch_size=args.batch_size,
                       precision=args.precision)
    print(f"{path}: {ckpt['model_name']} (epoch {ckpt['epoch']}) on {name} {args.split}, "
          f"{metrics['n']} images")
    print(f"accuracy: {100 * metrics['acc']:.2f}% (loss {metrics['loss']:.4f})")
    print(f"flip-TTA accuracy: {100 * metrics['acc_tta']:.2f}% (loss {metrics['loss_tta']:.4f})")
    return 0


def _same_stats(a: dict[str, Any], b: dict[str, Any]) -> bool:
    pairs = zip(list(a.get("mean", ())) + list(a.get("std", ())),
                list(b.get("mean", ())) + list(b.get("std", ())))
    return all(abs(float(x) - float(y)) < 1e-6 for x, y in pairs)


def localize_command(args: argparse.Namespace) -> int:
    """``localize``: print the localisation table of a checkpoint's attention (and of
    Grad-CAM, of a baseline or of the model itself) against the data's object masks."""
    if args.limit is not None and args.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {args.limit}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    device = resolve_device(args.device)
    path = resolve_checkpoint_path(args.checkpoint)
    ckpt = load_checkpoint(path, map_location="cpu")
    model = model_from_checkpoint(ckpt, path).to(device)
    info = dict(ckpt["data"])
    baseline = None
    if args.baseline:
        baseline, base_info = load_model(args.baseline, map_location="cpu")
        baseline.to(device)
        if base_info.get("dataset") != info.get("dataset") or not _same_stats(info, base_info):
            raise ValueError(
                f"--baseline {args.baseline} was trained on {base_info.get('dataset')!r} with "
                f"other statistics than --checkpoint {args.checkpoint} ({info.get('dataset')!r}); "
                "both must be trained on the same dataset"
            )
    name, dataset = load_checkpoint_data(ckpt, path, dataset=args.dataset,
                                         data_dir=args.data_dir, split=args.split,
                                         limit=args.limit or None)
    if dataset.masks is None:
        raise ValueError(
            f"dataset {name!r} has no object masks, so localisation cannot be scored; use a "
            "checkpoint trained on a dataset with masks: synthetic (python -m attn_lib train) "
            "or cub200 (bounding boxes)"
        )
    rows = localization_scores(model, dataset, baseline=baseline, gradcam=args.gradcam or None,
                               batch_size=args.batch_size)
    if args.format == "table":
        area = rows[-1].mass_in_mask
        print(f"localisation on {name} {args.split}: {rows[-1].images} images, objects cover "
              f"{area:.1%} of the image on average (the uniform row is chance)")
    print(format_rows(rows, args.format))
    return 0


def reproduce_command(args: argparse.Namespace) -> int:
    """``reproduce``: run a study and print where its results are."""
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs must be a positive integer, got {args.epochs}")
    result = reproduce(args.dataset, args.scale, models=args.models, seeds=args.seeds,
                       data_dir=args.data_dir, out_dir=args.out, runs_dir=args.runs_dir,
                       device=args.device, epochs=args.epochs, progress=not args.quiet,
                       figures=args.figures, note=args.note)
    for model, summary in result.results["summary"].items():
        mean, std = summary["test_acc"]
        print(f"{model:22s} test accuracy {100 * mean:6.2f} ± {100 * std:.2f} % over "
              f"{len(summary['seeds'])} seed(s)")
    print(f"results in {result.out_dir} (RESULTS.md, results.json)")
    return 0


def check_device(name: str | None) -> None:
    """Raise ``ValueError`` unless ``--device name`` can hold and return a tensor here.

    ``torch.device`` accepts every device *type* PyTorch knows (``mps``, ``xla``, ``meta``, a
    ``cuda:7`` on a one-GPU machine); only using it tells whether this machine has it.
    """
    if name is None:
        return
    device = resolve_device(name)  # ValueError for a malformed name or CUDA without a GPU
    try:
        (torch.zeros(1, device=device) + 1).cpu()  # meta tensors fail here: they hold no data
    except Exception as exc:  # torch raises RuntimeError, NotImplementedError, AssertionError
        reason = first_line(exc).split(". ")[0]
        raise ValueError(f"device {name!r} cannot be used on this machine ({reason}); "
                         "use cpu, or cuda on a machine with a GPU") from None


COMMANDS = {"train": train_command, "evaluate": evaluate_command, "localize": localize_command,
            "reproduce": reproduce_command}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m attn_lib`` and the ``attn-lib`` script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # no command: the main job, with train's defaults
        args = parser.parse_args([*argv, "train"])
    try:
        check_device(getattr(args, "device", None))
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # A missing optional package (scipy for SVHN, ...) is the user's to install: one line.
        if args.debug or not isinstance(exc, (ValueError, FileNotFoundError, ImportError,
                                              NonFiniteLossError)):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1 if isinstance(exc, NonFiniteLossError) else 2


def recipe_reference() -> str:
    """The Markdown table of every recipe setting -- its ``train()`` keyword, its flag, each
    preset's value, its choices and its help -- that ``docs/RECIPES.md`` holds (written by
    ``tools/write_generated_docs.py``; a test fails when the page and the code differ)."""
    presets = list(PRESETS)
    lines = ["| `train()` keyword | `train` option | " + " | ".join(f"`{p}`" for p in presets)
             + " | meaning |", "|---" * (len(presets) + 3) + "|"]
    for f in recipe_fields():
        values = " | ".join(f"{getattr(PRESETS[p], f.name)!r}" for p in presets)
        flag = recipe_flag(f)
        if _value_type(f) is bool:
            flag += f" / --no-{flag[2:]}"
        choices = f.metadata["choices"]
        meaning = f.metadata["help"] + (f" (one of {', '.join(choices)})" if choices else "")
        lines.append(f"| `{f.name}` | `{flag}` | {values} | {meaning} |")
    return "\n".join(lines) + "\n"
