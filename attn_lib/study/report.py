"""A study's results folder: ``results.json``, ``RESULTS.md`` and figures.

* ``results.json`` -- every number: the study's settings, the environment, each run's record
  (training, clean and flip-TTA accuracy, FGSM, g shuffled, localisation) and the per-model
  summary (mean and standard deviation over seeds);
* ``RESULTS.md`` -- the summary table beside the references of :data:`scales.REFERENCES`,
  labelled with what they are and what they were measured on, then the per-run table;
* ``accuracy.png`` (each seed's point and the mean per model), ``fgsm.png`` (accuracy against
  epsilon per model) and ``attention.png`` (the same test images, one per class, with every
  attention model's maps and Grad-CAM of the baseline).
"""

from __future__ import annotations

import json
import statistics
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_bytes
from .scales import REFERENCE_NOTE, REFERENCES

RESULTS_JSON = "results.json"
RESULTS_MD = "RESULTS.md"
ACCURACY_PNG = "accuracy.png"
FGSM_PNG = "fgsm.png"
ATTENTION_PNG = "attention.png"
#: Test images in attention.png: the first test image of each of the first classes.
ATTENTION_IMAGES = 8


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model (in the order of ``runs``): seeds, and mean/std of every figure."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_model.setdefault(run["model"], []).append(run)
    summary = {}
    for model, group in by_model.items():
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in group],
                                 "parameters": group[0]["parameters"]}
        for key in ("test_acc", "test_acc_tta", "train_time_s"):
            entry[key] = mean_std([r[key] for r in group])
        epsilons = [f["epsilon_255"] for f in group[0]["fgsm"]]
        entry["fgsm"] = {eps: mean_std([next(f["acc"] for f in r["fgsm"]
                                             if f["epsilon_255"] == eps) for r in group])
                         for eps in epsilons}
        if all("g_shuffle" in r for r in group):
            entry["g_shuffle_delta_acc"] = mean_std([r["g_shuffle"]["delta_acc"] for r in group])
            entry["g_shuffle_max_attention_change"] = max(
                r["g_shuffle"]["max_attention_change"] for r in group)
        summary[model] = entry
    return summary


