"""tools/merge_gpu_results.py: what a GPU command returns goes into results/, the package's
weights and the tuning table, and the next command then skips what was merged."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_script

import attn_lib
from attn_lib.models import weights as W

REPO = Path(__file__).resolve().parents[1]
GPU = {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "cpu_count": 16,
       "torch_threads": 16, "torch": "2.11.0+cu130", "python": "3.12.3",
       "date": "2026-12-05 09:00 UTC"}


gpu_run = load_script("gpu_run", "benchmarks")
merge = load_script("merge_gpu_results", "tools")
ship = sys.modules["ship_weights"]


def _tar(path: Path, files: dict[str, bytes]) -> None:
    gpu_run.add_to_tar(path, files)


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """The package's weights folder replaced by a copy of the cpu entries in tmp_path."""
    folder = tmp_path / "pretrained"
    shutil.copytree(W._pretrained_dir(), folder)
    monkeypatch.setattr(W, "_pretrained_dir", lambda: folder)
    W._manifest.cache_clear()
    yield folder
    W._manifest.cache_clear()


def _weights_facts(model: torch.nn.Module) -> dict:
    cpu = W.get_weights("vgg", "cifar10-cpu")
    return {"model": model.name, "options": model.options, "dataset": "cifar10",
            "classes": cpu["classes"], "mean": cpu["mean"], "std": cpu["std"],
            "image_size": 32, "test_acc": 0.5, "test_acc_tta": 0.51, "epochs": 40, "seed": 0,
            "recipe": {"name": "fast"}, "selection": "final weights (not chosen on the test set)",
            "command": "python benchmarks/gpu_run.py (weights step)",
            "hardware": "NVIDIA H100 80GB HBM3 (cuda), torch 2.11.0+cu130",
            "date": "2026-12-05 09:00 UTC", "data": "cifar10 (10000 test images)"}


def _returned(tmp_path: Path, model: torch.nn.Module) -> Path:
    """A folder as the GPU command returns it: one unit of every step done."""
    out = tmp_path / "returned"
    out.mkdir()
    import nbformat

    nbformat.write(nbformat.v4.new_notebook(), out / "notebook03.ipynb")
    _tar(out / "weights.tar", {
        "vgg.pt": W.state_dict_bytes(model, torch.float16),
        "vgg.json": json.dumps(_weights_facts(model)).encode()})
    # Seed 1 of vgg, from another GPU: the committed seed-0 record, as if run again.
    record = as_current_evaluation(json.loads(
        (REPO / gpu_run.STUDY_RESULTS / "records" / "vgg-seed0.json").read_text()))
    record.update(seed=1, run_dir="vgg-seed1", environment=GPU,
                  train_settings={"preset": "fast", "tta": False, "compile": True})
    _tar(out / "study.tar", {"vgg-seed1.json": json.dumps(record).encode()})
    label = gpu_run.SPEED_TRIES[0][0]
    bench = json.loads((REPO / "results/bench-h200/bench.json").read_text())
    _tar(out / "speed.tar", {f"{label}.json": json.dumps(bench).encode(),
                             f"{label}.log": b"log"})
    units = [("notebook", "notebook 03, real mode, fp16"), ("weights", "vgg"),
             ("study", "vgg seed 1"), ("speed", label)]
    summary = {"machine": "NVIDIA H100 80GB HBM3 (cuda), torch 2.11.0+cu130",
               "date": "2026-12-05 09:10 UTC", "budget_s": 540, "dry_run": False,
               "units": [{"step": s, "unit": u, "status": "done", "seconds": 1.0}
                         for s, u in units]}
    (out / gpu_run.SUMMARY).write_text(json.dumps(summary))
    assert gpu_run.check_out(out) == []
    return out


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    shutil.copy(REPO / gpu_run.TUNING_TABLE, repo / gpu_run.TUNING_TABLE)
    shutil.copytree(REPO / gpu_run.STUDY_RESULTS, repo / gpu_run.STUDY_RESULTS)
    # The merge's mechanics are tested on records of today's evaluation (an older one stays
    # out of the table until rerun: the end of the test below).
    for path in (repo / gpu_run.STUDY_RESULTS / "records").glob("*.json"):
        path.write_text(json.dumps(as_current_evaluation(json.loads(path.read_text()))))
    return repo


