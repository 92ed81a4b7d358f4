"""Put what the GPU command returned into the repository.

    python tools/merge_gpu_results.py RETURNED_DIR      # the folder $OUT came back as

``benchmarks/gpu_run.py`` leaves, in ``$OUT``, ``gpu_run.json`` (what ran and was skipped) and
one file per step that ran; each goes where the next GPU command looks before it repeats a step:

* ``notebook03.ipynb`` -> ``results/notebook03-gpu/03_train_on_colab.ipynb`` with
  ``run.json`` (machine, date, seconds);
* ``weights.tar`` -> the package's ``cifar10-gpu`` weights (float16 files, <= 10 MB together,
  via ``tools/ship_weights.py``), which the ``cifar10`` alias then resolves to;
* ``study.tar`` -> one record per run in ``results/cifar10-gpu/records/``, then that folder's
  ``results.json``, ``RESULTS.md`` and figures rebuilt from every record, saying which runs
  came from which GPU and date;
* ``speed.tar`` -> ``results/bench-tuning/<try>.json`` and ``.log``, and one line per try in
  ``benchmarks/TUNING.md``.

A unit that failed on the machine is reported and not merged. Run it from the repository root,
then review ``git status`` and commit.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_run  # noqa: E402
from ship_weights import ship_trained  # noqa: E402

from attn_lib.study.records import load_records, provenance_note, save_record  # noqa: E402

#: The data the GPU study reads, for its report.
STUDY_NOTE = "JPEG (quality 75) copy of CIFAR-10 (.data/cifar10-jpeg75.tar.gz)."
TUNING_DIR = "results/bench-tuning"


def read_tar(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def done_units(summary: dict[str, Any], step: str) -> list[str]:
    return [u["unit"] for u in summary["units"] if u["step"] == step and u["status"] == "done"]


def merge_notebook(returned: Path, repo: Path, summary: dict[str, Any]) -> None:
    row = next((u for u in summary["units"] if u["step"] == "notebook"), None)
    if row is None or row["status"] != "done":
        return
    target = repo / gpu_run.NOTEBOOK_RESULT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((returned / "notebook03.ipynb").read_bytes())
    run = {"machine": summary["machine"], "date": summary["date"], "seconds": row["seconds"],
           "settings": {"ATTN_LIB_PRECISION": "fp16", "ATTN_LIB_DATA_DIR": ".data"}}
    (target.parent / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    print(f"notebook 03 ({row['seconds']} s on {summary['machine']}) -> {target}")


def merge_weights(returned: Path, summary: dict[str, Any]) -> None:
    models = done_units(summary, "weights")
    if not models:
        return
    files = read_tar(returned / "weights.tar")
    items = []
    for model in models:
        facts = json.loads(files[f"{model}.json"])
        state = torch.load(io.BytesIO(files[f"{model}.pt"]), map_location="cpu",
                           weights_only=True)
        items.append((facts, state))
    ship_trained(items, gpu_run.WEIGHTS_NAME)


def merge_study(returned: Path, repo: Path, summary: dict[str, Any]) -> None:
    if not done_units(summary, "study"):
        return
    results_dir = repo / gpu_run.STUDY_RESULTS
    for name, data in read_tar(returned / "study.tar").items():
        record = json.loads(data)
        save_record(results_dir, record, record["environment"])
        print(f"study run {record['model']} seed {record['seed']} -> {results_dir}/records/"
              f"{name}")
    rebuild_study_report(results_dir)


def rebuild_study_report(results_dir: Path, figures: bool = True) -> dict[str, Any] | None:
    """``results.json``, ``RESULTS.md`` and figures of the gpu study from its records of the
    current evaluation (records of an older one are kept until a rerun replaces them, but a
    table never mixes two evaluations); None when there are none yet."""
    from attn_lib.study.report import write_report
    from attn_lib.study.robustness import EPSILONS
    from attn_lib.study.runner import EVALUATION_VERSION
    from attn_lib.study.scales import get_scale

    scale = get_scale("gpu")
    order = {m: i for i, m in enumerate(gpu_run.STUDY_MODELS)}
    current = [r for r in load_records(results_dir)
               if r["evaluation_version"] == EVALUATION_VERSION]
    if not current:
        print(f"no records of evaluation version {EVALUATION_VERSION} in {results_dir}: "
              "report not rebuilt")
        return None
    runs = sorted(current, key=lambda r: (order.get(r["model"], len(order)), r["seed"]))
    latest = max(runs, key=lambda r: r["environment"]["date"])
    study = {"dataset": "cifar10", "scale": "gpu", "scale_description": scale.description,
             "models": list(dict.fromkeys(r["model"] for r in runs)),
             "seeds": sorted({r["seed"] for r in runs}), "train": dict(scale.train),
             "data_source": f"cifar10 read from an image tree ({runs[0]['test_images']} test "
                            "images)",
             "test_images": runs[0]["test_images"], "epsilons": list(EPSILONS),
             "runs_dir": "runs", "note": provenance_note(STUDY_NOTE, runs)}
    # The GPU command calls reproduce once per run: the last call is the latest run's.
    results = {"study": study, "environment": latest["environment"],
               "wall_s": latest["wall_s"],
               "train_s": sum(r["train_time_s"] for r in runs), "runs": runs}
    write_report(results, results_dir, figures=figures)
    return results


def tuning_row(label: str, record: dict[str, Any]) -> str:
    """One line of the tuning table from a bench_train.py JSON record."""
    t = record.get("time_to_target")
    where = f"{record['device']} | {record['date'][:10]} |"
    throughput = ""
    if record.get("speedup"):
        best = max(record["fast_images_per_s"].values())
        throughput = (f"compiled ({record.get('compile_mode', 'default')} mode) {best:,.0f}, "
                      f"{record['speedup']:.2f}x the reference")
    if t is None:
        what = "throughput only" if throughput else \
            f"cut short ({', '.join(record['sections']) or 'nothing'} measured)"
        return f"| `{label}` | {what} | | | | {throughput} | {where}"
    recipe = t["recipe"]
    what = (f"lr {recipe['lr']:g}, batch {recipe['batch_size']}, warm-up {recipe['warmup']:g}, "
            f"label smoothing {recipe['label_smoothing']:g}, EMA {recipe['ema_decay']:g}, "
            f"{recipe['augment']}")
    reached = (f"{t['reached_at_s']:.0f} s to {100 * t['target']:.1f} %"
               if t["reached_at_s"] is not None else "not reached")
    speed = f"{t['images_per_s']:,.0f}" + (f" ({throughput})" if throughput else "")
    return (f"| `{label}` | {what} | {len(t['history'])} | {t['train_s']:.0f} s ({reached}) | "
            f"{100 * t['best_acc']:.2f} (final {100 * t['final_acc']:.2f}) | {speed} | {where}")


def merge_speed(returned: Path, repo: Path, summary: dict[str, Any]) -> None:
    tried = [u["unit"] for u in summary["units"] if u["step"] == "speed"
             and u["status"] in ("done", "failed")]
    if not tried:
        return
    files = read_tar(returned / "speed.tar")
    folder = repo / TUNING_DIR
    folder.mkdir(parents=True, exist_ok=True)
    table = repo / gpu_run.TUNING_TABLE
    known = gpu_run.tried_labels(repo)
    lines = []
    for label in tried:
        for suffix in (".json", ".log"):
            if label + suffix in files:
                (folder / (label + suffix)).write_bytes(files[label + suffix])
        if f"{label}.json" in files and label not in known:
            lines.append(tuning_row(label, json.loads(files[f"{label}.json"])))
    if lines:
        with table.open("a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        print(f"{len(lines)} tries -> {table}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("returned", type=Path, help="the folder the GPU command's $OUT came back as")
    p.add_argument("--repo", type=Path, default=REPO, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    path = args.returned / gpu_run.SUMMARY
    if not path.is_file():
        print(f"error: {path} is missing: give the folder the GPU command's $OUT came back as",
              file=sys.stderr)
        return 2
    summary = json.loads(path.read_text())
    if summary.get("dry_run"):
        print("error: this is a dry run's output (its figures mean nothing); not merged",
              file=sys.stderr)
        return 2
    for unit in summary["units"]:
        if unit["status"] == "failed":
            print(f"not merged: {unit['step']} {unit['unit']} failed: {unit['error']}")
    merge_notebook(args.returned, args.repo, summary)
    merge_weights(args.returned, summary)
    merge_study(args.returned, args.repo, summary)
    merge_speed(args.returned, args.repo, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
