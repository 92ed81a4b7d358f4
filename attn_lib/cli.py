"""Command line: ``python -m attn_lib [train|evaluate|localize|reproduce] ...``.

With no arguments it runs the main job: train ``vgg-att3-concat-pc`` on the synthetic data
(narrow on a CPU, a few minutes on two cores; full width on a GPU) and leave a checkpoint,
metrics and an attention-map PNG in ``runs/``. Mistakes a user can make (bad paths, corrupt
checkpoints, missing data or optional packages, bad option values) end with one ``error: ...``
line and exit status 2; a diverging loss ends with exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from .data.datasets import DATASETS
from .models import list_models

EXAMPLES = """examples:
  python -m attn_lib                                   # the main job (synthetic data)
  python -m attn_lib train --dataset cifar10 --preset fast
  python -m attn_lib train --dataset folder --data-dir .data --epochs 30
  python -m attn_lib train --out runs/a --resume       # continue an interrupted run
  python -m attn_lib evaluate --checkpoint runs/a/best.pt
  python -m attn_lib localize --checkpoint runs/a/best.pt
  python -m attn_lib reproduce --scale cpu --data-dir .data   # the paper's comparison
  torchrun --standalone --nproc_per_node 8 -m attn_lib train --dataset cifar10 --preset fast
                                                       # data-parallel on 8 GPUs
