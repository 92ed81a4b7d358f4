"""Run-folder I/O: where a run writes, its ``config.json``, ``metrics.jsonl`` and checkpoints
(``last.pt`` with the training state, ``best.pt`` of the best validation epoch), and restoring a
resumed run from them. Rank 0 alone calls the writers in a data-parallel run.

A run folder holds::

    config.json     the run's settings (model, data, seed, recipe, precision, ...)
    metrics.jsonl   one line per epoch (attn_lib.training.history)
    last.pt         the last epoch: weights and everything a resume needs
    best.pt         the epoch of best validation accuracy; only with a validation split
    curves.png, attention.png   figures, drawn by attn_lib.train (attn_lib.figures)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_write_bytes
from .._validation import first_line
from ..checkpoint import BEST, LAST, CheckpointError, save_checkpoint
from .history import write_metrics
from .optim import load_optimizer_state
from .rng import capture_rng, restore_rng
from .run import Run

CONFIG_FILE = "config.json"


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write the run's settings to ``config.json`` (atomically)."""
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(run_dir / CONFIG_FILE, text.encode("utf-8"))


def open_run_folder(run: Run) -> None:
    """Create the run folder with the run's ``config.json`` and, for a resumed run, the
    ``metrics.jsonl`` of the epochs its checkpoint holds (lines written after it are dropped)."""
    run_dir = run.settings.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, run.settings.config)
    write_metrics(run_dir, run.history)


def checkpoint_payload(run: Run, epochs_done: int) -> dict[str, Any]:
    """A checkpoint of the evaluated module (``best.pt``; ``last.pt`` adds the train state)."""
    return {
        "model_name": run.settings.config["model"],
        "model_options": {**run.model.options},
        "state_dict": run.eval_model.state_dict(),
        "epoch": epochs_done,
        "history": [dict(row) for row in run.history],
        "data": dict(run.data_info),
        "config": run.settings.config,
    }


def save_epoch_checkpoints(run: Run, epochs_done: int, is_best: bool) -> None:
    """``best.pt`` when the epoch is the best so far, ``last.pt`` (with the training state)
    always; both atomically. With checkpoints at the end only, the best epoch's checkpoint is
    kept in memory and both are written after the last epoch."""
    run_dir = run.settings.run_dir
    payload = checkpoint_payload(run, epochs_done)
    if is_best and run.settings.save_every_epoch:
        save_checkpoint(run_dir / BEST, payload)
    elif is_best:  # copies: training goes on changing the weights in place
        run.best_checkpoint = dict(payload, state_dict=snapshot(run.eval_model))
    if not run.settings.save_every_epoch:
        if epochs_done < run.recipe.epochs:
            return
        if run.best_checkpoint is not None:
            save_checkpoint(run_dir / BEST, run.best_checkpoint)
    payload["train_state"] = _train_state(run)
    save_checkpoint(run_dir / LAST, payload)


def _train_state(run: Run) -> dict[str, Any]:
    state = {
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": capture_rng(),
    }
    if run.ema is not None:  # state_dict holds the EMA weights; the raw ones are needed to go on
        state["model"] = run.model.state_dict()
        state["ema"] = run.ema.state_dict()
    return state


def restore_training_state(run: Run, ckpt: dict[str, Any], path: Path) -> None:
    """Load a ``last.pt``'s training state into a built run (weights, optimiser, schedule,
    scaler, EMA, RNG states, history)."""
    state = ckpt["train_state"]
    try:
        run.model.load_state_dict(state.get("model", ckpt["state_dict"]))
        load_optimizer_state(run.optimizer, state["optimizer"])
        run.schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
        if run.ema is not None:
            run.ema.load_state_dict(state["ema"])
        restore_rng(state["rng"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot restore the training state: "
                              f"{first_line(exc)}") from None
    run.history = list(ckpt["history"])
    run.start_epoch = int(ckpt["epoch"])


@torch.no_grad()
def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s state dict that later training steps leave alone."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