def write_report(results: dict[str, Any], out_dir: str | Path, *, test_set: Any = None,
                 runs_dir: str | Path | None = None, figures: bool = True) -> None:
    """Write ``results.json``, ``RESULTS.md`` and (with ``figures``) the PNGs to ``out_dir``.

    ``test_set`` and ``runs_dir`` are needed for ``attention.png`` (it loads each attention
    model's seed-0 weights from its run folder).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results["summary"] = summarize(results["runs"])
    results["references"] = {m: REFERENCES.get(results["study"]["dataset"], {}).get(m, [])
                             for m in results["summary"]}
    written = []
    if figures:
        written += [plot_accuracy(results, out / ACCURACY_PNG), plot_fgsm(results, out / FGSM_PNG)]
        if test_set is not None and runs_dir is not None:
            path = plot_study_attention(results, test_set, Path(runs_dir), out / ATTENTION_PNG)
            if path is not None:
                written.append(path)
    results["figures"] = [p.name for p in written]
    text = json.dumps(results, indent=1, default=_json_default) + "\n"
    atomic_write_bytes(out / RESULTS_JSON, text.encode("utf-8"))
    atomic_write_bytes(out / RESULTS_MD, markdown(results).encode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _pct(pair: tuple[float, float], n: int) -> str:
    mean, std = pair
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def markdown(results: dict[str, Any]) -> str:
    """The ``RESULTS.md`` text of a study."""
    study, env, summary = results["study"], results["environment"], results["summary"]
    epsilons = [round(e * 255, 6) for e in study["epsilons"]]
    lines = [
        f"# Study: {study['dataset']} at scale `{study['scale']}`",
        "",
        f"Scale: {study['scale_description']}. Data: {study['data_source']}. Seeds: "
        f"{', '.join(map(str, study['seeds']))}.",
        *([study["note"]] if study.get("note") else []),
        f"Measured on {env['device_name']} ({env['device']}, {env['torch_threads']} torch "
        f"threads), torch {env['torch']}, {env['date']}. Training took "
        f"{_minutes(results['train_s'])} in all (sum over runs); the last call of the study "
        f"took {_minutes(results['wall_s'])} of wall time (runs finished earlier are skipped).",
        "",
        "Accuracies are percentages on the test split (mean ± standard deviation over seeds), "
        "of the final weights (no selection by test accuracy). FGSM perturbs each test image by "
        "ε·sign(∇ₓ loss) in pixel space, clipped to [0, 1], model in eval mode. Δ g-shuffle is "
        "the accuracy change when each image's global feature g is replaced by another image's "
        "before the attention estimators.",
        "",
        "| model | parameters | train time / run | test acc | flip TTA | "
        + " | ".join(f"FGSM ε={_eps(e)}/255" for e in epsilons) + " | Δ g-shuffle (pp) |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(epsilons) + "---:|",
    ]
    for model, s in summary.items():
        n = len(s["seeds"])
        fgsm = " | ".join(_pct(s["fgsm"][e], n) for e in epsilons)
        shuffle = "–"
        if "g_shuffle_delta_acc" in s:
            mean, std = s["g_shuffle_delta_acc"]
            shuffle = f"{100 * mean:+.2f}" + (f" ± {100 * std:.2f}" if n > 1 else "")
        lines.append(f"| `{model}` | {s['parameters']:,} | {_minutes(s['train_time_s'][0])} | "
                     f"{_pct(s['test_acc'], n)} | {_pct(s['test_acc_tta'], n)} | {fgsm} | "
                     f"{shuffle} |")
    refs = [(m, r) for m, rs in results["references"].items() for r in rs]
    lines += ["", "## For comparison (not measured here)", ""]
    if refs:
        lines += ["| model | accuracy | what it is | source |", "|---|---:|---|---|"]
        lines += [f"| `{m}` | {100 * r['acc']:.2f} | {r['kind']} | {r['source']} |"
                  for m, r in refs]
        lines += ["", REFERENCE_NOTE]
    else:
        lines.append(f"No confirmed reference numbers for {study['dataset']}.")
    lines += ["", "## Runs", "",
              "| model | seed | epochs | train time | images/s | test acc | flip TTA | "
              "Δ g-shuffle (pp) | max Δ attention |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        g = r.get("g_shuffle")
        shuffle = (f"{100 * g['delta_acc']:+.2f} | {g['max_attention_change']:.1e}" if g
                   else "– | –")
        lines.append(f"| `{r['model']}` | {r['seed']} | {r['epochs']} | "
                     f"{_minutes(r['train_time_s'])} | {r['train_images_per_s']:,.0f} | "
                     f"{100 * r['test_acc']:.2f} | {100 * r['test_acc_tta']:.2f} | {shuffle} |")
    localization = [(r, row) for r in results["runs"] for row in r.get("localization", [])]
    if localization:
        lines += ["", "## Localisation (object masks)", "",
                  "| model | seed | method | level | mass in mask | pointing game | Jaccard |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        lines += [f"| `{r['model']}` | {r['seed']} | {row['method']} | {row['level'] or '–'} | "
                  f"{row['mass_in_mask']:.3f} | {row['pointing_game']:.3f} | "
                  f"{row['jaccard']:.3f} |" for r, row in localization]
    if results.get("figures"):
        lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in results["figures"]]
    return "\n".join(lines) + "\n"


def _eps(value: float) -> str:
    return f"{value:g}"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_accuracy(results: dict[str, Any], path: Path) -> Path:
    """Test accuracy per model: one dot per seed, a bar at the mean (± std)."""
    summary = results["summary"]
    fig = _figure(1.6 + 1.3 * len(summary), 3.6)
    ax = fig.subplots()
    for x, (model, s) in enumerate(summary.items()):
        accs = [100 * r["test_acc"] for r in results["runs"] if r["model"] == model]
        mean, std = s["test_acc"]
        ax.bar(x, 100 * mean, color="tab:blue" if model != "vgg" else "tab:gray", alpha=0.35,
               width=0.6)
        ax.errorbar(x, 100 * mean, yerr=100 * std, color="black", capsize=4)
        ax.scatter([x] * len(accs), accs, color="black", zorder=3, s=14, label=None)
    ax.set_xticks(range(len(summary)), [m.replace("vgg-", "") for m in summary], rotation=20)
    values = [100 * r["test_acc"] for r in results["runs"]]
    low, high = min(values), max(values)
    ax.set_ylim(max(0, low - 3 * max(high - low, 1)), min(100, high + max(high - low, 1)))
    study = results["study"]
    ax.set(ylabel="test accuracy (%)",
           title=f"{study['dataset']}, scale {study['scale']}: each dot a seed, bar the mean ± sd")
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)
    return path


def plot_fgsm(results: dict[str, Any], path: Path) -> Path:
    """Accuracy against the FGSM budget, one line per model (thin lines: single seeds)."""
    fig = _figure(5.6, 3.8)
    ax = fig.subplots()
    colours = iter(["tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
                    "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "black"])
    for model, s in results["summary"].items():
        colour = next(colours)
        epsilons = [0.0] + list(s["fgsm"])
        ax.plot(epsilons, [100 * s["test_acc"][0]] + [100 * s["fgsm"][e][0] for e in s["fgsm"]],
                marker="o", color=colour, label=model)
        for run in (r for r in results["runs"] if r["model"] == model):
            ax.plot(epsilons, [100 * run["test_acc"]] + [100 * f["acc"] for f in run["fgsm"]],
                    color=colour, alpha=0.3, linewidth=0.8)
    ax.set(xlabel="FGSM ε (grey levels of 255)", ylabel="test accuracy (%)",
           title="accuracy under FGSM (ε = 0: clean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def plot_study_attention(results: dict[str, Any], test_set: Any, runs_dir: Path,
                         path: Path) -> Path | None:
    """The same test images (one per class) with each attention model's maps (seed 0, or its
    first seed) and Grad-CAM of the baseline ``vgg`` if it is in the study."""
    from ..checkpoint import load_model
    from ..data import normalize, one_per_class
    from ..maps.gradcam import gradcam
    from ..maps.viz import (
        LEVEL_LAYERS,
        _class_name,
        _show,
        overlay_attention,
        predict,
        to_rgb_image,
    )
    from .runner import run_name

    first_seed = {}
    for run in results["runs"]:
        first_seed.setdefault(run["model"], run["seed"])
    loaded = {m: load_model(runs_dir / run_name(m, s))[0] for m, s in first_seed.items()}
    indices = one_per_class(test_set.labels, ATTENTION_IMAGES)
    x = normalize(test_set.images[indices], test_set.mean, test_set.std)
    columns: list[tuple[str, Any]] = []
    for name, model in loaded.items():
        _, maps = predict(model, x)
        layers = getattr(model, "layer_names", None) or [LEVEL_LAYERS[lv] for lv in model.levels]
        for layer, level_maps in zip(layers, maps):
            h = level_maps.shape[-1]
            columns.append((f"{name.replace('vgg-', '')}\n{layer} {h}x{h}", level_maps))
    if not columns:
        return None
    if "vgg" in loaded:
        columns.append(("vgg Grad-CAM\nconv13",
                        gradcam(loaded["vgg"], x, test_set.labels[indices])))
    n, ncols = len(indices), 1 + len(columns)
    fig = _figure(1.55 * ncols, 1.7 * n + 0.4)
    axes = fig.subplots(n, ncols, squeeze=False)
    for i in range(n):
        rgb = to_rgb_image(test_set.images[indices[i]])
        name = _class_name(int(test_set.labels[indices[i]]), test_set.classes)
        _show(axes[i, 0], rgb, textwrap.shorten(name.replace("_", " "), 24, placeholder="…"),
              "black")
        for j, (title, maps) in enumerate(columns, start=1):
            _show(axes[i, j], overlay_attention(rgb, maps[i], alpha=0.5), title if i == 0 else "",
                  "black")
    fig.suptitle("each map min-max scaled on its own: colours do not compare across maps",
                 fontsize=9)
    fig.savefig(path, dpi=110)
    return path

