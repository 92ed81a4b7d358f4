"""Diagrams drawn from a model itself: where its estimators attach, and what one estimator does.

* :func:`trace` runs one forward pass with hooks and records the backbone's stages, the stage
  each attention estimator reads and the model's output;
* :func:`draw_architecture` turns that record into boxes: stages with their output shapes, the
  estimators under the stages they read, the classifier;
* :func:`draw_estimator` draws one estimator's computation (Sec. 3 of the paper): local
  features ``l`` and global feature ``g``, the compatibility scores ``c`` (``pc`` with its
  vector ``u``, or ``dp``), the normalisation to the map ``a`` (Eq. 1) and the weighted sum
  ``g_a`` (Eq. 2), each box with the shape the estimator really produced.

Nothing is typed by hand: change the model and the drawings change with it.
"""

from __future__ import annotations

from typing import NamedTuple

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from torch import Tensor, nn

from ..models.attention import AttentionEstimator

#: Box colours: input, backbone stage, global feature, attention, classifier.
COLOURS = {"input": "white", "stage": "#dbe9f6", "global": "#fde0c5", "attention": "#d9f0d3",
           "head": "#f2f2f2", "param": "#fff5b8"}


class Trace(NamedTuple):
    """What :func:`trace` records of one forward pass."""

    calls: list[tuple[str, Tensor, Tensor]]  #: backbone stages in call order: (name, input, output)
    attached: list[int]  #: for each estimator, the index in ``calls`` of the stage it reads
    output: object  #: the model's output (logits and attention maps)


def _conv_range(module: nn.Module, number: dict[nn.Module, int]) -> str:
    inside = [number[m] for m in module.modules() if m in number]
    return f"conv{inside[0]}-{inside[-1]}" if len(inside) > 1 else f"conv{inside[0]}"


def trace(model: nn.Module, x: Tensor) -> Trace:
    """Run ``model`` (in eval mode, without gradients) on ``x`` with hooks on its backbone's
    stages and attention estimators.

    Stages are named by the conv layers they hold (``conv5-7``), counted in the backbone's
    order; the global fully connected layer is ``FC``. An estimator's input is the very tensor
    some stage returned, which is how the stage it reads is found.
    """
    backbone = model.backbone
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    number = {m: i for i, m in enumerate(convs, start=1)}
    stages = [(_conv_range(b, number), b) for b in backbone.blocks]
    stages += [(_conv_range(backbone.global_convs, number), backbone.global_convs),
               ("FC", backbone.global_fc)]
    calls: list[tuple[str, Tensor, Tensor]] = []
    read: list[Tensor] = []
    handles = [module.register_forward_hook(
        lambda _m, inputs, output, name=name: calls.append((name, inputs[0], output)))
        for name, module in stages]
    handles += [estimator.register_forward_pre_hook(lambda _m, inputs: read.append(inputs[0]))
                for estimator in model.estimators]
    try:
        with torch.no_grad():
            output = model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    attached = [next(i for i, call in enumerate(calls) if call[2] is t) for t in read]
    return Trace(calls, attached, output)


def _box(ax: Axes, x: float, y: float, text: str, colour: str, w: float = 0.76,
         h: float = 0.78, fontsize: float = 8.5) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02",
                                facecolor=colour, edgecolor="black", linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], **style) -> None:
    ax.annotate("", end, start, arrowprops=dict(arrowstyle="-|>", lw=1.0, **style))


def _dims(t: Tensor) -> str:
    """The shape of one sample (the batch dimension dropped), as ``C×h×w``."""
    return "×".join(map(str, t.shape[1:]))


