# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: cellView,jupyter,-all
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
# 1. each level's map on one image, a grid across images, right and wrong predictions, and
#    the `dp` model's maps beside the `pc` model's;
# 2. an interactive explorer;
# 3. the learned attention beside Grad-CAM of the backbone control `vgg-noatt` (the attention
#    model's backbone without attention) and of the paper's baseline `vgg`;
# 4. contribution maps: what each position added to a class score, exactly;
# 5. a localisation score on data whose object masks are known.
#
# A map of the weights $a_i$ says how much each position's features enter the descriptor
# $g_a$, not how much each position pushed the decision: that also depends on what the
# classifier makes of the features there (notebook 02 showed that the length of $l_i$ counts).
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
from attn_lib.maps.gradcam import gradcam_layers, upsample_maps
from attn_lib.maps.localize import format_table, localization_scores, pointing_game
from attn_lib.maps.viz import (
    MapColumn,
    overlay_attention,
    plot_attention_grid,
    plot_map_columns,
    to_rgb_image,
)
from attn_lib.models import LEVEL_LAYERS
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
# model that notebook 03 trains (the attention model, the backbone control `vgg-noatt` and the
# paper's baseline `vgg`, on the same data set) and loads their final weights (`last.pt`); if
# it does not find all three, it loads the shipped CIFAR-10 weights instead. The shipped
# weights were trained on a JPEG (quality 75) copy of CIFAR-10. The `dp` model always comes
# from the shipped weights, when the data set is CIFAR-10. The images are the 100 CIFAR-10 test
# images that ship with attn-lib (10 per class), or, for models trained on other data, 100 test
# images of that data set.

# %%
USE_DRIVE = False  # True on Colab if notebook 03 kept its runs in Google Drive

MODEL, CONTROL, BASELINE, DP = "vgg-att3-concat-pc", "vgg-noatt", "vgg", "vgg-att3-concat-dp"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if IN_COLAB and USE_DRIVE:
    from google.colab import drive

    drive.mount("/content/drive")
    RUNS = Path("/content/drive/MyDrive/attn-lib/runs")
else:
    RUNS = Path("runs")


def newest_run(model_name, dataset=None):
    """The newest run folder in RUNS with a last.pt of ``model_name`` (on ``dataset``), or
    None."""
    found = []
    for config_file in RUNS.glob("*/config.json"):
        config = json.loads(config_file.read_text())
        if (config["model"] == model_name and (config_file.parent / "last.pt").is_file()
                and dataset in (None, config["dataset"])):
            found.append(config_file.parent)
    return max(found, key=lambda run: (run / "last.pt").stat().st_mtime, default=None)


run = newest_run(MODEL)
dataset_of_run = json.loads((run / "config.json").read_text())["dataset"] if run else None
runs = {MODEL: run} | {name: newest_run(name, dataset_of_run) if run else None
                       for name in (CONTROL, BASELINE)}
if all(runs.values()):
    SOURCE = "notebook 03"
    models = {name: attn_lib.load_model(folder / "last.pt", map_location=DEVICE)[0]
              for name, folder in runs.items()}
    data_info = attn_lib.load_model(run / "last.pt")[1]
    print("using notebook 03's runs:", ", ".join(str(folder) for folder in runs.values()))
else:
    SOURCE = "shipped weights"
    models = {name: attn_lib.build_model(name, weights="cifar10").to(DEVICE)
              for name in (MODEL, CONTROL, BASELINE)}
    data_info = models[MODEL].weights_info
    print(f"no runs of notebook 03 in {RUNS}: using the shipped weights")
model, control, baseline = models[MODEL], models[CONTROL], models[BASELINE]
DATASET = data_info["dataset"]
dp_model = (attn_lib.build_model(DP, weights="cifar10").to(DEVICE) if DATASET == "cifar10"
            else None)

if DATASET == "cifar10":
    images = load_samples()
else:
    images = load_dataset(DATASET, split="test", limit=100)
# Normalise with the statistics the model was trained with.
images = dataclasses.replace(images, mean=tuple(data_info["mean"]), std=tuple(data_info["std"]))
classes, mean, std = data_info["classes"], images.mean, images.std
x_all, y_all = normalize(images.images, mean, std), images.labels
print(f"{', '.join(models)} trained on {DATASET}; {len(images)} test images"
      + (f"; {DP} from the shipped weights" if dp_model else ""))

# %% [markdown]
# ## How good are these models?
#
# Accuracy on the images at hand (100 images: a rough figure, each image is 1 %), the accuracy
# recorded with the models' final weights on the test split, and the numbers they are compared
# with in the literature, each with its source (the authors' CIFAR-10 figures are comments in
# their run scripts, for a model that projects $g$ down rather than $l$ up as here; the paper's
# Table 1 cells confirmed here are on CIFAR-100). The printed width and epochs say how the
# weights were trained; models narrower or trained for fewer epochs than the references'
# full-width 300-epoch runs are expected to fall short of them.

# %%
def recorded_shipped(network):
    """Test accuracy recorded with shipped weights, and how they were trained."""
    entry = next(e for e in attn_lib.list_weights(network.name)
                     if e["weights"] == network.weights_info["weights"])
    how = entry["trained"]
    here = (predictions[network.name] == y_all).float().mean().item()
    if entry.get("sample_acc") is not None and DATASET == entry["dataset"]:
        # The same images, model and normalisation give the same accuracy (within one image,
        # for a GPU's different rounding): a check that the right weights and images are used.
        assert abs(here - entry["sample_acc"]) <= 0.011, (here, entry["sample_acc"])
    return entry["test_acc"], (f"the whole test split; shipped weights: width "
                               f"{entry['width']:g}, {how['epochs']} epochs, "
                               f"{how['hardware']} {how.get('date', '')}".rstrip())


def recorded_accuracy(network):
    """Test accuracy recorded with the model's final weights, and where it comes from."""
    if SOURCE == "shipped weights":
        return recorded_shipped(network)
    folder = runs.get(network.name)
    if folder is None:  # the dp model, shipped
        return recorded_shipped(network)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    limit = json.loads((folder / "config.json").read_text())["recipe"]["limit_test"]
    return rows[-1]["test_acc"], (
        f"{f'{limit} test images' if limit else 'the whole test split'}; final epoch of "
        f"notebook 03's run {folder.name}")


networks = [model, control, baseline] + ([dp_model] if dp_model else [])
with torch.no_grad():
    predictions = {n.name: n(x_all.to(DEVICE)).logits.argmax(1).cpu() for n in networks}
for network in networks:
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
# ## Level 1 and the image border
#
# Level 1's map can light up parts of the image's edge, away from the object (the shipped
# weights' maps do, in the figure above). conv1 … conv7 pad their input with zeros, so a
# position near the edge sees part of a frame of zeros that interior positions never see: each
# 3×3 convolution reaches one pixel further, seven of them reach seven pixels. Those
# positions' features differ from the interior's in the same way on every image, and `u`
# scores them differently too. On an image of one flat colour (the data set's mean: zero after
# normalisation), where nothing but the padding tells one position from another, the map is
# constant in the interior and changes only within reach of the edge; the cell checks both.
# It also prints whether, averaged over all the images at hand, the map's highest weight lies
# within two positions of the edge, whatever the images show.

# %%
reach = sum(1 for m in model.backbone.blocks[:3].modules() if isinstance(m, torch.nn.Conv2d))
with torch.no_grad():
    level1 = model(x_all.to(DEVICE)).attention[0].cpu()  # (N, 1, 32, 32) for 32×32 images
    flat_map = model(torch.zeros_like(x_all[:1]).to(DEVICE)).attention[0].cpu()[0, 0]
