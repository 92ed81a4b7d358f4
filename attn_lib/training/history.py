"""Per-epoch metrics: the ``metrics.jsonl`` file of a run folder and :func:`plot_history`.

One row per epoch (a dict; a JSON line in the file):

* ``epoch`` (1-based), ``lr`` (of the epoch's last step);
* ``train_loss``, ``train_acc`` -- on the augmented training batches, with label smoothing;
* ``test_loss``, ``test_acc`` and, with flip TTA, ``test_loss_tta``, ``test_acc_tta`` --
  accuracies are fractions in [0, 1], losses plain cross-entropy;
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
    from ..checkpoint import atomic_write_bytes

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


def plot_history(history: Any, title: str = ""):
    """Plot loss and accuracy curves of a run; returns the matplotlib ``Figure``.

    The figure is made without pyplot (like :func:`attn_lib.plot_attention_grid`): it is not
    kept alive by pyplot nor drawn twice in a notebook; show it as a cell's value or with
    ``display(fig)``, or ``fig.savefig(path)``.

    Args:
        history: a list of per-epoch dicts, a ``TrainResult``, a run folder or a
            ``metrics.jsonl`` path.
        title: optional figure title.
    """
    from matplotlib.figure import Figure

    if hasattr(history, "history"):  # a TrainResult
        history = history.history
    if isinstance(history, (str, Path)):
        history = read_metrics(history)
    if not history:
        raise ValueError("history is empty: nothing to plot")
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("test_loss", "test")):
        ax_loss.plot(epochs, [row[key] for row in history], marker=".", label=label)
    for key, label in (("train_acc", "train"), ("test_acc", "test"),
                       ("test_acc_tta", "test (flip TTA)")):
        if all(key in row for row in history):
            ax_acc.plot(epochs, [100 * row[key] for row in history], marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig
