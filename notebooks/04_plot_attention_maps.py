# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     notebook_metadata_filter: accelerator,colab,-widgets
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4 · Where does the trained model look? Plotting attention maps
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/attn-lib/attn-lib/blob/main/notebooks/04_plot_attention_maps.ipynb)
#
# The second claim of [*Learn To Pay Attention*](https://arxiv.org/abs/1804.02391) (Jetley et
# al., ICLR 2018; Sec. 5.2) is that attention learned from class labels alone ends up on the
# object. The model scores each position of a feature grid, normalises the scores over the
# image and classifies from the weighted sum, so the weights $a_i$ are a map of where it looks:
#
# $$c_i = \langle u,\ l_i + g \rangle \ \ (\text{pc}) \quad\text{or}\quad
#   c_i = \langle l_i,\ g \rangle \ \ (\text{dp}), \qquad
#   a_i = \frac{\exp(c_i)}{\sum_{j=1}^{n} \exp(c_j)} \ \ \text{(Eq. 1)}, \qquad
#   g_a = \sum_{i=1}^{n} a_i\, l_i \ \ \text{(Eq. 2)}$$
#
# This notebook draws those maps and then measures them:
#
# 1. each level's map on one image, a grid across images, right and wrong predictions;
# 2. an interactive explorer;
# 3. the learned attention beside Grad-CAM of the paper's baseline;
# 4. a localisation score on data whose object masks are known.
#
# **Which models.** Each Colab notebook runs on its own machine, so this notebook cannot see
# files that notebook 03 wrote on another one; Google Drive is how 03's runs reach it (set
# `USE_DRIVE = True` in both). When it finds 03's runs it uses them. Otherwise, for example on
# a fresh runtime, it uses the trained weights and the CIFAR-10 sample images that ship with
# attn-lib, and **trains nothing**: every cell runs in seconds, no GPU needed.

# %% [markdown]
# ## Setup
#
# On Colab the next cell installs the attn-lib release this notebook was written for
# (`ATTN_LIB_VERSION`, the one place to change it), keeping Colab's torch, and stops with pip's
# message if the install fails; elsewhere it uses the installed package.

# %%
ATTN_LIB_VERSION = "0.1.0"
REPOSITORY = "https://github.com/attn-lib/attn-lib"

import importlib
import subprocess
import sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    spec = f"attn-lib @ git+{REPOSITORY}@v{ATTN_LIB_VERSION}"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        print(pip.stdout[-3000:], pip.stderr[-3000:], sep="\n")
        raise RuntimeError(f"pip could not install {spec} (exit code {pip.returncode}); "
                           "its message is printed above")
    importlib.invalidate_caches()

# %matplotlib inline

import dataclasses
import json
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import display
from matplotlib import cm, colors

import attn_lib
from attn_lib.data import load_dataset, load_samples, normalize, one_per_class
from attn_lib.maps.explorer import attention_explorer
from attn_lib.maps.gradcam import gradcam_layers
from attn_lib.maps.localize import format_table, localization_scores, pointing_game
from attn_lib.maps.viz import LEVEL_LAYERS, overlay_attention, plot_attention_grid, to_rgb_image
from attn_lib.study.scales import REFERENCE_NOTE, REFERENCES

if attn_lib.__version__ != ATTN_LIB_VERSION:
    message = (f"this notebook was written for attn-lib {ATTN_LIB_VERSION}, "
               f"but {attn_lib.__version__} is imported")
    if IN_COLAB:
        raise RuntimeError(f"{message}; restart the session (Runtime -> Restart session) and "
                           "run the notebook again")
    print("warning:", message)
torch.manual_seed(0)
print(f"attn-lib {attn_lib.__version__}, torch {torch.__version__}")

# %% [markdown]
# ## The models: notebook 03's runs, or the shipped weights
#
# Set `USE_DRIVE` as in notebook 03. The next cell looks in `RUNS` for the newest run of each
# model that notebook 03 trains (the attention model and the paper's baseline `vgg`, on the same
# data set) and loads their best checkpoints; if it does not find both, it loads the shipped
# CIFAR-10 weights instead. The images are the 100 CIFAR-10 test images that ship with attn-lib
# (10 per class), or, for a model trained on other data, 100 test images of that data set.