mean_map = level1.mean(0)[0]
interior = flat_map[reach:-reach, reach:-reach]
spread_inside = ((interior.max() - interior.min()) / interior.mean()).item()
spread_edge = ((flat_map - interior.mean()).abs().max() / interior.mean()).item()
outer_ring = torch.ones_like(mean_map, dtype=torch.bool)
outer_ring[2:-2, 2:-2] = False  # the two outermost rows and columns
peak_on_ring = bool(outer_ring.flatten()[mean_map.argmax()])
fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.7), layout="constrained")
for ax, shown, title in zip(axes, (flat_map, mean_map),
                            ("one flat mean-colour image", f"mean over {len(level1)} images")):
    bar = ax.imshow(shown * shown.numel(), cmap="viridis")
    fig.colorbar(bar, ax=ax, label="weight × positions")
    ax.set_title(f"level 1: {title}", fontsize=9)
    ax.axis("off")
plt.show()
print(f"flat image: weights vary by {spread_inside:.1e} (relative) more than {reach} positions "
      f"from the edge, by up to {spread_edge:.0%} within reach of it")
print(f"mean over the images: highest weight within two positions of the edge: {peak_on_ring}")
assert spread_inside < 1e-5 < 1e-3 < spread_edge, "only the padding should vary the flat map"

# %% [markdown]
# Where it does, level 1 spends part of its weight on the frame, whatever the image shows.
# Levels 2 and 3 are padded too, but their positions cover much larger patches of the image,
# of which the frame is a smaller part.
#
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
# Do the maps look different when the model errs? One image of each of several classes that
# the model gets right, and wrong predictions of several classes, from the images at hand.
# Look for whether the wrong ones attend to something other than the object, or spread their
# attention over the background.

# %%
def one_of_each_class(indices, count):
    """The first of ``indices`` of each class, for up to ``count`` classes."""
    chosen, seen = [], set()
    for i in indices.tolist():
        if int(y_all[i]) not in seen:
            chosen.append(i)
            seen.add(int(y_all[i]))
    return torch.tensor(chosen[:count], dtype=torch.long)


is_right = predictions[model.name] == y_all
for title, indices in (("right", is_right.nonzero().flatten()),
                       ("wrong", (~is_right).nonzero().flatten())):
    picked = one_of_each_class(indices, 4)
    print(f"{len(indices)} {title} predictions; shown: "
          f"{[classes[int(y_all[i])] for i in picked]}")
    if len(picked) == 0:
        continue
    assert len(set(y_all[picked].tolist())) == len(picked), "one image per class"
    fig = plot_attention_grid(model, x_all[picked], y_all[picked], classes, mean, std)
    fig.suptitle(f"{title} predictions")
    display(fig)

# %% [markdown]
# ## Side by side: columns of maps
#
# The figures from here on put several kinds of map next to each other, one image per row.
# The library's `plot_map_columns` draws them: the image with its true class, then one overlay
# per column, every map scaled on its own. A map that is zero everywhere (no positive evidence,
# possible for Grad-CAM) is drawn as the bare image and marked "all zero". A column of
# *signed* maps (`MapColumn(..., signed=True)`; their titles end in "±") is drawn red where
# positive and blue where negative, white at zero, on a scale symmetric about zero.

# %%
def draw_columns(images, labels, columns, notes=None):
    """The images with their true classes (and a note each), then ``columns`` of maps."""
    titles = [classes[int(label)] + (f"\n{note}" if notes else "")
              for label, note in zip(labels, notes or [None] * len(labels))]
    return plot_map_columns(images, columns, titles, mean, std)


# %% [markdown]
# ## `dp` beside `pc`
#
# In `pc` models the map does not depend on $g$ (notebook 02); in `dp` models it is computed
# from $\langle l_i, g\rangle$, so each image's own $g$ chooses where to look. Here are both
# models' maps on the same images, and, over all the images at hand, how many positions each
# level's map effectively spreads its weight over. A map spread over nearly all of its
# positions is close to global average pooling, however much structure its min-max-scaled
# picture shows.

