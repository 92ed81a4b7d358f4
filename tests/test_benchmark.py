"""The benchmark: its CPU mode, a dry run of the whole GPU script, figures saved per section."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_train",
                                                  REPO / "benchmarks" / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_mode_prints_and_records_consistent_figures(tmp_path, capsys):
    bench = _load_bench()
    out = tmp_path / "bench.json"
    assert bench.main(["--small", "--steps", "2", "--epochs", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    fast = record["fast_images_per_s"]["eager"]
    ref = record["reference_images_per_s"]
    assert fast > 0 and ref > 0
    assert record["speedup"] == pytest.approx(fast / ref)
    assert f"{record['speedup']:.2f} x" in printed and "reference loop" in printed
    t = record["time_to_target"]
    assert [row["epoch"] for row in t["history"]] == [1, 2]
    assert t["recipe"]["epochs"] == 2 and t["recipe"]["lr"] == 0.1  # small-mode override
    assert t["best_acc"] == max(max(r["test_acc"], r["test_acc_tta"]) for r in t["history"])
    assert (t["reached_at_s"] is None) == (t["best_acc"] < t["target"])


def test_recipe_overrides_reach_the_training_run():
    bench = _load_bench()
    args = bench.parse_args(["--small", "--lr", "0.3", "--batch-size", "32",
                             "--label-smoothing", "0.2"])
    kw = bench.settings(args)["train_kw"]
    assert (kw["lr"], kw["batch_size"], kw["label_smoothing"]) == (0.3, 32, 0.2)


def test_flop_count_matches_the_backbone_by_hand():
    bench = _load_bench()
    args = bench.parse_args(["--small"])
    s = dict(bench.settings(args), width=1.0)

    class Data:  # what the FLOP count reads of a data set
        classes = list(range(10))
        image_size = 32

    # By hand, the 13 convs of the CIFAR VGG (no pooling before conv7) take 3.74 G multiply-adds
    # per 32x32 image: 7.5 GFLOP forward, about 3x that for forward + backward.
    flops = bench.train_flops_per_image(args, s, Data())
    assert 21e9 < flops < 25e9


def test_dry_run_of_the_whole_gpu_script(tmp_path):
    # The GPU check as a GPU machine runs it (benchmarks/gpu_session.sh, every section of
    # bench_train.py's full mode), tiny and on the CPU: a mistake a CPU can show fails here,
    # not on the GPU.
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_session.sh"), "--dry-run"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["mode"] == "dry run"
    assert record["sections"] == ["fast-eager", "fast-compiled", "reference", "time-to-target"]
    assert set(record["fast_images_per_s"]) == {"eager", "compiled"}
    assert record["time_to_target"]["recipe"]["name"] == "fast"
    log = (tmp_path / "bench.log").read_text()
    assert "torch" in log and "reference loop" in log and "time to 93.0%" in log


def test_figures_are_saved_after_each_section(tmp_path, monkeypatch):
    # A run cut short (here: the time-to-target training fails) keeps what it measured.
    bench = _load_bench()
    seen = {}

    def failing_train(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("out of time")

    monkeypatch.setattr(bench.attn_lib, "train", failing_train)
    out = tmp_path / "bench.json"
    with pytest.raises(RuntimeError, match="out of time"):
        bench.main(["--dry-run", "--no-compile", "--json", str(out)])
    record = json.loads(out.read_text())
    assert record["sections"] == ["fast-eager", "reference"]
    assert record["fast_images_per_s"]["eager"] > 0 and record["reference_images_per_s"] > 0
    assert "time_to_target" not in record
    assert seen["save_every_epoch"] is False  # the timed run writes no per-epoch checkpoints
    assert not list(tmp_path.glob("*.tmp"))


def test_reference_loop_outlasts_its_prefetched_batches():
    bench = _load_bench()
    full = bench.settings(bench.parse_args(["--dry-run"]))
    full.update(workers=8, steps=100, warmup=30)  # the GPU mode's figures

    class Loader:  # what the rule reads of a DataLoader
        prefetch_factor = 2

    warmup, timed = bench.reference_steps(full, Loader())
    assert warmup >= 2 * 8 * 2 and timed >= 4 * 8 * 2 and timed >= 100
    Loader.prefetch_factor = 8
    assert bench.reference_steps(full, Loader()) == (128, 256)
