"""The benchmark script's CPU mode: it runs, and its figures are consistent with each other."""

from __future__ import annotations

import importlib.util
import json
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