# %%
USE_DRIVE = False  # True on Colab if notebook 03 kept its runs in Google Drive

MODEL, BASELINE = "vgg-att3-concat-pc", "vgg"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if IN_COLAB and USE_DRIVE:
    from google.colab import drive

    drive.mount("/content/drive")
    RUNS = Path("/content/drive/MyDrive/attn-lib/runs")
else:
    RUNS = Path("runs")


def newest_run(model_name, dataset=None):
    """The newest run folder in RUNS with a best.pt of ``model_name`` (on ``dataset``), or None."""
    found = []
    for config_file in RUNS.glob("*/config.json"):
        config = json.loads(config_file.read_text())
        if (config["model"] == model_name and (config_file.parent / "best.pt").is_file()
                and dataset in (None, config["dataset"])):
            found.append(config_file.parent)
    return max(found, key=lambda run: (run / "best.pt").stat().st_mtime, default=None)


run = newest_run(MODEL)
baseline_run = newest_run(BASELINE, json.loads((run / "config.json").read_text())["dataset"]
                          ) if run else None
if run and baseline_run:
    SOURCE = "notebook 03"
    model, data_info = attn_lib.load_model(run / "best.pt", map_location=DEVICE)
    baseline, _ = attn_lib.load_model(baseline_run / "best.pt", map_location=DEVICE)
    print(f"using notebook 03's runs: {run} and {baseline_run}")
else:
    SOURCE = "shipped weights"
    model = attn_lib.build_model(MODEL, weights="cifar10").to(DEVICE)
    baseline = attn_lib.build_model(BASELINE, weights="cifar10").to(DEVICE)
    data_info = model.weights_info
    print(f"no runs of notebook 03 in {RUNS}: using the shipped weights")

DATASET = data_info["dataset"]
if DATASET == "cifar10":
    images = load_samples()
else:
    images = load_dataset(DATASET, split="test", limit=100)
# Normalise with the statistics the model was trained with.
images = dataclasses.replace(images, mean=tuple(data_info["mean"]), std=tuple(data_info["std"]))
classes, mean, std = data_info["classes"], images.mean, images.std
x_all, y_all = normalize(images.images, mean, std), images.labels
print(f"{model.name} and {baseline.name} trained on {DATASET}; {len(images)} test images")

# %% [markdown]
# ## How good are these models?
#
# Accuracy on the images at hand (100 images: a rough figure, each image is 1 %), the accuracy
# recorded with the models on the whole test split, and the numbers they are compared with in
# the literature, each with its source (the authors' CIFAR-10 figures are comments in their run
# scripts; the paper's Table 1 cells confirmed here are on CIFAR-100). The shipped weights are
# narrow (1/16 width) and trained for a few epochs on a CPU, so they are expected to fall well
# short of the references, which come from full-width models trained for 300 epochs.

# %%
def recorded_accuracy(network):
    """Test accuracy recorded with the model, and where the record comes from."""
    if SOURCE == "shipped weights":
        entry = next(e for e in attn_lib.list_weights(network.name)
                     if e["weights"] == network.weights_info["weights"])
        how = entry["trained"]
        here = (predictions[network.name] == y_all).float().mean().item()
        if entry.get("sample_acc") is not None:  # recorded when the weights were shipped
            # The same images, model and normalisation give the same accuracy (within one
            # image, for a GPU's different rounding).
            assert abs(here - entry["sample_acc"]) <= 0.011, (here, entry["sample_acc"])
        return entry["test_acc"], (f"the whole test split; shipped weights: width "
                                   f"{entry['width']}, {how['epochs']} epochs, "
                                   f"{how['hardware']} {how.get('date', '')}".rstrip())
    folder = run if network is model else baseline_run
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    limit = json.loads((folder / "config.json").read_text())["recipe"]["limit_test"]
    return max(r["test_acc"] for r in rows), (
        f"{f'{limit} test images' if limit else 'the whole test split'}; best epoch of "
        f"notebook 03's run {folder.name}")