# %%
if dp_model is None:
    print(f"no shipped dp weights for {DATASET}: nothing to compare")
else:
    with torch.no_grad():
        dp_out = dp_model(x.to(DEVICE))
    columns = [(f"pc level {lv}\n{LEVEL_LAYERS[lv]}", m[:4]) for lv, m in
               zip(model.levels, out.attention)]
    columns += [(f"dp level {lv}\n{LEVEL_LAYERS[lv]}", m[:4]) for lv, m in
                zip(dp_model.levels, dp_out.attention)]
    says = [f"pc: {classes[a]}, dp: {classes[b]}" for a, b in
            zip(out.logits[:4].argmax(1).tolist(), dp_out.logits[:4].argmax(1).tolist())]
    display(draw_columns(x[:4], y[:4], columns, says))
    plt.close("all")
    # How many positions a map spreads over: 1 / sum(a_i^2) is n for a flat map, 1 for a map
    # on a single position.
    with torch.no_grad():
        all_pc, all_dp = model(x_all.to(DEVICE)), dp_model(x_all.to(DEVICE))
    for level, pc_map, dp_map in zip(model.levels, all_pc.attention, all_dp.attention):
        spread = [(1 / m.flatten(1).pow(2).sum(1)).median().item() for m in (pc_map, dp_map)]
        print(f"level {level} ({pc_map[0, 0].numel()} positions): median effective positions "
              f"pc {spread[0]:.1f}, dp {spread[1]:.1f}")

# %% [markdown]
# ## Explore
#
# Pick a class, an image, a level (or Grad-CAM) and the heatmap's opacity. In a live notebook
# this is an interactive widget; a saved copy (on GitHub) cannot run it, so the figure after
# it shows the same maps for the first images. Its Grad-CAM column is the attention model's
# own Grad-CAM at conv13 for the true class.

# %%
display(attention_explorer(model, images, gradcam=True))

# %%
attention_explorer(model, images, gradcam=True, interactive=False, static_images=3)

# %% [markdown]
# ## Learned attention beside Grad-CAM of the controls
#
# The models without attention have no map of their own, but Grad-CAM (Selvaraju et al., 2017)
# shows where the evidence for a class lies in one of their conv layers: the layer's
# activations weighted by the gradient of the class score, summed over channels and cut at zero.
# `vgg-noatt` has the attention model's backbone, so its conv7, conv10 and conv13 are the same
# 32×32, 16×16 and 8×8 grids as the attention maps: the fairest comparison. The paper's
# baseline `vgg` pools after every block, so its conv7, conv10 and conv13 are 8×8, 4×4 and 2×2
# grids: at conv13 Grad-CAM can only say which quarter of the image holds the evidence. All
# Grad-CAM maps are for the true class.

# %%
def gradcam_columns(network):
    cams = gradcam_layers(network, x.to(DEVICE), y, layers=(1, 2, 3), upsample=False)
    print(f"Grad-CAM grids of {network.name}:", [f"{c.shape[-2]}×{c.shape[-1]}" for c in cams])
    return [(f"Grad-CAM {network.name}\n{LEVEL_LAYERS[lv]}", cam)
            for lv, cam in zip((1, 2, 3), cams)]


attention_columns = [(f"attention {lv}\n{LEVEL_LAYERS[lv]}", maps) for lv, maps in
                     zip(model.levels, out.attention)]
control_columns, baseline_columns = gradcam_columns(control), gradcam_columns(baseline)
if x.shape[-1] == 32:
    assert [c.shape[-1] for _, c in control_columns] == [32, 16, 8]
    assert [c.shape[-1] for _, c in baseline_columns] == [8, 4, 2]
with torch.no_grad():
    says = {n.name: n(x.to(DEVICE)).logits.argmax(1).cpu() for n in (control, baseline)}