def as_current_evaluation(record: dict) -> dict:
    """A committed record of an older evaluation, given the fields today's evaluation adds
    (attacked images, PGD at every budget, the large budget) with made-up but consistent
    values: PGD at FGSM's accuracy minus a point, nothing left at the large budget."""
    from attn_lib.study.robustness import LARGE_EPSILON
    from attn_lib.study.runner import EVALUATION_VERSION

    large = {"epsilon": LARGE_EPSILON, "epsilon_255": round(LARGE_EPSILON * 255, 6), "acc": 0.0}
    fgsm = [*record["fgsm"], dict(large, acc=0.05)]
    pgd = [dict(f, acc=max(f["acc"] - 0.01, 0.0)) for f in record["fgsm"]] + [large]
    attack = {"images": record["test_images"], "seed": 0, "clean_acc": record["test_acc"],
              "pgd_steps": 10, "pgd_step_size": "2.5 * epsilon / steps",
              "pgd_random_start": True, "large_epsilon": LARGE_EPSILON}
    return dict(record, fgsm=fgsm, pgd=pgd, attack=attack,
                evaluation_version=EVALUATION_VERSION)


def test_a_returned_folder_is_merged_and_then_skipped(tmp_path, store) -> None:
    torch.manual_seed(0)
    model = attn_lib.build_model("vgg", 10, width=0.0625, dropout=False).eval()
    repo = _repo(tmp_path)
    returned = _returned(tmp_path, model)
    assert merge.main([str(returned), "--repo", str(repo)]) == 0

    # The notebook, with where it ran.
    assert (repo / gpu_run.NOTEBOOK_RESULT).is_file()
    run = json.loads((repo / gpu_run.NOTEBOOK_RESULT).with_name("run.json").read_text())
    assert run["machine"].startswith("NVIDIA H100") and run["settings"]["ATTN_LIB_PRECISION"]

    # The weights: float16, the alias now resolves to them, they load into a float32 model.
    entry = W.get_weights("vgg", "cifar10")
    assert entry["weights"] == "cifar10-gpu" and entry["stored_dtype"] == "float16"
    assert entry["trained"]["hardware"].startswith("NVIDIA H100") and entry["test_acc"] == 0.5
    loaded = attn_lib.build_model("vgg", weights="cifar10")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x).logits, model(x).logits, atol=2e-2, rtol=2e-2)
    assert 0 <= entry["sample_acc"] <= 1
    assert W.get_weights("vgg-noatt", "cifar10")["weights"] == "cifar10-cpu"  # not shipped

    # The study: the new record beside the committed ones, the report rebuilt from all.
    results_dir = repo / gpu_run.STUDY_RESULTS
    assert sorted(p.name for p in (results_dir / "records").iterdir()) == [
        "vgg-att3-concat-pc-seed0.json", "vgg-seed0.json", "vgg-seed1.json"]
    results = json.loads((results_dir / "results.json").read_text())
    assert [(r["model"], r["seed"]) for r in results["runs"]] == [
        ("vgg", 0), ("vgg", 1), ("vgg-att3-concat-pc", 0)]
    assert results["summary"]["vgg"]["seeds"] == [0, 1]
    text = (results_dir / "RESULTS.md").read_text()
    assert ("Runs by machine: vgg seed 0, vgg-att3-concat-pc seed 0 on NVIDIA H200 (eager), "
            "torch 2.11.0+cu130, 2026-11-28; vgg seed 1 on NVIDIA H100 80GB HBM3 (compiled), "
            "torch 2.11.0+cu130, 2026-12-05.") in text

    # A record of an older evaluation stays on disk but out of the table.
    old = json.loads((results_dir / "records" / "vgg-seed1.json").read_text())
    (results_dir / "records" / "vgg-seed1.json").write_text(
        json.dumps(dict(old, evaluation_version=old["evaluation_version"] - 1)))
    rebuilt = merge.rebuild_study_report(results_dir, figures=False)
    assert [(r["model"], r["seed"]) for r in rebuilt["runs"]] == [
        ("vgg", 0), ("vgg-att3-concat-pc", 0)]
    (results_dir / "records" / "vgg-seed1.json").write_text(json.dumps(old))

    # The try: its record kept, one line in the table.
    label = gpu_run.SPEED_TRIES[0][0]
    assert (repo / merge.TUNING_DIR / f"{label}.json").is_file()
    assert f"| `{label}` | lr 0.4, batch 512" in (repo / gpu_run.TUNING_TABLE).read_text()

    # The next command skips every unit merged here.
    session = gpu_run.Session(out=tmp_path / "next", repo=repo, work=tmp_path / "w")
    units = {(u.step, u.label): u for step in gpu_run.STEPS.values() for u in step(session)}
    merged = [("notebook", "notebook 03, real mode, fp16"), ("weights", "vgg"),
              ("study", "vgg seed 0"), ("study", "vgg seed 1"),
              ("study", "vgg-att3-concat-pc seed 0"), ("speed", label)]
    assert sorted(key for key, u in units.items() if u.existing) == sorted(merged)
    assert not units[("study", "vgg seed 2")].existing
    assert not units[("weights", "vgg-att3-concat-pc")].existing

    # Merging the same folder again changes nothing.
    before = (repo / gpu_run.TUNING_TABLE).read_text()
    assert merge.main([str(returned), "--repo", str(repo)]) == 0
    assert (repo / gpu_run.TUNING_TABLE).read_text() == before