"""


def build_parser(with_localize: bool = True) -> argparse.ArgumentParser:
    """The argument parser (``with_localize`` adds the options of ``attn_lib.maps.localize``)."""
    parser = argparse.ArgumentParser(
        prog="python -m attn_lib",
        description="Learn To Pay Attention (Jetley et al., ICLR 2018): train, evaluate and "
                    "localise with attention-augmented VGGs. Without a command: the main job "
                    "(train vgg-att3-concat-pc on synthetic data).",
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
    localize = commands.add_parser(
        "localize", help="score where attention points (pointing game, mass in mask)",
        description="Score the attention maps of a checkpoint against object masks "
                    "(synthetic data; CUB-200-2011's boxes): pointing game, attention mass "
                    "inside the object and the Jaccard index of the thresholded map.")
    if with_localize:
        from .maps.localize import add_localize_arguments

        add_localize_arguments(localize)
    return parser


def _presets_text() -> str:
    from .training.recipe import PRESETS

    keys = ("epochs", "batch_size", "lr", "schedule", "width", "dropout", "augment",
            "limit_train")
    lines = ["presets (explicit options override them):"]
    for name, recipe in PRESETS.items():
        values = recipe.to_dict()
        shown = ", ".join(f"{k}={values[k]}" for k in keys if values[k] is not None)
        lines.append(f"  {name:6s} {shown}")
    return "\n".join(lines)


def _scales_text() -> str:
    from .study.scales import SCALES

    lines = ["scales (default models and seeds in brackets):"]
    for name, scale in SCALES.items():
        lines.append(f"  {name:6s} {scale.description} [{', '.join(scale.models)}; seeds "
                     f"{', '.join(map(str, scale.seeds))}]")
    return "\n".join(lines)


def _add_reproduce(p: argparse.ArgumentParser) -> None:
    from .study.scales import SCALES

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


def _add_train(p: argparse.ArgumentParser) -> None:
    from .training.recipe import AUGMENTS, LOADERS, PRECISIONS, PRESETS, SCHEDULES

    g = p.add_argument_group("run")
    g.add_argument("--model", choices=list_models(), default=None, metavar="NAME",
                   help="model name (vgg, vgg-att{2,3}-{concat,indep}-{pc,dp}); default "
                        "vgg-att3-concat-pc, or the checkpoint's with --resume")
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
    g.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    r = p.add_argument_group("recipe (default: the preset's value)")
    r.add_argument("--epochs", type=int)
    r.add_argument("--batch-size", type=int,
                   help="the global batch: under torchrun split evenly over the processes")
    r.add_argument("--lr", type=float, help="peak (one-cycle) or initial (step) learning rate")
    r.add_argument("--weight-decay", type=float)
    r.add_argument("--momentum", type=float)
    r.add_argument("--no-nesterov", dest="nesterov", action="store_const", const=False,
                   help="plain momentum instead of Nesterov")
    r.add_argument("--label-smoothing", type=float)
    r.add_argument("--schedule", choices=SCHEDULES)
    r.add_argument("--warmup", type=float, help="warm-up fraction of the one-cycle schedule")
    r.add_argument("--ema", dest="ema_decay", type=float, metavar="DECAY",
                   help="EMA of the weights with this decay, e.g. 0.999 (0 = off)")
    r.add_argument("--precision", choices=PRECISIONS,
                   help="auto: bf16 on Ampere+ GPUs, fp16 before, fp32 on CPU")
    r.add_argument("--loader", choices=LOADERS,
                   help="device: whole data set on the device; torch: torchvision DataLoader")
    r.add_argument("--workers", dest="num_workers", type=int, help="DataLoader workers")
    r.add_argument("--augment", choices=AUGMENTS,
                   help="training augmentation (crop-flip: random crop with pad 4 + flip)")
    r.add_argument("--no-tta", dest="tta", action="store_const", const=False,
                   help="skip the flip-TTA accuracy each epoch")
    r.add_argument("--width", type=float, help="channel multiplier (1.0 = the paper)")
    r.add_argument("--limit-train", type=int, metavar="N", help="use N training images")
    r.add_argument("--limit-test", type=int, metavar="N", help="use N test images")
    cl = r.add_mutually_exclusive_group()
    cl.add_argument("--channels-last", dest="channels_last", action="store_const", const=True,
                    default=None, help="channels_last memory format (default on GPUs)")
    cl.add_argument("--no-channels-last", dest="channels_last", action="store_const",
                    const=False)
    m = p.add_argument_group("model options (default: the paper's)")
    m.add_argument("--attention-position", choices=("before", "after"))
    m.add_argument("--normalize", choices=("softmax", "sigmoid"))
    m.add_argument("--match", choices=("project_l", "project_g"))
    dr = m.add_mutually_exclusive_group()
    dr.add_argument("--dropout", dest="dropout", action="store_const", const=True,
                    help="the paper's dropout pattern (default, except in the cpu/smoke presets)")
    dr.add_argument("--no-dropout", dest="dropout", action="store_const", const=False)


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a .pt file or a run folder (its best.pt)")
    p.add_argument("--model", choices=list_models(), metavar="NAME",
                   help="fail unless the checkpoint holds this model")
    p.add_argument("--dataset", choices=DATASETS, help="default: the checkpoint's")
    p.add_argument("--data-dir", metavar="DIR", help="default: the checkpoint's")
    p.add_argument("--split", default="test", choices=("train", "test"),
                   help="default: test")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate N images (default: all)")
    p.add_argument("--batch-size", type=int, default=500, help="default: 500")
    p.add_argument("--device", help="torch device (default: GPU if any)")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="default: auto (bf16/fp16 on GPUs, fp32 on CPU)")


TRAIN_KEYS = ("epochs", "batch_size", "lr", "preset", "resume", "width", "device", "compile",
              "seed", "limit_train", "limit_test", "weight_decay", "momentum", "nesterov",
              "label_smoothing", "schedule", "warmup", "ema_decay", "precision", "loader",
              "num_workers", "tta", "augment", "channels_last", "deterministic", "sync_bn")
MODEL_OPTION_KEYS = ("attention_position", "normalize", "match", "dropout")


def train_command(args: argparse.Namespace) -> int:
    """``train`` (and the no-argument main job)."""
    from .training import train

    options = {k: getattr(args, k) for k in MODEL_OPTION_KEYS if getattr(args, k) is not None}
    model = args.model
    if model is None and not args.resume:
        model = "vgg-att3-concat-pc"
    result = train(model, args.dataset, data_dir=args.data_dir, out_dir=args.out,
                   progress=not args.quiet, **{k: getattr(args, k) for k in TRAIN_KEYS},
                   **options)
    last = result.history[-1] if result.history else {}
    acc = last.get("test_acc_tta", last.get("test_acc"))
    if acc is not None and os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 speaks
        print(f"done: {len(result.history)} epochs, test accuracy {100 * last['test_acc']:.2f}%"
              + (f" (flip TTA {100 * last['test_acc_tta']:.2f}%)" if "test_acc_tta" in last
                 else "") + f"; run folder {result.run_dir}")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    """``evaluate``: print accuracy and flip-TTA accuracy of a checkpoint."""
    from .checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint_path
    from .data import load_dataset
    from .training import evaluate, resolve_device

    device = resolve_device(args.device)
    path = resolve_checkpoint_path(args.checkpoint)
    ckpt = load_checkpoint(path, expect_model=args.model)
    model = model_from_checkpoint(ckpt, path).to(device)
    info = ckpt["data"]
    name = args.dataset or info.get("dataset") or "synthetic"
    data_dir = args.data_dir
    if data_dir is None and name == info.get("dataset"):
        data_dir = (ckpt.get("config") or {}).get("data_dir")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a positive integer, got {args.limit}")
    dataset = load_dataset(name, split=args.split, data_dir=data_dir, limit=args.limit)
    classes = ckpt["model_options"].get("num_classes")
    if classes is not None and classes != len(dataset.classes):
        raise ValueError(f"{path} classifies {classes} classes, but {name!r} has "
                         f"{len(dataset.classes)}")
    if info.get("mean") and info.get("std"):
        # Normalise with the statistics the model was trained with.
        dataset = dataclasses.replace(dataset, mean=tuple(info["mean"]), std=tuple(info["std"]))
    metrics = evaluate(model, dataset, tta=True, batch_size=args.batch_size,
                       precision=args.precision)
    print(f"{path}: {ckpt['model_name']} (epoch {ckpt['epoch']}) on {name} {args.split}, "
          f"{metrics['n']} images")
    print(f"accuracy: {100 * metrics['acc']:.2f}% (loss {metrics['loss']:.4f})")
    print(f"flip-TTA accuracy: {100 * metrics['acc_tta']:.2f}% (loss {metrics['loss_tta']:.4f})")
    return 0


def localize_command(args: argparse.Namespace) -> int:
    """``localize``: delegated to :mod:`attn_lib.maps.localize` (imported only when used)."""
    from .maps.localize import localize_command as run

    return run(args)


def reproduce_command(args: argparse.Namespace) -> int:
    """``reproduce``: run a study and print where its results are."""
    from .study import reproduce

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
    import torch

    from .training import resolve_device

    device = resolve_device(name)  # ValueError for a malformed name or CUDA without a GPU
    try:
        (torch.zeros(1, device=device) + 1).cpu()  # meta tensors fail here: they hold no data
    except Exception as exc:  # torch raises RuntimeError, NotImplementedError, AssertionError
        text = str(exc).strip()
        reason = text.splitlines()[0].split(". ")[0] if text else type(exc).__name__
        raise ValueError(f"device {name!r} cannot be used on this machine ({reason}); "
                         "use cpu, or cuda on a machine with a GPU") from None


COMMANDS = {"train": train_command, "evaluate": evaluate_command, "localize": localize_command,
            "reproduce": reproduce_command}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m attn_lib`` and the ``attn-lib`` script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import attn_lib.maps.localize only for its own command, so that a problem there can never
    # break training.
    wants_localize = "localize" in argv and all(a.startswith("-") for a in
                                                argv[:argv.index("localize")])
    parser = build_parser(with_localize=wants_localize)
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
        from .training import NonFiniteLossError

        # A missing optional package (scipy for SVHN, ...) is the user's to install: one line.
        if args.debug or not isinstance(exc, (ValueError, FileNotFoundError, ImportError,
                                              NonFiniteLossError)):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1 if isinstance(exc, NonFiniteLossError) else 2