notes = [f"{CONTROL}: {classes[a]}\n{BASELINE}: {classes[b]}"
         for a, b in zip(says[CONTROL].tolist(), says[BASELINE].tolist())]
display(draw_columns(x, y, attention_columns + control_columns, notes))
display(draw_columns(x, y, attention_columns + baseline_columns, notes))
plt.close("all")

# %% [markdown]
# **Blank panels.** Grad-CAM keeps only positive evidence: where every position of a layer
# speaks *against* the true class, the map is zero everywhere and there is nothing to draw. It
# can happen even when the model predicts the class, most easily at a coarse layer, where a
# few positions summarise the whole image. The next cell counts such maps and names their
# images.

# %%
for title, maps in control_columns + baseline_columns:
    empty = [classes[y[i]] for i in range(len(x)) if maps[i].max() == 0]
    print(f"{title.replace(chr(10), ' at '):<28} all-zero maps: {len(empty)} {empty}")

# %% [markdown]
# ## What each position added to the decision
#
# An attention map says how much each position's features enter $g_a$; it does not say what
# the classifier concluded from them. At test time the classifier is affine: batch norm with
# its running statistics is a fixed scale and shift, dropout is off, and a linear layer
# follows. So every class score (logit) $k$ splits exactly into a constant plus one term per
# level $s$ and position $i$,
#
# $$\text{logit}_k = b_k + \sum_s \sum_i a^s_i\, \tilde w_k^{s\top} l^s_i,$$
#
# where $l^s_i$ are the local features the estimator averages (after its 1×1 projection),
# $\tilde w_k^s$ the classifier's weights for class $k$ on level $s$'s part of the descriptor,
# each multiplied by batch norm's scale, and $b_k$ what is left: the linear layer's bias and
# batch norm's shift, through the weights. A term is the attention weight times what the
# classifier makes of the features at that position: positive where the position speaks *for*
# class $k$, negative where it speaks against. These **contribution maps** tell "where the
# model looked" (the attention map) from "what it concluded there". `attn_lib.contribution_maps`
# computes them; the next cell also writes the computation out from the model's own modules,
# checks that both agree, and checks the decomposition: the maps summed, plus the constant,
# give the model's logit.

# %%
def contribution_maps_by_hand(network, images, target):
    """The terms a_i w̃_k^T l_i of logit ``target`` (one (N, 1, h, w) map per level) and the
    constant b_k (N,), for an attention model in eval mode."""
    features = network.backbone(images)
    source = features.local if network.attention_position == "before" else features.pooled
    concat = network.aggregation == "concat"
    maps, constant, offset = [], 0.0, 0
    for index, (level, estimator) in enumerate(zip(network.levels, network.estimators)):
        result = estimator(source[level - 1], features.global_)
        local = source[level - 1]
        if estimator.project_local is not None:
            local = estimator.project_local(local)  # the features that g_a averages
        head = network.heads[0 if concat else index]
        norm, linear = head[0], head[-1]
        assert isinstance(norm, torch.nn.BatchNorm1d) and isinstance(linear, torch.nn.Linear)
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        shift = norm.bias - norm.running_mean * scale
        columns = slice(offset, offset + local.shape[1]) if concat else slice(None)
        weights = linear.weight[target][:, columns] * scale[columns]  # w̃_k, (N, C)
        term = result.attention * torch.einsum("nchw,nc->nhw", local.float(), weights)[:, None]
        if estimator.normalize == "sigmoid":  # that g_a is a mean over positions, not a sum
            term = term / term[0, 0].numel()
        share = 1.0 if concat else 1 / len(network.heads)  # indep: the heads' mean
        maps.append(term * share)
        if concat and index + 1 < len(network.levels):
            offset += local.shape[1]
            continue
        constant = constant + share * ((linear.weight @ shift + linear.bias)[target])
    return maps, constant


