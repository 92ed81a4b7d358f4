"""Training speed of attn-lib's fast path against a reference-style loop, and time-to-accuracy.

    python benchmarks/bench_train.py                 # GPU: full width, JPEG CIFAR-10 in .data
    python benchmarks/bench_train.py --small         # CPU (automatic without CUDA): < 1 minute

Prints, in one run, on the same model and data:

* images/s of the fast path (whole uint8 set on the device, on-device augmentation, bf16/fp16
  autocast, channels_last, torch.compile, SGD+Nesterov, batch 512);
* images/s of a reference-style loop as the public PyTorch port trains: fp32, batch 128,
  torchvision DataLoader with CPU transforms and worker processes, no compile;
* their ratio and the peak GPU memory of each;
* the time-to-target-accuracy of the fast recipe (``attn_lib.train`` with preset ``fast``).

The targets (one H100, bf16, full-width vgg-att3-concat-pc, JPEG CIFAR-10) are printed next to
the measured figures; in --small mode they do not apply and are shown for reference only.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

import attn_lib
from attn_lib.data import DeviceLoader, load_dataset, torch_dataloader
from attn_lib.training.loop import train_step
from attn_lib.training.precision import make_scaler, resolve_precision, synchronize
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
    p.add_argument("--model", default="vgg-att3-concat-pc")
    p.add_argument("--dataset", default=None, help="default: folder (GPU), synthetic (small)")
    p.add_argument("--data-dir", default=str(REPO / ".data"))
    p.add_argument("--steps", type=int, default=None, help="timed steps per path")
    p.add_argument("--warmup-steps", type=int, default=None, help="untimed steps (compile)")
    p.add_argument("--workers", type=int, default=None, help="reference DataLoader workers")
    p.add_argument("--no-compile", action="store_true", help="fast path without torch.compile")
    p.add_argument("--no-time-to-target", action="store_true", help="skip the training run")
    p.add_argument("--target", type=float, default=None, help="test accuracy to reach")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the time-to-target run")
    args = p.parse_args(argv)
    args.small = args.small or not torch.cuda.is_available()
    return args


def settings(args: argparse.Namespace) -> dict:
    """Sizes per mode: the full GPU benchmark or a CPU run of well under a minute."""
    if args.small:
        # The CPU mode checks the code paths in well under a minute; its figures say nothing
        # about the GPU targets (a 1/16-width model, a few steps, a short training run).
        s = dict(device="cpu", dataset=args.dataset or "synthetic", width=0.0625,
                 limit_train=512, limit_test=256, fast_batch=64, ref_batch=128, steps=4,
                 warmup=1, workers=2, compile=False, target=0.30, epochs=2,
                 train_kw=dict(preset="cpu", width=0.0625, augment="none"))
    else:
        s = dict(device="cuda", dataset=args.dataset or "folder", width=1.0, limit_train=None,
                 limit_test=None, fast_batch=512, ref_batch=128, steps=100, warmup=30,
                 workers=8, compile=not args.no_compile, target=TARGET_ACC, epochs=None,
                 train_kw=dict(preset="fast"))
    s["steps"] = args.steps or s["steps"]
    s["warmup"] = args.warmup_steps if args.warmup_steps is not None else s["warmup"]
    s["workers"] = args.workers if args.workers is not None else s["workers"]
    s["target"] = args.target or s["target"]
    s["epochs"] = args.epochs or s["epochs"]
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


def main(argv=None) -> int:
    args = parse_args(argv)
    s = settings(args)
    dev = torch.device(s["device"])
    prec = resolve_precision(dev, "auto")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"device: {name} | precision (fast path): {prec} | model {args.model} width "
          f"{s['width']} | dataset {s['dataset']} | mode {'small' if args.small else 'full'}")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data_dir = args.data_dir if s["dataset"] == "folder" else None
    try:
        train_ds = load_dataset(s["dataset"], "train", data_dir=data_dir, limit=s["limit_train"])
        test_ds = load_dataset(s["dataset"], "test", data_dir=data_dir, limit=s["limit_test"])
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    classes = len(train_ds.classes)
    print(f"data: {len(train_ds)} train / {len(test_ds)} test images, {classes} classes")

    # Fast path: what attn_lib.train does (channels_last pays off on GPUs, not on CPUs).
    fast_cl = dev.type == "cuda"
    model = build(args, s, classes, channels_last=fast_cl)
    step_model = torch.compile(model) if s["compile"] else model
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    loader = DeviceLoader(train_ds, s["fast_batch"], train=True, device=dev,
                          channels_last=fast_cl)
    reset_peak(dev)
    fast = time_steps(step_model, endless(loader), opt, make_scaler(dev, prec), dev, prec,
                      s["steps"], s["warmup"], s["fast_batch"], fast_cl, 0.1)
    fast_mem = peak_memory(dev)
    del model, step_model, opt, loader

    # Reference-style loop: fp32, batch 128, DataLoader + CPU transforms + workers.
    model = build(args, s, classes, channels_last=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    ref_loader = torch_dataloader(train_ds, s["ref_batch"], train=True,
                                  num_workers=s["workers"])
    reset_peak(dev)
    ref = time_steps(model, endless(ref_loader), opt, make_scaler(dev, "fp32"), dev, "fp32",
                     s["steps"], max(1, s["warmup"] // 3), s["ref_batch"], False, 0.0)
    ref_mem = peak_memory(dev)
    del model, opt, ref_loader

    note = " (targets are for one H100, full width; not applicable here)" if args.small else ""
    print(f"\nthroughput{note}")
    print(f"  fast path     : {fast:10,.0f} images/s   target >= {TARGET_IMAGES_PER_S:,}   "
          f"peak memory {fast_mem}")
    print(f"  reference loop: {ref:10,.0f} images/s   (fp32, batch {s['ref_batch']}, "
          f"DataLoader, {s['workers']} workers)   peak memory {ref_mem}")
    print(f"  speed-up      : {fast / ref:10.2f} x        target >= {TARGET_SPEEDUP}")

    if not args.no_time_to_target:
        kw = dict(s["train_kw"], device=dev, compile=s["compile"], progress=not args.small,
                  limit_train=s["limit_train"], limit_test=s["limit_test"],
                  save_attention=False)
        if s["epochs"]:
            kw["epochs"] = s["epochs"]
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = attn_lib.train(args.model, s["dataset"], data_dir=data_dir,
                                    out_dir=Path(tmp) / "run", **kw)
            wall = time.perf_counter() - start
        hit = next((row for row in result.history
                    if max(row["test_acc"], row.get("test_acc_tta", 0.0)) >= s["target"]), None)
        best = max(max(r["test_acc"], r.get("test_acc_tta", 0.0)) for r in result.history)
        last = result.history[-1]
        print(f"\ntime to {100 * s['target']:.1f}% test accuracy (flip TTA allowed){note}")
        if hit is None:
            print(f"  not reached in {len(result.history)} epochs (best {100 * best:.2f}%)")
        else:
            print(f"  {hit['elapsed_s']:8.1f} s of training (epoch {hit['epoch']}; "
                  f"target <= {TARGET_SECONDS} s to {100 * TARGET_ACC:.1f}%)")
        print(f"  final: {100 * last['test_acc']:.2f}% (flip TTA "
              f"{100 * last.get('test_acc_tta', float('nan')):.2f}%) after "
              f"{last['elapsed_s']:.1f} s training, {wall:.1f} s wall incl. evaluation, "
              f"checkpoints and start-up; train images/s in the run "
              f"{sum(r['images_per_s'] for r in result.history) / len(result.history):,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
