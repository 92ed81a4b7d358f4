"""Training speed of attn-lib's fast path against a reference-style loop, and time-to-accuracy.

    python benchmarks/bench_train.py                 # GPU: full width, JPEG CIFAR-10 in .data
    python benchmarks/bench_train.py --small         # CPU (automatic without CUDA): < 1 minute
    python benchmarks/bench_train.py --dry-run       # every section, tiny, on the CPU: seconds

Prints, in one run, on the same model and data:

* images/s of the fast path (whole uint8 set on the device, on-device augmentation, bf16/fp16
  autocast, channels_last, fused SGD+Nesterov, batch 512), eager and with torch.compile;
* images/s of a reference-style loop as the public PyTorch port trains: fp32, batch 128,
  torchvision DataLoader with CPU transforms and worker processes, no compile;
* their ratio and the peak GPU memory of each;
* the time-to-target-accuracy of the fast recipe (``attn_lib.train`` with preset ``fast``).

The targets (one H100, bf16, full-width vgg-att3-concat-pc, JPEG CIFAR-10) are printed next to
the measured figures; in --small mode they do not apply and are shown for reference only.
``--json FILE`` also writes every figure to a file -- after each section, so that a run cut
short keeps what it measured (``sections`` lists the finished ones); the recipe options
(``--lr``, ``--epochs``, ...) override the ``fast`` preset for the time-to-target run, for
tuning it on a GPU. ``--dry-run`` runs every section of the full mode, tiny, on the CPU (the
compiled fast path with torch.compile's ``eager`` backend: the tracing is checked, not the
GPU code generation), so that the script itself cannot fail on a GPU for a reason a CPU would
have shown. ``benchmarks/gpu_session.sh`` is the whole GPU check in one command.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

import attn_lib
from attn_lib._device import synchronize
from attn_lib.data import DeviceLoader, load_dataset, torch_dataloader
from attn_lib.training.epoch import train_step
from attn_lib.training.optim import build_optimizer
from attn_lib.training.precision import make_scaler, resolve_precision
from attn_lib.training.recipe import get_preset

REPO = Path(__file__).resolve().parents[1]
TARGET_IMAGES_PER_S = 20_000
TARGET_SPEEDUP = 3.5
TARGET_ACC = 0.930
TARGET_SECONDS = 180


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--small", action="store_true",
                   help="small CPU mode (automatic when CUDA is not available)")
    p.add_argument("--dry-run", action="store_true",
                   help="every section of the full mode, tiny, on the CPU (checks the script)")
    p.add_argument("--model", default="vgg-att3-concat-pc")
    p.add_argument("--dataset", default=None, help="default: folder (GPU), synthetic (small)")
    p.add_argument("--data-dir", default=str(REPO / ".data"))
    p.add_argument("--steps", type=int, default=None, help="timed steps per path")
    p.add_argument("--warmup-steps", type=int, default=None, help="untimed steps (compile)")
    p.add_argument("--workers", type=int, default=None, help="reference DataLoader workers")
    p.add_argument("--no-compile", action="store_true", help="fast path without torch.compile")
    p.add_argument("--compile-mode", default=None,
                   choices=("default", "reduce-overhead", "max-autotune",
                            "max-autotune-no-cudagraphs"),
                   help="torch.compile mode of the compiled fast path's throughput section "
                        "(reduce-overhead and max-autotune use CUDA graphs)")
    p.add_argument("--no-time-to-target", action="store_true", help="skip the training run")
    p.add_argument("--no-throughput", action="store_true",
                   help="skip the throughput part (to try another recipe quickly)")
    p.add_argument("--target", type=float, default=None, help="test accuracy to reach")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    r = p.add_argument_group("time-to-target recipe (overrides of the fast preset)")
    r.add_argument("--epochs", type=int, default=None)
    for flag, kind in (("--batch-size", int), ("--lr", float), ("--warmup", float),
                       ("--weight-decay", float), ("--label-smoothing", float),
                       ("--ema-decay", float)):
        r.add_argument(flag, type=kind, default=None)
    r.add_argument("--augment", default=None, choices=("crop-flip", "flip", "none"))
    args = p.parse_args(argv)
    args.small = not args.dry_run and (args.small or not torch.cuda.is_available())
    return args


RECIPE_OVERRIDES = ("batch_size", "lr", "warmup", "weight_decay", "label_smoothing",
                    "ema_decay", "augment")


def settings(args: argparse.Namespace) -> dict:
    """Sizes per mode: the full GPU benchmark, a CPU run of well under a minute, or the dry
    run (the full mode's sections and recipe, tiny, on the CPU)."""
    if args.dry_run:
        s = dict(device="cpu", dataset=args.dataset or "synthetic", width=0.0625,
                 limit_train=128, limit_test=64, fast_batch=32, ref_batch=32, steps=2,
                 warmup=1, workers=1, compile=not args.no_compile, compile_backend="eager",
                 target=TARGET_ACC, epochs=2,
                 train_kw=dict(preset="fast", width=0.0625, batch_size=32, compile=False))
    elif args.small:
        # The CPU mode checks the code paths in well under a minute; its figures say nothing
        # about the GPU targets (a 1/16-width model, a few steps, a short training run).
        s = dict(device="cpu", dataset=args.dataset or "synthetic", width=0.0625,
                 limit_train=512, limit_test=256, fast_batch=64, ref_batch=128, steps=4,
                 warmup=1, workers=2, compile=False, target=0.30, epochs=8,
                 train_kw=dict(preset="cpu", width=0.0625, augment="none", lr=0.1))
    else:
        s = dict(device="cuda", dataset=args.dataset or "folder", width=1.0, limit_train=None,
                 limit_test=None, fast_batch=512, ref_batch=128, steps=100, warmup=30,
                 workers=8, compile=not args.no_compile, target=TARGET_ACC, epochs=None,
                 train_kw=dict(preset="fast"))
    s.setdefault("compile_backend", "inductor")
    s["train_kw"].setdefault("compile", s["compile"])
    s["steps"] = args.steps or s["steps"]
    s["warmup"] = args.warmup_steps if args.warmup_steps is not None else s["warmup"]
    s["workers"] = args.workers if args.workers is not None else s["workers"]
    s["target"] = args.target or s["target"]
    s["epochs"] = args.epochs or s["epochs"]
    for key in RECIPE_OVERRIDES:
        if getattr(args, key) is not None:
            s["train_kw"][key] = getattr(args, key)
    return s


def build(args, s, num_classes: int, channels_last: bool):
    torch.manual_seed(0)
    # The model the fast recipe trains (its preset turns the paper's dropout off), for both.
    model = attn_lib.build_model(args.model, num_classes=num_classes, width=s["width"],
                                 dropout=bool(get_preset("fast").dropout))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(s["device"], memory_format=fmt)


def endless(loader):
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def time_steps(model, batches, optimizer, scaler, dev, prec, steps, warmup, batch,
               channels_last, label_smoothing) -> float:
    """Images per second over ``steps`` training steps after ``warmup`` untimed ones."""
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(dev)
            start = time.perf_counter()
        x, y = next(batches)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        train_step(model, x, y, optimizer, scaler, dev, prec, label_smoothing)
    synchronize(dev)
    return steps * batch / (time.perf_counter() - start)


def reset_peak(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def peak_memory(dev) -> str:
    if dev.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB (GPU, max allocated)"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    return f"{rss:.0f} MiB (process peak RSS, CPU)"


def train_flops_per_image(args, s, train_ds) -> float:
    """Floating-point operations of one training image (forward + backward) of the model the
    throughput figures time, counted by PyTorch's FlopCounterMode on a batch of two: turns
    images/s into TFLOP/s."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(args, s, len(train_ds.classes), channels_last=False)
    x = torch.randn(2, 3, train_ds.image_size, train_ds.image_size, device=s["device"])
    with FlopCounterMode(display=False) as counter:
        model(x).logits.sum().backward()
    return counter.get_total_flops() / 2


def fast_kinds(s) -> tuple[str, ...]:
    """The fast path is timed eager, and compiled where compilation is on."""
    return ("eager", "compiled") if s["compile"] else ("eager",)


def measure_fast(args, s, train_ds, dev, prec, kind: str) -> tuple[float, str]:
    """Fast-path images/s and peak memory, eager or compiled: what ``train`` does
    (channels_last pays off on GPUs, not on CPUs)."""
    channels_last = dev.type == "cuda"
    model = build(args, s, len(train_ds.classes), channels_last=channels_last)
    mode = None if s["compile_backend"] == "eager" else args.compile_mode  # eager: no modes
    step_model = (torch.compile(model, backend=s["compile_backend"], mode=mode)
                  if kind == "compiled" else model)
    opt = build_optimizer(model, get_preset("fast"), dev)
    loader = DeviceLoader(train_ds, s["fast_batch"], train=True, device=dev,
                          channels_last=channels_last)
    reset_peak(dev)
    speed = time_steps(step_model, endless(loader), opt, make_scaler(dev, prec), dev, prec,
                       s["steps"], s["warmup"], s["fast_batch"], channels_last, 0.1)
    return speed, peak_memory(dev)


def reference_steps(s, loader) -> tuple[int, int]:
    """(untimed, timed) steps of the reference loop. Its workers start with up to
    ``workers x prefetch_factor`` batches queued: the warm-up consumes at least twice that, and
    at least four times that many steps are timed, so the queue's head start cannot inflate the
    figure."""
    queued = s["workers"] * (loader.prefetch_factor or 0)
    return max(1, s["warmup"] // 3, 2 * queued), max(s["steps"], 4 * queued)


def measure_reference(args, s, train_ds, dev) -> dict:
    """The reference-style loop: fp32, batch 128, DataLoader + CPU transforms + workers."""
    model = build(args, s, len(train_ds.classes), channels_last=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = torch_dataloader(train_ds, s["ref_batch"], train=True, num_workers=s["workers"])
    warmup, steps = reference_steps(s, loader)
    reset_peak(dev)
    speed = time_steps(model, endless(loader), opt, make_scaler(dev, "fp32"), dev, "fp32",
                       steps, warmup, s["ref_batch"], False, 0.0)
    return {"reference_images_per_s": speed, "reference_peak_memory": peak_memory(dev),
            "reference_steps": {"warmup": warmup, "timed": steps}}


def throughput(args, s, train_ds, dev, prec, record: dict, save) -> None:
    """The throughput sections, each saved (``save(record)``) and printed as it ends: FLOPs,
    the fast path eager (and compiled), the reference loop and the speed-up."""
    record["train_flops_per_image"] = train_flops_per_image(args, s, train_ds)
    record["fast_images_per_s"], record["fast_peak_memory"] = {}, {}
    print(f"\nthroughput{note(args)}; {record['train_flops_per_image'] / 1e9:.2f} GFLOP per "
          "training image (forward + backward)")
    for kind in fast_kinds(s):
        speed, memory = measure_fast(args, s, train_ds, dev, prec, kind)
        record["fast_images_per_s"][kind], record["fast_peak_memory"][kind] = speed, memory
        save(record, f"fast-{kind}")
        print_fast(record, kind)
    record.update(measure_reference(args, s, train_ds, dev))
    record["speedup"] = max(record["fast_images_per_s"].values()) / \
        record["reference_images_per_s"]
    save(record, "reference")
    print_reference(record, s)


def time_to_target(args, s, dev, data_dir) -> dict:
    """Train with the fast recipe (plus overrides) and find when the target was reached."""
    # Checkpoints at the end only: the clock should not include a checkpoint write per epoch.
    kw = dict(s["train_kw"], device=dev, progress=not (args.small or args.dry_run),
              limit_train=s["limit_train"], limit_test=s["limit_test"], save_attention=False,
              save_every_epoch=False)
    if s["epochs"]:
        kw["epochs"] = s["epochs"]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = attn_lib.train(args.model, s["dataset"], data_dir=data_dir,
                                out_dir=Path(tmp) / "run", **kw)
        wall = time.perf_counter() - start
        recipe = json.loads((result.run_dir / "config.json").read_text())["recipe"]
    history = result.history

    def score(row):
        return max(row["test_acc"], row.get("test_acc_tta", 0.0))

    hit = next((row for row in history if score(row) >= s["target"]), None)
    return {
        "target": s["target"], "reached_at_s": hit and hit["elapsed_s"],
        "reached_at_epoch": hit and hit["epoch"], "best_acc": max(map(score, history)),
        "final_acc": history[-1]["test_acc"], "final_acc_tta": history[-1].get("test_acc_tta"),
        "train_s": history[-1]["elapsed_s"], "wall_s": wall,
        "warmup_s": history[0]["warmup_s"],
        "images_per_s": sum(r["images_per_s"] for r in history) / len(history),
        "recipe": recipe,
        "history": [{k: row[k] for k in ("epoch", "test_acc", "test_acc_tta", "elapsed_s")
                     if k in row} for row in history],
    }


def note(args) -> str:
    if args.dry_run:
        return " (dry run: checks the script; the figures mean nothing)"
    return " (targets are for one H100, full width; not applicable here)" if args.small else ""


def print_fast(record: dict, kind: str) -> None:
    flops, speed = record["train_flops_per_image"], record["fast_images_per_s"][kind]
    print(f"  fast, {kind:8}: {speed:10,.0f} images/s   target >= {TARGET_IMAGES_PER_S:,}"
          f"   {speed * flops / 1e12:7.3g} TFLOP/s   peak memory "
          f"{record['fast_peak_memory'][kind]}")


def print_reference(record: dict, s: dict) -> None:
    flops, ref = record["train_flops_per_image"], record["reference_images_per_s"]
    steps = record["reference_steps"]
    print(f"  reference loop: {ref:10,.0f} images/s   (fp32, batch {s['ref_batch']}, DataLoader, "
          f"{s['workers']} workers; {steps['timed']} steps after {steps['warmup']})   "
          f"{ref * flops / 1e12:7.3g} TFLOP/s   peak memory {record['reference_peak_memory']}")
    print(f"  speed-up      : {record['speedup']:10.2f} x        target >= {TARGET_SPEEDUP}")


def print_time_to_target(t: dict, note: str) -> None:
    print(f"\ntime to {100 * t['target']:.1f}% test accuracy (flip TTA allowed){note}")
    if t["reached_at_s"] is None:
        print(f"  not reached in {len(t['history'])} epochs (best {100 * t['best_acc']:.2f}%)")
    else:
        print(f"  {t['reached_at_s']:8.1f} s of training (epoch {t['reached_at_epoch']}; "
              f"target <= {TARGET_SECONDS} s to {100 * TARGET_ACC:.1f}%)")
    tta = t["final_acc_tta"] if t["final_acc_tta"] is not None else float("nan")
    print(f"  final: {100 * t['final_acc']:.2f}% (flip TTA {100 * tta:.2f}%) after "
          f"{t['train_s']:.1f} s training; {t['wall_s']:.1f} s wall incl. compilation "
          f"({t['warmup_s']:.1f} s), evaluation, checkpoints and start-up; train images/s in "
          f"the run {t['images_per_s']:,.0f}")
    print(f"  recipe: {json.dumps(t['recipe'])}")


def json_writer(path: str | None):
    """``save(record, section)``: note the finished section and, with a path, rewrite the
    JSON file atomically (a run cut short keeps every finished section)."""

    def save(record: dict, section: str | None = None) -> None:
        if section is not None:
            record["sections"].append(section)
        if path is None:
            return
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)

    return save


def main(argv=None) -> int:
    args = parse_args(argv)
    s = settings(args)
    dev = torch.device(s["device"])
    prec = resolve_precision(dev, "auto")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    mode = "dry run" if args.dry_run else "small" if args.small else "full"
    print(f"device: {name} | precision (fast path): {prec} | model {args.model} width "
          f"{s['width']} | dataset {s['dataset']} | mode {mode}")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data_dir = args.data_dir if s["dataset"] == "folder" else None
    try:
        train_ds = load_dataset(s["dataset"], "train", data_dir=data_dir, limit=s["limit_train"])
        test_ds = load_dataset(s["dataset"], "test", data_dir=data_dir, limit=s["limit_test"])
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"data: {len(train_ds)} train / {len(test_ds)} test images, "
          f"{len(train_ds.classes)} classes")

    record = {"device": name, "mode": mode, "model": args.model, "width": s["width"],
              "precision": prec, "torch": torch.__version__,
              "compile_mode": args.compile_mode or "default",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "sections": []}
    save = json_writer(args.json)
    save(record)
    if not args.no_throughput:
        throughput(args, s, train_ds, dev, prec, record, save)
    if not args.no_time_to_target:
        record["time_to_target"] = time_to_target(args, s, dev, data_dir)
        save(record, "time-to-target")
        print_time_to_target(record["time_to_target"], note(args))
    if args.json:
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