with torch.no_grad():
    logits = model(x.to(DEVICE)).logits
    predicted_class = logits.argmax(1)
    runner_up = logits.topk(2, dim=1).indices[:, 1]  # the class the model found next likeliest
    parts = {}
    for kind, target in (("predicted", predicted_class), ("runner-up", runner_up)):
        library = attn_lib.contribution_maps(model, x.to(DEVICE), target)
        maps, constant = contribution_maps_by_hand(model, x.to(DEVICE), target)
        for ours, theirs in zip(maps, library.maps):
            assert torch.allclose(ours, theirs, atol=1e-5), "the library computes the same"
        assert torch.allclose(constant, library.bias, atol=1e-5)
        parts[kind] = (library.maps, library.bias)
for (kind, (maps, constant)), target in zip(parts.items(), (predicted_class, runner_up)):
    total = sum(m.flatten(1).sum(1) for m in maps) + constant
    logit = logits.gather(1, target[:, None])[:, 0]
    error = (total - logit).abs().max().item()
    per_level = "  ".join(f"level {lv} {m.flatten(1).sum(1).mean():+.2f}"
                          for lv, m in zip(model.levels, maps))
    print(f"{kind:<9} class: mean logit {logit.mean():+.2f} = {per_level}  constant "
          f"{constant.mean():+.2f}; largest error of the sum {error:.1e}")
    assert error <= 1e-4 * max(1.0, logit.abs().max().item()), "the decomposition must be exact"

# %% [markdown]
# The terms add up to the logit to float rounding, so the maps are not an approximation: they
# are the model's arithmetic, laid out on the image. Below, for four images: the attention
# maps, then the contribution maps for the class the model predicts and for its runner-up
# class (red for, blue against, each map on its own scale symmetric about zero).

# %%
rows = 4
columns = [(f"attention {lv}\n{LEVEL_LAYERS[lv]}", m[:rows]) for lv, m in
           zip(model.levels, out.attention)]
for kind in parts:
    columns += [MapColumn(f"{kind} class\nlevel {lv} ±", m[:rows], signed=True)
                for lv, m in zip(model.levels, parts[kind][0])]
notes = [f"predicted {classes[a]}\nrunner-up {classes[b]}" for a, b in
         zip(predicted_class[:rows].tolist(), runner_up[:rows].tolist())]
display(draw_columns(x[:rows], y[:rows], columns, notes))
plt.close("all")

# %% [markdown]
# Reading them: the printed sums say how much each level adds to the logit on average, and a
# level whose attention map looks focused can add little. Where a place is red in both the
# predicted and the runner-up columns, the model looked there and found evidence for both
# classes; the decision is the difference. And a bright spot of attention can be blue: the
# model weighted that place heavily and found evidence *against* the class there.

# %% [markdown]
# ## How well do the maps localise the object?
#
# Pictures can be cherry-picked; a score cannot. CIFAR-10 has no object masks, but the
# library's synthetic data set does: one shape to classify among distractors, covering 6–15 %
# of the image. attn-lib ships the attention model trained on it
# (`build_model(..., weights="synthetic")`), so the scores below need no training either.
#
# For each map: the share of its mass on the object (`mass_in_mask`), how often its peak lands
# on the object (`pointing_game`), and the Jaccard index (intersection over union) of a region
# the map picks with the object, in three readings:
#
# * `jaccard`: the map min-max scaled (as it is drawn) and cut at half its range;
# * `jaccard_topk`: the map's top $k$ pixels, with $k$ the object's own area in that image, so
#   region and object have the same size and only the map's *ranking* of pixels counts;
# * `jaccard_best` and `jaccard_auc`: the top $k$ pixels for a sweep of fixed fractions of the
#   image: the best mean (at `best_fraction`, chosen on these same images, so an optimistic
#   reading) and the area under the whole curve (nothing chosen).
#
# The rows: the learned `attention` of each level; the `contribution` maps of each level for
# the true class (their positive part: where a position argues for the class); `gradcam` of
# the same model; `chance`, a random region of the same size as each reading's (its exact
# expected score); and `uniform`, a flat map, which is chance for every column but `jaccard`:
# a flat map has no peak, so the half-range cut calls the whole image object.