with torch.no_grad():
    predictions = {n.name: n(x_all.to(DEVICE)).logits.argmax(1).cpu() for n in (model, baseline)}
for network in (model, baseline):
    here = (predictions[network.name] == y_all).float().mean().item()
    recorded, where = recorded_accuracy(network)
    print(f"{network.name}: {here:.0%} on these {len(images)} images; {recorded:.1%} on {where}")
    for ref in REFERENCES.get(DATASET, {}).get(network.name, []):
        print(f"    reference {ref['acc']:.2%}: {ref['kind']}, {ref['source']}")
print(REFERENCE_NOTE)
print("The paper's Table 1 (the cells confirmed here are on CIFAR-100, not CIFAR-10):")
for name, refs in REFERENCES["cifar100"].items():
    for ref in refs:
        if ref["kind"].startswith("paper"):
            print(f"    {name}: {ref['acc']:.2%} ({ref['kind']}; {ref['source']})")

# %% [markdown]
# ## One image, every level
#
# `overlay_attention` upsamples a map to the image's size and blends it over the image. **Each
# map is min-max scaled on its own** (the colour bar's ends are that map's lowest and highest
# weight), so colours do not compare across levels or images; a softmax map's raw values
# (about 1/1024 per position at level 1) mean little on their own. The map sizes follow from the
# levels: 32×32 at conv7, 16×16 at conv10, 8×8 at conv13.

# %%
shown = one_per_class(y_all, 6)
x, y = x_all[shown], y_all[shown]
with torch.no_grad():
    out = model(x.to(DEVICE))
image = x[0]
predicted = out.logits[0].argmax().item()
fig, axes = plt.subplots(1, 1 + len(out.attention), figsize=(2.7 * (1 + len(out.attention)), 3),
                         layout="constrained")
axes[0].imshow(to_rgb_image(image, mean, std))  # un-normalised, CHW -> HWC
axes[0].set_title(f"true: {classes[y[0]]}\npredicted: {classes[predicted]}", fontsize=9)
for ax, level, maps in zip(axes[1:], model.levels, out.attention):
    ax.imshow(overlay_attention(image, maps[0], alpha=0.5, mean=mean, std=std))
    ax.set_title(f"level {level} ({LEVEL_LAYERS[level]}), {maps.shape[-2]}×{maps.shape[-1]} map",
                 fontsize=9)
for ax in axes:
    ax.axis("off")
bar = fig.colorbar(cm.ScalarMappable(colors.Normalize(0, 1), "jet"), ax=axes[1:], ticks=[0, 1],
                   shrink=0.8)
bar.ax.set_yticklabels(["lowest of\nthis map", "highest of\nthis map"])
plt.show()

# %% [markdown]
# ## A grid across images and levels
#
# One row per image, one image of each of six classes: the image with its true class and the
# prediction (green when right, red when wrong), then the three levels, each map again scaled on
# its own.

# %%
display(plot_attention_grid(model, x, y, classes, mean, std))

# %% [markdown]
# ## Right and wrong predictions
#
# Do the maps look different when the model errs? Some of each kind, from the images at hand.
# Look for whether the wrong ones attend to something other than the object, or spread their
# attention over the background.

# %%
correct = (predictions[model.name] == y_all).nonzero().flatten()
wrong = (predictions[model.name] != y_all).nonzero().flatten()
print(f"{len(correct)} right, {len(wrong)} wrong out of {len(images)}")
assert len(correct) + len(wrong) == len(images)
for title, indices in (("right", correct[:3]), ("wrong", wrong[:3])):
    if len(indices) == 0:
        print(f"no {title} predictions to show")
        continue
    fig = plot_attention_grid(model, x_all[indices], y_all[indices], classes, mean, std)
    fig.suptitle(f"{title} predictions")
    display(fig)

