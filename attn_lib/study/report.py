"""A study's results folder: ``results.json``, ``RESULTS.md`` and figures.

* ``results.json`` -- every number: the study's settings, the environment, each run's record
  (training, clean and flip-TTA accuracy, FGSM, PGD, g shuffled, localisation), the per-model
  summary (mean and standard deviation over seeds), the attacks' sanity checks per model and
  a sentence, computed from the numbers, on whether any model is more robust;
* ``RESULTS.md`` -- the summary table beside the references of :data:`scales.REFERENCES`,
  labelled with what they are and what they were measured on, the robustness table with its
  checks and verdict, then the per-run table;
* ``accuracy.png`` (each seed's point and the mean per model), ``robustness.png`` (accuracy
  against epsilon per model under FGSM and PGD) and ``attention.png`` (the same test images,
  one per class, with every attention model's maps and Grad-CAM of the baseline).
"""

from __future__ import annotations

import json
import statistics
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes
from ..checkpoint import load_model
from ..data import normalize, one_per_class
from ..figures import ATTENTION_IMAGES, ATTENTION_PNG
from ..maps.gradcam import gradcam
from ..models import level_layer_name
from .scales import BACKBONE_CONTROL, PAPER_MODELS, REFERENCE_NOTE, REFERENCES, run_name

RESULTS_JSON = "results.json"
RESULTS_MD = "RESULTS.md"
ACCURACY_PNG = "accuracy.png"
ROBUSTNESS_PNG = "robustness.png"
#: PGD accuracy at the large budget up to which an attack counts as driving accuracy to ~0.
NEAR_ZERO = 0.01


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
        entry["attack_images"] = group[0]["attack"]["images"]
        entry["attack_clean_acc"] = mean_std([r["attack"]["clean_acc"] for r in group])
        for attack in ("fgsm", "pgd"):
            epsilons = [f["epsilon_255"] for f in group[0][attack]]
            entry[attack] = {eps: mean_std([_acc_at(r[attack], eps) for r in group])
                             for eps in epsilons}
        entry["checks"] = attack_checks(group)
        if all("g_shuffle" in r for r in group):
            entry["g_shuffle_delta_acc"] = mean_std([r["g_shuffle"]["delta_acc"] for r in group])
            entry["g_shuffle_max_attention_change"] = max(
                r["g_shuffle"]["max_attention_change"] for r in group)
        summary[model] = entry
    return summary


def _acc_at(rows: Sequence[dict[str, Any]], epsilon_255: float) -> float:
    return next(f["acc"] for f in rows if f["epsilon_255"] == epsilon_255)