# %%
shapes_model = attn_lib.build_model(MODEL, weights="synthetic").to(DEVICE)
shapes_info = shapes_model.weights_info
shapes = load_dataset("synthetic", split="test", limit=500)
shapes = dataclasses.replace(shapes, mean=tuple(shapes_info["mean"]),
                             std=tuple(shapes_info["std"]))
table = localization_scores(shapes_model, shapes, gradcam=True)
print(format_table(table))

# %% [markdown]
# Read the `mass_in_mask` and `pointing_game` of the `attention` rows against the `chance`
# row: scores above it mean the maps concentrate on the object rather than on the clutter. The
# next cell names the level that localises best by the pointing game (for this model; another
# training run may rank the levels differently) and checks two things: chance equals the
# objects' average area, inside the data module's 6–15 %, and the best level beats chance, as
# any map that localises at all must.

# %%
attention_rows = [r for r in table if r.method == "attention"]
best = max(attention_rows, key=lambda r: r.pointing_game)
chance = next(r for r in table if r.method == "chance")
print(f"best level: {best.level} ({LEVEL_LAYERS[best.level]}), pointing game "
      f"{best.pointing_game:.2f}, mass in mask {best.mass_in_mask:.2f}; chance "
      f"{chance.pointing_game:.2f} (accuracy {best.accuracy:.0%} on {best.images} images)")
assert 0.06 <= chance.mass_in_mask <= 0.15
assert best.pointing_game > chance.pointing_game

# %% [markdown]
# **Which Jaccard to believe.** The half-range cut decides much before the map is looked at. A
# softmax map is sharply peaked, so the region where it reaches half its range is small,
# whatever it points at, and a small region cannot overlap a larger object by much: the
# Jaccard index of a region of area $b$ with an object of area $m$ is at most
# $\min(b, m)/\max(b, m)$. The next cell measures the area of that region for each kind of
# map, beside the objects' mean area.

# %%
x_masked = normalize(shapes.images, shapes.mean, shapes.std).to(DEVICE)
with torch.no_grad():
    shape_out = shapes_model(x_masked)
shape_cams = gradcam_layers(shapes_model, x_masked, shapes.labels, layers=(1, 2, 3))
object_area = shapes.masks.flatten(1).float().mean().item()
print(f"objects: {object_area:.1%} of the image on average")
for kind, maps_per_level in (("attention", shape_out.attention), ("gradcam", shape_cams)):
    for level, maps in zip((1, 2, 3), maps_per_level):
        up = upsample_maps(maps.cpu().float(), tuple(shapes.masks.shape[-2:])).flatten(1)
        low, high = up.min(1, keepdim=True).values, up.max(1, keepdim=True).values
        region = ((up - low) >= 0.5 * (high - low)) & (high > low)
        print(f"{kind:<10} level {level}: the half-range region covers "
              f"{region.float().mean().item():.1%} of the image")

# %% [markdown]
# The top-$k$ reading gives every map a region of exactly the object's size, so a peaked map
# and a broad one are judged on the same footing: by whether their highest pixels are the
# object's. That is the fair reading, and the `chance` row is what to read it against. By it,
# the best attention level lands several times above chance, and above the same model's best
# Grad-CAM layer, although by the half-range cut it scores below a flat map. The cell checks
# each of these statements against the table.

# %%
def rows_of(method):
    return [r for r in table if r.method == method]


uniform = next(r for r in table if r.method == "uniform")
best_topk = max(rows_of("attention"), key=lambda r: r.jaccard_topk)
best_cam = max(rows_of("gradcam"), key=lambda r: r.jaccard_topk)
for r in rows_of("attention") + rows_of("contribution") + rows_of("gradcam"):
    print(f"{r.method:<13} level {r.level}: top-k Jaccard {r.jaccard_topk:.3f} = "
          f"{r.jaccard_topk / chance.jaccard_topk:4.1f} × chance; half-range {r.jaccard:.3f}")
