"""Per-epoch metrics: the ``metrics.jsonl`` file of a run folder (plotted by
:func:`attn_lib.plot_history`).

One row per epoch (a dict; a JSON line in the file):

* ``epoch`` (1-based), ``lr`` (of the epoch's last step);
* ``train_loss``, ``train_acc`` -- on the augmented training batches, with label smoothing;
* ``test_loss``, ``test_acc`` and, with flip TTA, ``test_loss_tta``, ``test_acc_tta`` --
  accuracies are fractions in [0, 1], losses plain cross-entropy;
* with a validation split (``val_size`` > 0): ``val_loss``, ``val_acc`` (and with flip TTA
  ``val_loss_tta``, ``val_acc_tta``) on the images held out of the training split;
* ``train_time_s`` (the epoch's training steps), ``time_s`` (with evaluation and checkpoints),
  ``elapsed_s`` (training time of all epochs so far: the clock of time-to-accuracy),
  ``images_per_s`` (training), ``warmup_s`` (one-time warm-up before this epoch --
  ``torch.compile``, cuDNN's kernel search -- outside ``train_time_s``; 0 for most epochs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes

METRICS_FILE = "metrics.jsonl"

History = list[dict[str, Any]]


def append_metrics(run_dir: str | Path, row: dict[str, Any]) -> None:
    """Append one epoch's metrics as a JSON line (flushed and fsynced: survives a crash)."""
    with open(Path(run_dir) / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_metrics(run_dir: str | Path, history: History) -> None:
    """Rewrite ``metrics.jsonl`` from ``history`` (on resume: drop lines the checkpoint lacks)."""
    text = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write_bytes(Path(run_dir) / METRICS_FILE, text.encode("utf-8"))


def read_metrics(path: str | Path) -> History:
    """Read a ``metrics.jsonl`` file (or the one in a run folder) into a list of dicts."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}, line {number}: not valid JSON ({exc})") from None
    return rows