def draw_architecture(model: nn.Module, image_size: int = 32) -> Figure:
    """Boxes for the stages of ``model`` (shapes of one ``image_size`` image), its attention
    estimators and its classifier, as :func:`trace` finds them."""
    probe = torch.zeros(1, model.backbone.in_channels, image_size, image_size)
    calls, attached, out = trace(model, probe)
    fig, ax = plt.subplots(figsize=(12.5, 4.4), layout="constrained")
    ax.set_xlim(-0.5, len(calls) + 0.5)
    ax.set_ylim(-2.0, 1.5)
    ax.axis("off")
    _box(ax, 0, 1, f"input\n{_dims(probe)}", COLOURS["input"])
    previous = probe
    for i, (name, inputs, output) in enumerate(calls, start=1):
        _arrow(ax, (i - 0.62, 1), (i - 0.38, 1))
        if inputs.dim() == 4 and inputs.shape[-1] < previous.shape[-1]:
            ax.text(i - 0.5, 0.93, "pool", ha="center", va="top", fontsize=7, color="dimgray")
        if name == "FC":
            _box(ax, i, 1, f"FC → g\n{_dims(output)}", COLOURS["global"])
        else:
            _box(ax, i, 1, f"{name}\n{_dims(output)}", COLOURS["stage"])
        previous = output
    xs = [stage + 1 for stage in attached]
    if xs:
        _draw_estimators(ax, model, xs, len(calls), out)
        head = " → ".join(type(m).__name__ for m in model.heads[0])
        joined = "concatenate → " if model.aggregation == "concat" else "each level: "
        _box(ax, (xs[0] + xs[-1]) / 2, -1.62,
             f"{joined}{head} → {out.logits.shape[1]} logits", COLOURS["head"],
             w=xs[-1] - xs[0] + 0.76, h=0.5)
    ax.set_title(f"{model.name}: where the {len(xs)} attention estimators attach" if xs
                 else f"{model.name}: no attention estimators", fontsize=10)
    return fig


def _draw_estimators(ax: Axes, model: nn.Module, xs: list[int], g_x: int, out) -> None:
    ax.plot([g_x, g_x, xs[0]], [0.61, 0.1, 0.1], ls="--", lw=0.9, color="tab:orange")
    for k, (x, maps) in enumerate(zip(xs, out.attention), start=1):
        _arrow(ax, (x - 0.2, 0.61), (x - 0.2, -0.11))
        ax.text(x - 0.17, 0.35, f"l{model.levels[k - 1]}", fontsize=8.5)
        _arrow(ax, (x + 0.2, 0.1), (x + 0.2, -0.11), color="tab:orange", ls="--")
        _box(ax, x, -0.5, f"attention {model.levels[k - 1]}\nmap {maps.shape[-2]}×"
             f"{maps.shape[-1]}\n→ g_a{model.levels[k - 1]}", COLOURS["attention"])
        _arrow(ax, (x, -0.89), (x, -1.33))
    pc = all(e.compatibility == "pc" and e.normalize == "softmax" for e in model.estimators)
    ax.text(g_x - 0.05, 0.14, "g goes to every estimator" + (": its term cancels in pc"
                                                              if pc else ""),
            ha="right", va="bottom", fontsize=8, color="tab:orange")


def estimator_shapes(estimator: AttentionEstimator, local: Tensor, global_: Tensor
                     ) -> dict[str, tuple[int, ...]]:
    """Shapes (one sample) of what ``estimator`` computes on ``local`` and ``global_``: the
    inputs, the width-matched ``l`` and ``g`` it scores, ``u`` (``pc`` only), the scores
    ``c``, the map ``a`` and the descriptor ``g_a``."""
    with torch.no_grad():
        matched_l = (estimator.project_local(local) if estimator.project_local is not None
                     else local)
        matched_g = (estimator.project_global(global_) if estimator.project_global is not None
                     else global_)
        result = estimator(local, global_)
    shapes = {"l": tuple(local.shape[1:]), "g": tuple(global_.shape[1:]),
              "matched l": tuple(matched_l.shape[1:]), "matched g": tuple(matched_g.shape[1:]),
              "c": tuple(result.scores.shape[1:]), "a": tuple(result.attention.shape[1:]),
              "g_a": tuple(result.descriptor.shape[1:])}
    if estimator.u is not None:
        shapes["u"] = tuple(estimator.u.shape)
    return shapes