print(f"chance: top-k Jaccard {chance.jaccard_topk:.3f}; a flat map's half-range Jaccard "
      f"{uniform.jaccard:.3f}")
assert best_topk.jaccard_topk > 3 * chance.jaccard_topk, "several times above chance"
assert best_topk.jaccard_topk > best_cam.jaccard_topk, "above the best Grad-CAM layer"
assert best_topk.jaccard < uniform.jaccard, "below a flat map by the half-range cut"

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
# * An attention map gives the weight with which each position's features enter the attended
#   descriptor, at that level's resolution (32×32, 16×16, 8×8). It says where a level looks,
#   not what the model concluded there: a position's share of a class score also depends on the
#   features at that position. Contribution maps show that share exactly, with its sign.
# * Each map is scaled on its own for display, so compare shapes of maps, not colours across
#   them. Level 1 also weighs the image border, an effect of zero padding seen even on a flat
#   image.
# * Grad-CAM asks a different question (where the evidence for a class lies in a layer). On
#   `vgg-noatt` it has the attention maps' grids; in the paper's baseline only coarse ones, and
#   where no position supports the class it is blank.
# * With object masks, "it looks at the object" becomes a number, to read against chance. A
#   score that depends on where a map is cut (the half-range Jaccard) penalises peaked maps by
#   construction; the top-$k$ Jaccard with $k$ the object's area, against a random region of
#   the same size, does not. The levels of one model can differ a lot.

# %% [markdown]
# ## Appendix: solutions
#
# <details><summary><b>Solution 1</b> (click to open)</summary>
#
# The top softmax probability of each image; the smallest one marks the least confident
# prediction. The check: the least confident image's top probability is below the mean one.
#
# </details>

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution 1: the code
with torch.no_grad():
    confidence = model(x_all.to(DEVICE)).logits.softmax(1).max(1).values.cpu()
unsure = int(confidence.argmin())
print(f"image {unsure}: top probability {confidence[unsure]:.0%} "
      f"(mean over the images: {confidence.mean():.0%})")
assert confidence[unsure] < confidence.mean()
display(plot_attention_grid(model, x_all[[unsure]], y_all[[unsure]], classes, mean, std))

# %% [markdown]
# <details><summary><b>Solution 2</b> (click to open)</summary>
#
# A Gaussian bump at the centre, the same for every image. The synthetic objects are placed so
# that no pixel is on the object in more than about a quarter of the images, so a
# centre-biased map scores low: a high pointing game on this data cannot come from a centre
# bias.
#
# </details>

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution 2: the code
side = shapes.image_size
grid = torch.arange(side, dtype=torch.float32) - (side - 1) / 2
bump = torch.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * 4.0**2))
centre_maps = bump.expand(len(shapes), 1, side, side)
centre_score = pointing_game(centre_maps, shapes.masks).mean().item()
print(f"centre map: pointing game {centre_score:.2f}; chance {chance.pointing_game:.2f}")
assert centre_score < 0.3

# %% [markdown]
# <details><summary><b>Solution 3</b> (click to open)</summary>
#
# The pointing game of the best level, per true class. The check: the per-image hits average
# to the table's score.
#
# </details>

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution 3: the code
with torch.no_grad():
    shape_maps = shapes_model(normalize(shapes.images, shapes.mean, shapes.std).to(DEVICE))
hits = pointing_game(shape_maps.attention[shapes_model.levels.index(best.level)].cpu(),
                     shapes.masks)
per_class = {name: hits[shapes.labels == k].mean().item()
             for k, name in enumerate(shapes_info["classes"])}
for name, score in sorted(per_class.items(), key=lambda item: item[1]):
    print(f"{name:<10}{score:.2f}")
assert abs(sum(hits.tolist()) / len(hits) - best.pointing_game) < 1e-4
