# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
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
# The paper's second claim (Sec. 5.2) is that attention learned from class labels alone ends up
# on the object: it amplifies the relevant parts of the image and suppresses the clutter. This
# notebook looks at the maps of the model trained in notebook 03:
#
# 1. each level's map overlaid on one test image;
# 2. a grid across images and levels;
# 3. correctly and wrongly classified images;
# 4. an interactive explorer (image, level, opacity);
# 5. the learned attention beside Grad-CAM of the plain VGG, and a localisation score.
#
# It loads the checkpoints notebook 03 wrote; when there are none it trains short runs first (5
# epochs per model on a GPU: by the operation-count estimate in notebook 03, some 10–20 minutes on
# a T4 for the two models, not a measurement).

# %% [markdown]
# ## Setup
#
# On Colab this installs `attn-lib` from its repository without touching Colab's torch; elsewhere it
# uses the installed package.

# %%
import sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    # %pip install -q "attn-lib @ git+https://github.com/attn-lib/attn-lib"
    print("installed attn-lib from GitHub")

from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import display

import attn_lib
from attn_lib.data import load_dataset, normalize
from attn_lib.maps.explorer import attention_explorer
from attn_lib.maps.localize import format_table, localization_scores
from attn_lib.maps.viz import overlay_attention, plot_attention_grid, to_rgb_image

# %matplotlib inline
print(f"attn-lib {attn_lib.__version__}, torch {torch.__version__}, "
      f"smoke mode: {attn_lib.smoke_mode()}")

# %% [markdown]
# ## Load the trained models, or train small ones
#
# Set `USE_DRIVE` as in notebook 03 so that this notebook finds its run folders. If a run folder
# has no `best.pt` (notebook 03 not run, or a fresh Colab session without Drive), a short run fills
# it first, with the library's default recipe for the machine: 5 epochs of the `fast` recipe on a
# GPU, the small `cpu` recipe on a CPU, the `smoke` settings in smoke mode.

# %%
USE_DRIVE = False  # True on Colab if notebook 03 saved its runs to Google Drive

SMOKE = attn_lib.smoke_mode()
MODEL = "vgg-att3-concat-pc"
BASELINE = "vgg"
DATASET = "synthetic" if SMOKE else "cifar10"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if SMOKE:
    EPOCHS = 1
else:
    EPOCHS = 5 if torch.cuda.is_available() else None  # None: the recipe's own

if IN_COLAB and USE_DRIVE:
    from google.colab import drive

    drive.mount("/content/drive")
    RUNS = Path("/content/drive/MyDrive/attn-lib/runs")
else:
    RUNS = Path("runs")


def load_or_train(name, dataset=DATASET, folder=None):
    """The best checkpoint in RUNS/folder (default: the model's name); trained first if absent."""
    run_dir = RUNS / (folder or name)
    if not (run_dir / "best.pt").exists():
        print(f"no checkpoint in {run_dir}: training a small {name} on {dataset} first")
        attn_lib.train(name, dataset, epochs=EPOCHS, out_dir=run_dir, resume=True)
    model, data_info = attn_lib.load_model(run_dir / "best.pt", map_location=DEVICE)
    print(f"loaded {run_dir / 'best.pt'}: {model.name} trained on {data_info['dataset']}")
    return model, data_info


model, data_info = load_or_train(MODEL)
baseline, _ = load_or_train(BASELINE)

# %% [markdown]
# ## Test images
#
# The test images of the data set the model was trained on, normalised with the statistics it was
# trained with (both stored in the checkpoint).

# %%
test_set = load_dataset(data_info["dataset"], split="test", limit=200 if SMOKE else None)
classes, mean, std = data_info["classes"], data_info["mean"], data_info["std"]
x = normalize(test_set.images[:8], mean, std)
y = test_set.labels[:8]
with torch.no_grad():
    out = model(x.to(DEVICE))
print("images", tuple(x.shape), "| attention maps", [tuple(a.shape) for a in out.attention])

# %% [markdown]
# ## One image, every level
#
# `overlay_attention` upsamples a map to the image's size and blends it over the image: red is
# high attention, blue low. The maps are min-max scaled for display, since a softmax map's values
# (about 1/1024 per position at level 1) mean little on their own. Level 1 (conv7, 32×32) can be
# very sharp; level 3 (conv13, 8×8) is coarse but sees more context.