# %% [markdown]
# ## Explore
#
# Pick a class, an image, a level (or Grad-CAM) and the heatmap's opacity. In a live notebook
# this is an interactive widget; a saved copy (on GitHub) cannot run it, so the figure after
# it shows the same maps for the first images.

# %%
display(attention_explorer(model, images, gradcam=True))

# %%
attention_explorer(model, images, gradcam=True, interactive=False, static_images=3)

# %% [markdown]
# ## Learned attention beside Grad-CAM of the baseline
#
# The paper's baseline `vgg` has no attention, but Grad-CAM (Selvaraju et al., 2017) shows
# where the evidence for a class lies in one of its conv layers. The baseline pools after every
# block, so its conv7, conv10 and conv13 are 8×8, 4×4 and 2×2 grids: at conv13 Grad-CAM can
# only say which quarter of the image holds the evidence. The last three columns show the
# baseline's Grad-CAM at each of those layers for the true class, beside the attention model's
# maps; again every map is scaled on its own.

# %%
cams = gradcam_layers(baseline, x.to(DEVICE), y, layers=(1, 2, 3), upsample=False)
print("Grad-CAM grids of the baseline:", [f"{c.shape[-2]}×{c.shape[-1]}" for c in cams])
if x.shape[-1] == 32:
    assert [c.shape[-1] for c in cams] == [8, 4, 2]
with torch.no_grad():
    base_predicted = baseline(x.to(DEVICE)).logits.argmax(1).cpu()
columns = [(f"attention {lv}\n{LEVEL_LAYERS[lv]}", maps) for lv, maps in
           zip(model.levels, out.attention)]
columns += [(f"Grad-CAM {baseline.name}\n{LEVEL_LAYERS[lv]}", cam) for lv, cam in
            zip((1, 2, 3), cams)]
rows = 4
fig, axes = plt.subplots(rows, 1 + len(columns), figsize=(1.9 * (1 + len(columns)), 2.1 * rows),
                         layout="constrained")
for i in range(rows):
    axes[i, 0].imshow(to_rgb_image(x[i], mean, std))
    axes[i, 0].set_title(f"{classes[y[i]]}\nvgg says {classes[base_predicted[i]]}", fontsize=8)
    for ax, (title, maps) in zip(axes[i, 1:], columns):
        ax.imshow(overlay_attention(x[i], maps[i].cpu(), alpha=0.5, mean=mean, std=std))
        if i == 0:
            ax.set_title(title, fontsize=8)
for ax in axes.flat:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## How well do the maps localise the object?
#
# Pictures can be cherry-picked; a score cannot. CIFAR-10 has no object masks, but the
# library's synthetic data set does: one shape to classify among distractors, covering 6–15 %
# of the image. attn-lib ships the attention model trained on it
# (`build_model(..., weights="synthetic")`), so the scores below need no training either.
#
# For each map: the share of its mass on the object (`mass_in_mask`), how often its peak lands
# on the object (`pointing_game`) and the overlap with the object of the map cut at half its
# range (min-max scaled, as it is drawn; `jaccard`). The `gradcam` rows answer the same
# question with Grad-CAM of the same model, and a uniform map gives the chance level, the last
# row.

# %%
shapes_model = attn_lib.build_model(MODEL, weights="synthetic").to(DEVICE)
shapes_info = shapes_model.weights_info
shapes = load_dataset("synthetic", split="test", limit=500)
shapes = dataclasses.replace(shapes, mean=tuple(shapes_info["mean"]),
                             std=tuple(shapes_info["std"]))
table = localization_scores(shapes_model, shapes, gradcam=True)
print(format_table(table))

# %% [markdown]
# Read the `attention` rows against the `uniform` row: scores above it mean the maps
# concentrate on the object rather than on the clutter. The next cell names the level that
# localises best in this table (for this model; another training run may rank the levels
# differently) and checks two things: chance equals the objects' average area, inside the data
# module's 6–15 %, and the best level beats chance, as any map that localises at all must.