def test_weights_over_the_size_limit_are_refused_before_anything_is_written(store) -> None:
    model = attn_lib.build_model("vgg", 10, width=0.0625, dropout=False).eval()
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    manifest = (store / W.MANIFEST).read_text()
    size = len(W.state_dict_bytes(model, torch.float16))
    with pytest.raises(ValueError, match="over the 0 MB limit: ship a narrower width"):
        ship.ship_trained([(_weights_facts(model), state)], "cifar10-gpu", limit_bytes=size - 1)
    assert (store / W.MANIFEST).read_text() == manifest
    assert not list(store.glob("*cifar10-gpu*"))
    (entry,) = ship.ship_trained([(_weights_facts(model), state)], "cifar10-gpu",
                                 limit_bytes=size)
    assert (store / entry["file"]).stat().st_size == size


def test_failed_units_and_dry_runs_are_not_merged(tmp_path, store, capsys) -> None:
    model = attn_lib.build_model("vgg", 10, width=0.0625, dropout=False).eval()
    repo = _repo(tmp_path)
    returned = _returned(tmp_path, model)
    summary = json.loads((returned / gpu_run.SUMMARY).read_text())
    for unit in summary["units"]:
        unit.update(status="failed", error="RuntimeError: CUDA out of memory")
    (returned / gpu_run.SUMMARY).write_text(json.dumps(summary))
    assert merge.main([str(returned), "--repo", str(repo)]) == 0
    assert "not merged: weights vgg failed: RuntimeError: CUDA out of memory" in \
        capsys.readouterr().out
    assert not (repo / gpu_run.NOTEBOOK_RESULT).exists()
    assert W.get_weights("vgg", "cifar10")["weights"] == "cifar10-cpu"
    assert len(list((repo / gpu_run.STUDY_RESULTS / "records").iterdir())) == 2
    summary["dry_run"] = True
    (returned / gpu_run.SUMMARY).write_text(json.dumps(summary))
    assert merge.main([str(returned), "--repo", str(repo)]) == 2
    assert "dry run" in capsys.readouterr().err
    assert merge.main([str(tmp_path), "--repo", str(repo)]) == 2
    assert "gpu_run.json is missing" in capsys.readouterr().err



def test_tuning_rows_say_what_a_try_measured() -> None:
    bench = json.loads((REPO / "results/bench-h200/bench.json").read_text())
    assert merge.tuning_row("fast", bench) == (
        "| `fast` | lr 0.4, batch 512, warm-up 0.15, label smoothing 0.1, EMA 0, crop-flip | 50 "
        "| 137 s (not reached) | 92.02 (final 91.28) | 18,121 (compiled (default mode) 18,272, "
        "3.12x the reference) | NVIDIA H200 | 2026-11-28 |")
    throughput = {k: v for k, v in bench.items() if k != "time_to_target"}
    assert merge.tuning_row("t", dict(throughput, compile_mode="max-autotune")).startswith(
        "| `t` | throughput only | | | | compiled (max-autotune mode) 18,272, 3.12x")
    cut = dict(throughput, sections=["fast-eager"])
    del cut["speedup"]
    assert merge.tuning_row("c", cut).startswith("| `c` | cut short (fast-eager measured) |")