# %%
image = x[0]
fig, axes = plt.subplots(1, 1 + len(out.attention), figsize=(2.6 * (1 + len(out.attention)), 2.8))
axes[0].imshow(to_rgb_image(image, mean, std))  # un-normalised, CHW -> HWC
axes[0].set_title(f"true: {classes[y[0]]}\npredicted: {classes[out.logits[0].argmax().item()]}")
for ax, level, maps in zip(axes[1:], model.levels, out.attention):
    ax.imshow(overlay_attention(image, maps[0], alpha=0.5, mean=mean, std=std))
    ax.set_title(f"level {level}, {tuple(maps.shape[-2:])} map")
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## A grid across images and levels
#
# One row per test image: the image with its true class and the prediction (green when right, red
# when wrong), then the three levels.

# %%
plot_attention_grid(model, x, y, classes, mean, std)

# %% [markdown]
# ## Correct and wrong predictions
#
# Do the maps look different when the model errs? We classify 500 test images and show some of
# each kind. Look for whether the wrong ones attend to a distractor, or spread their attention
# thin over the background.

# %%
subset = test_set.subset(500)
x_all = normalize(subset.images, mean, std)
with torch.no_grad():
    predictions = torch.cat([model(batch.to(DEVICE)).logits.argmax(dim=1).cpu()
                             for batch in x_all.split(250)])
correct = (predictions == subset.labels).nonzero().flatten()
wrong = (predictions != subset.labels).nonzero().flatten()
print(f"{len(correct)} correct, {len(wrong)} wrong out of {len(subset)} "
      f"({len(correct) / len(subset):.1%} accuracy)")

# %%
for title, indices in (("correct", correct[:4]), ("wrong", wrong[:4])):
    if len(indices) == 0:
        print(f"no {title} predictions to show")
        continue
    fig = plot_attention_grid(model, x_all[indices], subset.labels[indices], classes, mean, std)
    fig.suptitle(f"{title} predictions")
    display(fig)

# %% [markdown]
# ## Explore
#
# Pick an image, a level (or Grad-CAM) and the heatmap's opacity. In a live notebook this is an
# interactive widget; the figure after it is a static view of the same maps, which is what a
# saved copy (on GitHub, or an executed run without a browser) shows.

# %%
display(attention_explorer(model, subset, gradcam=True))

# %%
attention_explorer(model, subset, gradcam=True, interactive=False, static_images=3)

# %% [markdown]
# ## Learned attention beside Grad-CAM of the baseline
#
# The plain `vgg` has no attention maps, but Grad-CAM (Selvaraju et al., 2017) shows where the
# evidence for a class lies in its last conv layer (conv13, 8×8). The last column shows it, with
# the baseline's own prediction. Compare its spread with the attention maps.

# %%
plot_attention_grid(model, x[:6], y[:6], classes, mean, std, baseline=baseline)

# %% [markdown]
# ## How well do the maps localise the object?
#
# Pictures can be cherry-picked; a score cannot. With object masks we can measure, for each map,
# the share of its mass that falls on the object (`mass_in_mask`) and how often its peak lands on
# the object (`pointing_game`). A uniform map scores the object's share of the image on both: that
# is the chance level, the last row. CIFAR-10 has no masks, but the library's synthetic data set
# does (one shape to classify among distractors, covering 6–13 % of the image), so the scores
# come from models trained on it: the ones above in smoke mode, otherwise a short run of each on
# the synthetic data (loaded, or trained first, like the models above).

# %%
if data_info["dataset"] == "synthetic":
    shapes_model, shapes_baseline, shapes_test = model, baseline, test_set
else:
    shapes_model, _ = load_or_train(MODEL, "synthetic", folder=f"{MODEL}-synthetic")
    shapes_baseline, _ = load_or_train(BASELINE, "synthetic", folder=f"{BASELINE}-synthetic")
    shapes_test = load_dataset("synthetic", split="test", limit=1000)
rows = localization_scores(shapes_model, shapes_test, baseline=shapes_baseline,
                           limit=100 if SMOKE else None)
print(format_table(rows))

# %% [markdown]
# Read the `attention` rows against the `uniform` row: scores above it mean the maps concentrate
# on the object rather than on the clutter, and the `gradcam` rows answer the same question for the
# baseline at the same layers. (In smoke mode the models have barely trained, so the numbers say
# nothing there.)

# %% [markdown]
# ## Summary
#
# * `overlay_attention` draws one map on one image; `plot_attention_grid` draws images × levels,
#   optionally with Grad-CAM of a baseline; `attention_explorer` browses a whole test set.
# * Level 1 gives the sharpest maps, level 3 the most context; the three are combined by the
#   classifier.
# * With masks (the synthetic data), `localization_scores` turns "it looks at the object" into
#   numbers, next to Grad-CAM of the baseline and the uniform chance level.