# %%
attention_rows = [r for r in table if r.method == "attention"]
best = max(attention_rows, key=lambda r: r.pointing_game)
chance = table[-1]
print(f"best level: {best.level} ({LEVEL_LAYERS[best.level]}), pointing game "
      f"{best.pointing_game:.2f}, mass in mask {best.mass_in_mask:.2f}; chance "
      f"{chance.pointing_game:.2f} (accuracy {best.accuracy:.0%} on {best.images} images)")
assert chance.method == "uniform" and 0.06 <= chance.mass_in_mask <= 0.15
assert best.pointing_game > chance.pointing_game

# %% [markdown]
# The same model's maps on a few of these images: the object is the shape that decides the
# class (its name is the true label); everything else is clutter.

# %%
x_shapes = normalize(shapes.images[:4], shapes.mean, shapes.std)
display(plot_attention_grid(shapes_model, x_shapes, shapes.labels[:4], shapes_info["classes"],
                            shapes.mean, shapes.std))

# %% [markdown]
# ## Exercises
#
# Solutions are in the appendix at the end; try first.
#
# 1. **Least sure.** Find the image among those at hand on which the attention model is least
#    confident (lowest top probability) and draw its maps.
# 2. **A map that looks at the middle.** Many photos have their object in the centre. Score a
#    fixed map that peaks at the image centre (the same for every image) on the synthetic
#    shapes with `pointing_game`. Is it better than chance? Why is that a good property of the
#    data set?
# 3. **Per class.** With the best level of the table, which shape class is localised worst by
#    the pointing game?

# %% [markdown]
# ## What you learned
#
# * An attention map is the model's own account of which positions fed its decision; drawn on
#   the image it shows where each level looks, at that level's resolution (32×32, 16×16, 8×8).
# * Each map is scaled on its own for display, so compare shapes of maps, not colours across
#   them.
# * Grad-CAM asks a different question (where the evidence for a class lies in a layer) and, in
#   the paper's baseline, has only coarse grids to answer it.
# * With object masks, "it looks at the object" becomes a number, to read against the chance
#   level of a uniform map; the levels of one model can differ a lot.

# %% [markdown]
# ## Appendix: solutions
#
# **1.** The top softmax probability of each image; the smallest one marks the least
# confident prediction.

# %%
with torch.no_grad():
    confidence = model(x_all.to(DEVICE)).logits.softmax(1).max(1).values.cpu()
unsure = int(confidence.argmin())
print(f"image {unsure}: top probability {confidence[unsure]:.0%}")
assert confidence[unsure] == confidence.min()
display(plot_attention_grid(model, x_all[[unsure]], y_all[[unsure]], classes, mean, std))

# %% [markdown]
# **2.** A Gaussian bump at the centre, the same for every image. The synthetic objects are
# placed so that no pixel is on the object in more than about a quarter of the images, so a
# centre-biased map scores low: a high pointing game on this data cannot come from a centre
# bias.

# %%
side = shapes.image_size
grid = torch.arange(side, dtype=torch.float32) - (side - 1) / 2
bump = torch.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * 4.0**2))
centre_maps = bump.expand(len(shapes), 1, side, side)
centre_score = pointing_game(centre_maps, shapes.masks).mean().item()
print(f"centre map: pointing game {centre_score:.2f}; chance {chance.pointing_game:.2f}")
assert centre_score < 0.3

# %% [markdown]
# **3.** The pointing game of the best level, per true class.

# %%
with torch.no_grad():
    shape_maps = shapes_model(normalize(shapes.images, shapes.mean, shapes.std).to(DEVICE))
hits = pointing_game(shape_maps.attention[shapes_model.levels.index(best.level)].cpu(),
                     shapes.masks)
per_class = {name: hits[shapes.labels == k].mean().item()
             for k, name in enumerate(shapes_info["classes"])}
for name, score in sorted(per_class.items(), key=lambda item: item[1]):
    print(f"{name:<10}{score:.2f}")
assert abs(sum(hits.tolist()) / len(hits) - best.pointing_game) < 1e-4
