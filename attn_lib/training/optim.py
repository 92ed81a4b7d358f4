"""Optimiser, learning-rate schedule and weight EMA, each with a small resumable state.

The schedule is a pure function of the global step, so a resumed run only needs the step count
to continue exactly where it stopped (and no pickled closures end up in the checkpoint).
"""

from __future__ import annotations

import bisect
import copy
import math
from typing import Any

import torch
from torch import nn

from .recipe import Recipe


def build_optimizer(model: nn.Module, recipe: Recipe,
                    device: torch.device | None = None) -> torch.optim.SGD:
    """SGD with (Nesterov) momentum and weight decay on all parameters, as in the paper.

    On a CUDA device the fused implementation (PyTorch >= 2.3) updates all parameters in one
    kernel launch, with the same arithmetic as the default multi-tensor one.
    """
    fused = device is not None and device.type == "cuda"
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           nesterov=recipe.nesterov, weight_decay=recipe.weight_decay,
                           fused=fused or None)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimizer's implementation choice
    (``fused``/``foreach``): a run saved on a GPU may be resumed on a CPU and vice versa.

    Per-parameter state (SGD's momentum buffers) is rebuilt in the memory layout of its
    parameter: ``load_state_dict`` keeps the saved tensors' strides, and a run saved in one
    layout (contiguous on a CPU, channels_last on a GPU) and resumed in the other would hand
    the fused CUDA kernel buffers whose strides differ from the parameters' -- which it refuses
    on the first step.
    """
    implementation = [{k: g.get(k) for k in ("fused", "foreach")}
                      for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, impl in zip(optimizer.param_groups, implementation):
        group.update(impl)
    match_parameter_layout(optimizer)


@torch.no_grad()
def match_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor of the parameter's shape the parameter's strides
    (values unchanged)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if (isinstance(value, torch.Tensor) and value.shape == param.shape
                        and value.stride() != param.stride()):
                    optimizer.state[param][key] = torch.empty_like(param).copy_(value)


class LRSchedule:
    """Learning rate per optimiser step.

    * ``onecycle``: linear warm-up from ``lr / 10`` to ``lr`` over the first ``warmup`` fraction
      of the steps, then cosine decay to zero at the last step.
    * ``step`` (the paper): ``lr * step_gamma ** (epoch // step_epochs)``, or with
      ``milestones``, ``lr * step_gamma ** (number of milestones <= epoch)``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
        self.optimizer = optimizer
        self.recipe = recipe
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = recipe.epochs * self.steps_per_epoch
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        """The learning rate used for optimiser step number ``step`` (0-based)."""
        r = self.recipe
        if r.schedule == "step":
            epoch = step // self.steps_per_epoch
            drops = (bisect.bisect_right(r.milestones, epoch) if r.milestones
                     else epoch // r.step_epochs)
            return r.lr * r.step_gamma ** drops
        warm = int(round(r.warmup * self.total_steps))
        if step < warm:
            return r.lr * (0.1 + 0.9 * step / warm)
        progress = (step - warm) / max(1, self.total_steps - warm)
        return r.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.lr_at(self.step_count)

    def step(self) -> None:
        """Advance one optimiser step."""
        self.step_count += 1
        self._apply()

    def _apply(self) -> None:
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


class EMA:
    """Exponential moving average of a model's weights and buffers (BN statistics included).

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` so that the average is useful
    after a few hundred steps too (short CPU runs), not only after thousands.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._tensors: tuple[Any, ...] | None = None

    def _pairs(self, model: nn.Module) -> tuple[Any, ...]:
        # The (average, current) tensor lists, built once per model: state_dict() walks every
        # module, which costs more per step than the update itself. Loading weights copies in
        # place, so the tensors stay the same objects for the whole run.
        if self._tensors is None or self._tensors[0] is not model:
            pairs = list(zip(self.module.state_dict().values(), model.state_dict().values()))
            floats = [(e, m) for e, m in pairs if e.is_floating_point()]
            others = [(e, m) for e, m in pairs if not e.is_floating_point()]
            self._tensors = (model, [e for e, _ in floats], [m for _, m in floats], others)
        return self._tensors

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average."""
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        _, ema_float, new_float, others = self._pairs(model)
        torch._foreach_lerp_(ema_float, new_float, 1.0 - d)
        for e, m in others:  # integer buffers (BN num_batches_tracked): copy
            e.copy_(m)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