def attack_checks(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The sanity checks of an attack evaluation, over every run of one model.

    * ``falls_with_epsilon`` -- in every run, FGSM and PGD accuracy never rise as epsilon
      grows (from the clean accuracy of the attacked images at epsilon 0); FGSM's one
      linearised step is not held to it at the large budget, where it overshoots (a step of
      64/255 leaves the region where the loss is near linear), which is why PGD checks there;
    * ``pgd_at_most_fgsm`` -- in every run, PGD accuracy <= FGSM accuracy at every epsilon;
    * ``large_epsilon_pgd_acc`` -- the highest PGD accuracy of any run at the largest epsilon,
      and ``large_epsilon_near_zero`` whether it is at most :data:`NEAR_ZERO`.

    A failed check means the attack, not the model, is in doubt (gradient masking, too few
    steps); the report shows it beside the numbers.
    """
    largest = max(f["epsilon_255"] for f in runs[0]["pgd"])
    falls, pgd_below = True, True
    for run in runs:
        clean = run["attack"]["clean_acc"]
        for attack in ("fgsm", "pgd"):
            rows = sorted(run[attack], key=lambda f: f["epsilon"])
            accs = [clean] + [f["acc"] for f in rows
                              if attack == "pgd" or f["epsilon_255"] < largest]
            falls &= all(b <= a for a, b in zip(accs, accs[1:]))
        pgd_below &= all(p["acc"] <= _acc_at(run["fgsm"], p["epsilon_255"]) for p in run["pgd"])
    large_acc = max(_acc_at(run["pgd"], largest) for run in runs)
    return {"falls_with_epsilon": falls, "pgd_at_most_fgsm": pgd_below,
            "large_epsilon_255": largest, "large_epsilon_pgd_acc": large_acc,
            "large_epsilon_near_zero": large_acc <= NEAR_ZERO}


def robustness_verdict(runs: Sequence[dict[str, Any]], epsilons_255: Sequence[float]) -> str:
    """A sentence, computed from the PGD numbers, on whether any model is more robust.

    At each budget the model with the highest mean PGD accuracy is called *more robust* only if
    every one of its seeds lies above every seed of every other model (two seeds or more each);
    where seeds overlap, its lead is within the spread between seeds.
    """
    by_model: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_model.setdefault(run["model"], []).append(run)
    if len(by_model) < 2:
        return "One model only: there is nothing to compare its robustness with."
    clear, unclear = [], []
    for eps in epsilons_255:
        accs = {m: [_acc_at(r["pgd"], eps) for r in group] for m, group in by_model.items()}
        ranked = sorted(accs, key=lambda m: -statistics.fmean(accs[m]))
        best, second = ranked[0], ranked[1]
        separated = min(accs[best]) > max(a for m in ranked[1:] for a in accs[m])
        (clear if separated else unclear).append((eps, best, second))
    worst_case = max(_acc_at(r["pgd"], max(epsilons_255)) for r in runs)
    tail = (f" PGD at ε = {_eps(max(epsilons_255))}/255 leaves no run above "
            f"{100 * worst_case:.1f} % accuracy.")
    if min(len(g) for g in by_model.values()) < 2:
        return ("With one seed for some model there is no spread between seeds to tell a lead "
                "from noise, so no model is called more robust." + tail)
    if not clear:
        return ("No model is measurably more robust than the others under PGD: at every ε "
                "some seed of another model reaches a seed of the best one." + tail)
    leads = "; ".join(f"ε = {_eps(eps)}/255: `{best}` (next best `{second}`)"
                      for eps, best, second in clear)
    rest = (f" At ε = {', '.join(_eps(e) for e, _, _ in unclear)}/255 the best model's seeds "
            "overlap another model's." if unclear else "")
    return (f"Under PGD one model is more robust than all others (each of its seeds above every "
            f"seed of every other model) at {leads}." + rest + tail)


def write_report(results: dict[str, Any], out_dir: str | Path, *, test_set: Any = None,
                 runs_dir: str | Path | None = None, figures: bool = True) -> None:
    """Write ``results.json``, ``RESULTS.md`` and (with ``figures``) the PNGs to ``out_dir``.

    ``test_set`` and ``runs_dir`` are needed for ``attention.png`` (it loads each attention
    model's seed-0 weights from its run folder).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results["summary"] = summarize(results["runs"])
    results["robustness_verdict"] = robustness_verdict(
        results["runs"], [round(e * 255, 6) for e in results["study"]["epsilons"]])
    results["references"] = {m: REFERENCES.get(results["study"]["dataset"], {}).get(m, [])
                             for m in results["summary"]}
    written = []
    if figures:
        written += [plot_accuracy(results, out / ACCURACY_PNG),
                    plot_robustness(results, out / ROBUSTNESS_PNG)]
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


def _shuffle(model_summary: dict[str, Any]) -> str:
    """The g-shuffle accuracy change of one model's summary, in points ("–" without one)."""
    if "g_shuffle_delta_acc" not in model_summary:
        return "–"
    mean, std = model_summary["g_shuffle_delta_acc"]
    spread = f" ± {100 * std:.2f}" if len(model_summary["seeds"]) > 1 else ""
    return f"{100 * mean:+.2f}{spread}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def markdown(results: dict[str, Any]) -> str:
    """The ``RESULTS.md`` text of a study."""
    study, env, summary = results["study"], results["environment"], results["summary"]
    top = max(round(e * 255, 6) for e in study["epsilons"])
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
        "of the final weights (no selection by test accuracy). FGSM and PGD at the paper's "
        f"largest budget ε = {_eps(top)}/255 (all budgets under *Robustness*). Δ g-shuffle is "
        "the accuracy change when each image's global feature g is replaced by another image's "
        "before the attention estimators.",
        "",
        "| model | parameters | train time / run | test acc | flip TTA | "
        f"FGSM ε={_eps(top)}/255 | PGD ε={_eps(top)}/255 | Δ g-shuffle (pp) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, s in summary.items():
        n = len(s["seeds"])
        attacks = f"{_pct(s['fgsm'][top], n)} | {_pct(s['pgd'][top], n)}"
        lines.append(f"| `{model}` | {s['parameters']:,} | {_minutes(s['train_time_s'][0])} | "
                     f"{_pct(s['test_acc'], n)} | {_pct(s['test_acc_tta'], n)} | {attacks} | "
                     f"{_shuffle(s)} |")
    lines += robustness_markdown(results)
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
              f"FGSM {_eps(top)}/255 | PGD {_eps(top)}/255 | Δ g-shuffle (pp) | "
              "max Δ attention |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        g = r.get("g_shuffle")
        shuffle = (f"{100 * g['delta_acc']:+.2f} | {g['max_attention_change']:.1e}" if g
                   else "– | –")
        attacks = (f"{100 * _acc_at(r['fgsm'], top):.2f} | "
                   f"{100 * _acc_at(r['pgd'], top):.2f}")
        lines.append(f"| `{r['model']}` | {r['seed']} | {r['epochs']} | "
                     f"{_minutes(r['train_time_s'])} | {r['train_images_per_s']:,.0f} | "
                     f"{100 * r['test_acc']:.2f} | {100 * r['test_acc_tta']:.2f} | {attacks} | "
                     f"{shuffle} |")
    localization = [(r, row) for r in results["runs"] for row in r.get("localization", [])]
    if localization:
        lines += ["", "## Localisation (object masks)", "",
                  "Jaccard (half range): the map cut at half its peak; top-k: its top pixels, "
                  "as many as the object has; best (k): the best fixed share k of the image, "
                  "chosen on these images; AUC: area under Jaccard against k. `chance` is the "
                  "exact expected score of a random region of the same size "
                  "(docs/LOCALISATION.md).", "",
                  "| model | seed | method | level | mass in mask | pointing game | "
                  "Jaccard (half range) | Jaccard top-k | best (k) | AUC |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| `{r['model']}` | {r['seed']} | {row['method']} | {row['level'] or '–'} | "
                  f"{row['mass_in_mask']:.3f} | {row['pointing_game']:.3f} | "
                  f"{_score(row.get('jaccard'))} | {_score(row.get('jaccard_topk'))} | "
                  f"{_score(row.get('jaccard_best'))} ({_score(row.get('best_fraction'), 2)}) | "
                  f"{_score(row.get('jaccard_auc'))} |" for r, row in localization]
    if results.get("figures"):
        lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in results["figures"]]
    return "\n".join(lines) + "\n"


#: The comparisons that say what attention adds: (model, control) pairs of the README summary.
GAPS = ((BACKBONE_CONTROL, PAPER_MODELS[0]), ("vgg-att3-concat-pc", BACKBONE_CONTROL),
        ("vgg-att3-concat-dp", BACKBONE_CONTROL))


def readme_summary(results: dict[str, Any]) -> str:
    """A study's results for the README: one row per model (test accuracy, FGSM / PGD at each
    budget, the g-shuffle change), the accuracy gaps of :data:`GAPS` and the robustness
    verdict, all computed from ``results.json`` (``tools/write_generated_docs.py``)."""
    summary = results["summary"]
    first = next(iter(summary.values()))
    # budgets in grey levels; read back from results.json they are strings ("8.0")
    budgets = [e for e in first["pgd"]
               if float(e) < results["study"]["large_epsilon"] * 255 - 1e-6]
    lines = ["| model | parameters | test acc (%) | "
             + " | ".join(f"FGSM / PGD ε = {_eps(float(e))}/255" for e in budgets)
             + " | Δ acc, g shuffled (pp) |",
             "|---|---:|---:|" + "---:|" * len(budgets) + "---:|"]
    for model, s in summary.items():
        attacks = " | ".join(f"{100 * s['fgsm'][e][0]:.1f} / {100 * s['pgd'][e][0]:.1f}"
                             for e in budgets)
        lines.append(f"| `{model}` | {s['parameters']:,} | "
                     f"{_pct(s['test_acc'], len(s['seeds']))} | {attacks} | {_shuffle(s)} |")
    gaps = [f"`{a}` − `{b}`: {100 * (summary[a]['test_acc'][0] - summary[b]['test_acc'][0]):+.2f}"
            for a, b in GAPS if a in summary and b in summary]
    if gaps:
        lines += ["", "Gaps in mean test accuracy (percentage points): " + "; ".join(gaps) + "."]
    lines += ["", f"Attacks on {first['attack_images']:,} test images, mean over seeds. "
              + results["robustness_verdict"]]
    return "\n".join(lines) + "\n"


def robustness_markdown(results: dict[str, Any]) -> list[str]:
    """The *Robustness* section of ``RESULTS.md``: FGSM and PGD at every budget on the same
    images, the sanity checks of the attacks and the computed verdict."""
    study, summary = results["study"], results["summary"]
    first = next(iter(summary.values()))
    budgets = list(first["pgd"])
    images, total = first["attack_images"], study["test_images"]
    which = (f"all {total:,} test images" if images == total else
             f"the same {images:,} of the {total:,} test images (a seeded random subset)")
    lines = [
        "", "## Robustness", "",
        f"FGSM (one step ε·sign(∇ₓ loss)) and PGD (L∞, {_pgd_steps(results)} projected sign "
        "steps of 2.5·ε/steps from a uniform random start; Madry et al. 2018) on "
        f"{which}, perturbing pixels and clipping to [0, 1], model in eval mode. `clean` is "
        "the accuracy on those images. The last budget is far beyond the others: any model "
        "whose gradients the attack can follow falls to about 0 % under PGD there (FGSM's "
        "single step overshoots at such a budget and is shown, not checked).",
        "",
        "| model | clean | " + " | ".join(f"FGSM {_eps(e)}/255" for e in budgets) + " | "
        + " | ".join(f"PGD {_eps(e)}/255" for e in budgets) + " |",
        "|---|---:|" + "---:|" * (2 * len(budgets)),
    ]
    for model, s in summary.items():
        n = len(s["seeds"])
        lines.append(f"| `{model}` | {_pct(s['attack_clean_acc'], n)} | "
                     + " | ".join(_pct(s["fgsm"][e], n) for e in budgets) + " | "
                     + " | ".join(_pct(s["pgd"][e], n) for e in budgets) + " |")
    lines += ["", "Sanity checks of the attacks (every run of the model):", "",
              "| model | accuracy falls as ε grows | PGD ≤ FGSM at every ε | "
              f"PGD at {_eps(budgets[-1])}/255 ≤ {100 * NEAR_ZERO:g} % |",
              "|---|---|---|---|"]
    for model, s in summary.items():
        c = s["checks"]
        lines.append(f"| `{model}` | {_yes(c['falls_with_epsilon'])} | "
                     f"{_yes(c['pgd_at_most_fgsm'])} | {_yes(c['large_epsilon_near_zero'])} "
                     f"(highest run {100 * c['large_epsilon_pgd_acc']:.1f} %) |")
    return lines + ["", results["robustness_verdict"]]


def _score(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"  # NaN != NaN


def _pgd_steps(results: dict[str, Any]) -> int:
    return results["runs"][0]["attack"]["pgd_steps"]


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


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


def plot_robustness(results: dict[str, Any], path: Path) -> Path:
    """Accuracy against the budget, one colour per model: FGSM solid, PGD dashed (ε = 0: the
    clean accuracy of the attacked images; the large sanity budget is left out of the axis)."""
    fig = _figure(6.0, 4.0)
    ax = fig.subplots()
    colours = iter(["tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
                    "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "black"])
    budgets = [round(e * 255, 6) for e in results["study"]["epsilons"]]
    for model, s in results["summary"].items():
        colour = next(colours)
        for attack, style in (("fgsm", "-"), ("pgd", "--")):
            accs = [s["attack_clean_acc"][0]] + [s[attack][e][0] for e in budgets]
            ax.plot([0.0] + budgets, [100 * a for a in accs], marker="o", markersize=3,
                    linestyle=style, color=colour, label=model if attack == "fgsm" else None)
    ax.set(xlabel="ε (grey levels of 255)", ylabel="accuracy on the attacked images (%)",
           title="FGSM (solid) and PGD (dashed), mean over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def plot_study_attention(results: dict[str, Any], test_set: Any, runs_dir: Path,
                         path: Path) -> Path | None:
    """The same test images (one per class) with each attention model's maps (seed 0, or its
    first seed) and Grad-CAM of the baseline ``vgg`` if it is in the study."""
    from ..maps.viz import (  # matplotlib: only when drawn
        _class_name,
        _show,
        overlay_attention,
        predict,
        to_rgb_image,
    )

    first_seed = {}
    for run in results["runs"]:
        first_seed.setdefault(run["model"], run["seed"])
    loaded = {m: load_model(runs_dir / run_name(m, s))[0] for m, s in first_seed.items()}
    indices = one_per_class(test_set.labels, ATTENTION_IMAGES)
    x = normalize(test_set.images[indices], test_set.mean, test_set.std)
    columns: list[tuple[str, Any]] = []
    for name, model in loaded.items():
        _, maps = predict(model, x)
        for position, level_maps in enumerate(maps):
            layer = level_layer_name(model, position)
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

