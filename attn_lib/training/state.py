"""Run folders, run settings and RNG state: what a resumed run needs besides the weights."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import LAST, atomic_write_bytes
from ..data.base import mix_seed

CONFIG_FILE = "config.json"
RUNS_ROOT = "runs"


def resolve_run_dir(out_dir: str | Path | None, model_name: str, dataset: str,
                    resume: bool) -> Path:
    """The folder a run writes to.

    With ``out_dir``: that folder (an existing run there needs ``resume``, so a finished run is
    never overwritten by accident). Without: ``runs/<model>-<dataset>`` under the current
    directory, with ``-2``, ``-3``, ... when taken; with ``resume`` the newest such folder that
    holds a ``last.pt``.
    """
    if out_dir is not None:
        run_dir = Path(out_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise ValueError(f"output folder {run_dir} exists and is not a folder")
        if not resume and (run_dir / LAST).exists():
            raise ValueError(
                f"{run_dir} already holds a run ({LAST}); pass --resume (resume=True) to "
                "continue it, or choose another output folder"
            )
        return run_dir
    base = Path(RUNS_ROOT) / f"{model_name}-{dataset}"
    pattern = re.compile(rf"^{re.escape(base.name)}(-\d+)?$")
    if resume and base.parent.is_dir():
        runs = [p for p in base.parent.iterdir()
                if pattern.match(p.name) and (p / LAST).is_file()]
        if runs:
            return max(runs, key=lambda p: (p / LAST).stat().st_mtime)
    run_dir, k = base, 2
    while run_dir.exists() and any(run_dir.iterdir()):
        run_dir, k = base.with_name(f"{base.name}-{k}"), k + 1
    return run_dir


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write the run's settings to ``config.json`` (atomically)."""
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(run_dir / CONFIG_FILE, text.encode("utf-8"))


def epoch_seed(seed: int, epoch: int) -> int:
    """The RNG seed of one epoch: a pure function of (seed, epoch), so that a run resumed at
    an epoch boundary draws exactly the same dropout masks and shuffles as an unbroken one."""
    return (seed * 1_000_003 + epoch * 7919 + 12345) % (2**63)


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed every RNG the training loop uses for ``epoch``; in a data-parallel run, each
    rank's differently (rank 0 as a lone process), so that the ranks' dropout masks (and the
    ``torch`` loader's transforms without workers) are independent."""
    s = epoch_seed(seed, epoch)
    if rank:
        s = mix_seed(s, rank)
    torch.manual_seed(s)  # also seeds all CUDA devices
    random.seed(s)


def capture_rng() -> dict[str, Any]:
    """The state of the torch (CPU and CUDA), Python and NumPy RNGs, weights_only-safe."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _python_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.astype("int64")), int(pos),
                          int(has_gauss), float(cached)]
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only when the device count matches)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
