"""Committed run records: one study, continued over several machines.

A study's results folder keeps one file per evaluated run, ``records/<model>-seed<seed>.json``:
the run's row of ``results.json`` (training history, recipe, clean, flip-TTA and FGSM accuracy,
g shuffled) and ``environment``, where and when it ran. :func:`attn_lib.reproduce` takes a run
whose record is in the results folder, made with the same settings, instead of training it.
The records are small and committed, the checkpoints are not: a GPU machine that lives for ten
minutes returns the records of the runs it finished, and the next machine trains only the runs
that are still missing, until the table is full. ``RESULTS.md`` then says which runs came from
which machine and date (:func:`provenance_note`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes

RECORDS_DIR = "records"
#: Settings of ``train()`` that change how fast a run trains, not what it learns: a record made
#: without ``torch.compile`` stands for the same run made with it.
SPEED_ONLY = ("compile",)


def record_path(results_dir: str | Path, model: str, seed: int) -> Path:
    """Where the record of one run of a study lives in its results folder."""
    return Path(results_dir) / RECORDS_DIR / f"{model}-seed{seed}.json"


def _learning_settings(train_kw: dict[str, Any]) -> dict[str, Any]:
    plain = json.loads(json.dumps(train_kw))  # tuples -> lists, as read back from JSON
    return {k: v for k, v in plain.items() if k not in SPEED_ONLY}


def load_record(results_dir: str | Path, model: str, seed: int, train_kw: dict[str, Any],
                test_images: int, evaluation_version: int) -> dict[str, Any] | None:
    """The committed record of a run, if there is one made with these settings (the same
    training settings up to :data:`SPEED_ONLY`, test images and evaluation version)."""
    path = record_path(results_dir, model, seed)
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    same = (record.get("model") == model and record.get("seed") == seed
            and record.get("evaluation_version") == evaluation_version
            and record.get("test_images") == test_images
            and _learning_settings(record.get("train_settings", {}))
            == _learning_settings(train_kw))
    return record if same else None


def save_record(results_dir: str | Path, record: dict[str, Any],
                environment: dict[str, Any]) -> dict[str, Any]:
    """Write a run's record with the ``environment`` it ran in (a record that already names
    one keeps it); returns the record written."""
    record = {**record, "environment": record.get("environment") or environment}
    path = record_path(results_dir, record["model"], record["seed"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(record, indent=1) + "\n").encode("utf-8"))
    return record


def load_records(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of a results folder, sorted by file name."""
    folder = Path(results_dir) / RECORDS_DIR
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]


def provenance_note(note: str | None, records: Sequence[dict[str, Any]]) -> str | None:
    """``note`` followed by which runs ran on which machine and day, when the runs of a study
    come from more than one (otherwise the report's environment line says it all)."""
    groups: dict[str, list[str]] = {}
    for r in records:
        env = r.get("environment")
        if env:
            mode = "compiled" if r.get("train_settings", {}).get("compile") else "eager"
            where = f"{env['device_name']} ({mode}), torch {env['torch']}, {env['date'][:10]}"
            groups.setdefault(where, []).append(f"{r['model']} seed {r['seed']}")
    if len(groups) < 2:
        return note
    lines = "; ".join(f"{', '.join(runs)} on {where}" for where, runs in groups.items())
    return " ".join(filter(None, (note, f"Runs by machine: {lines}.")))
