"""Training, evaluation and run history (``attn_lib.train``, ``attn_lib.evaluate``, ...).

Modules: ``recipe`` (presets), ``precision`` (autocast/scaler/device), ``optim`` (SGD, lr
schedule, EMA), ``loop`` (the training loop), ``evaluation`` (accuracy, flip TTA),
``history`` (metrics.jsonl, plot_history), ``state`` (run folders, RNG state),
``distributed`` (torchrun / DistributedDataParallel).
"""

from .evaluation import evaluate
from .history import plot_history, read_metrics
from .loop import MAIN_DATASET, MAIN_MODEL, NonFiniteLossError, TrainResult, train
from .precision import resolve_device, resolve_precision
from .recipe import PRESETS, Recipe, get_preset

__all__ = [
    "MAIN_DATASET",
    "MAIN_MODEL",
    "NonFiniteLossError",
    "PRESETS",
    "Recipe",
    "TrainResult",
    "evaluate",
    "get_preset",
    "plot_history",
    "read_metrics",
    "resolve_device",
    "resolve_precision",
    "train",
]