def draw_estimator(estimator: AttentionEstimator, local_shape: tuple[int, int, int],
                   global_channels: int | None = None) -> Figure:
    """One attention estimator, step by step, with the shapes it produces for one image whose
    local features have ``local_shape`` (C, h, w) and whose global feature has
    ``global_channels`` (default: the estimator's)."""
    channels, height, width = local_shape
    if global_channels is None:
        global_channels = (estimator.project_global.in_features
                           if estimator.project_global is not None else estimator.out_channels)
    shapes = estimator_shapes(estimator, torch.zeros(1, channels, height, width),
                              torch.zeros(1, global_channels))
    fig, ax = plt.subplots(figsize=(11, 3.4), layout="constrained")
    ax.set_xlim(-0.6, 5.6)
    ax.set_ylim(-1.55, 1.45)
    ax.axis("off")

    def dims(key: str) -> str:
        return "×".join(map(str, shapes[key]))

    _box(ax, 0, 0.8, f"local features l\n{dims('l')}\n(one vector per position)",
         COLOURS["stage"], w=1.1, h=0.8)
    _box(ax, 0, -0.8, f"global feature g\n{dims('g')}", COLOURS["global"], w=1.1, h=0.7)
    if estimator.project_local is not None:
        _box(ax, 1.25, 0.8, f"1×1 conv\n→ {dims('matched l')}", COLOURS["param"], w=0.9, h=0.6)
        _arrow(ax, (0.55, 0.8), (0.8, 0.8))
    if estimator.project_global is not None:
        _box(ax, 1.25, -0.8, f"linear\n→ {dims('matched g')}", COLOURS["param"], w=0.9, h=0.6)
        _arrow(ax, (0.55, -0.8), (0.8, -0.8))
    if estimator.compatibility == "pc":
        score = f"scores c\n⟨u, l_i⟩ + ⟨u, g⟩\n{dims('c')}"
        _box(ax, 2.5, -1.2, f"learned u\n{dims('u')}", COLOURS["param"], w=0.8, h=0.5)
        _arrow(ax, (2.5, -0.95), (2.5, -0.42))
    else:
        score = f"scores c\n⟨l_i, g⟩\n{dims('c')}"
    _box(ax, 2.5, 0.0, score, COLOURS["attention"], w=1.0, h=0.8)
    for y in (0.8, -0.8):
        _arrow(ax, (1.7 if y > 0 or estimator.project_global is not None else 0.55, y),
               (2.0, 0.25 * (1 if y > 0 else -1)))
    step = "softmax over\nthe positions" if estimator.normalize == "softmax" else "sigmoid"
    _box(ax, 3.65, 0.0, f"{step}\nmap a\n{dims('a')}", COLOURS["attention"], w=0.95, h=0.8)
    _arrow(ax, (3.0, 0.0), (3.17, 0.0))
    combine = "Σ a_i l_i" if estimator.normalize == "softmax" else "mean of a_i l_i"
    _box(ax, 4.85, 0.0, f"weighted sum\n{combine}\ng_a {dims('g_a')}", COLOURS["head"],
         w=1.0, h=0.8)
    _arrow(ax, (4.13, 0.0), (4.35, 0.0))
    ax.annotate("", (4.85, 0.42), (1.7 if estimator.project_local is not None else 0.55, 0.95),
                arrowprops=dict(arrowstyle="-|>", lw=0.9, ls="--", color="dimgray",
                                connectionstyle="arc3,rad=-0.15"))
    ax.text(3.3, 1.2, "the same l is averaged with the weights a", fontsize=8,
            color="dimgray", ha="center")
    ax.set_title(f"one attention estimator ({estimator.compatibility}, {estimator.normalize}): "
                 "Eq. 1 and Eq. 2 of the paper", fontsize=10)
    return fig
