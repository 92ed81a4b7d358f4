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
# # 5 · Attention on your own CNN
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/attn-lib/attn-lib/blob/main/notebooks/05_attention_on_your_own_cnn.ipynb)
#
# Nothing in the attention of [*Learn To Pay Attention*](https://arxiv.org/abs/1804.02391)
# (Jetley et al., ICLR 2018) is specific to the VGG of notebooks 01–04. It needs three things
# from a network: **local features** $l^s$ (the output of some conv layer $s$, a grid of
# vectors), a **global feature** $g$ (the output of a late layer), and a classifier that reads the
# attended descriptors $g_a^s$ instead of $g$ (Sec. 3.3):
#
# $$c_i = \langle u,\ l_i + g \rangle \ \ (\text{pc}) \quad\text{or}\quad
#   c_i = \langle l_i,\ g \rangle \ \ (\text{dp}), \qquad
#   a_i = \frac{\exp(c_i)}{\sum_{j=1}^{n} \exp(c_j)} \ \ \text{(Eq. 1)}, \qquad
#   g_a = \sum_{i=1}^{n} a_i\, l_i \ \ \text{(Eq. 2)}$$
#
# one estimator per tapped layer $s$, and the classifier on the concatenation,
# $\hat y = W\,[g^1_a, \dots, g^S_a] + b$.
#
# Where $l^s$ and $g$ differ in width, a learned linear map matches them. `attn_lib.add_attention`
# does all of this to any `nn.Module` in one call, through torchvision's
# `create_feature_extractor`: you name the layers, it taps them. This notebook
#
# 1. takes a torchvision ResNet and adds attention to two of its stages;
# 2. trains it briefly on CIFAR-10 (minutes on a CPU);
# 3. draws its attention maps and contribution maps beside those of the VGG attention model
#    that attn-lib ships, and checks that the `pc` cancellation of notebook 02 holds on the
#    ResNet too.

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
import os
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

import json
import time

import torch
import torchvision
from IPython.display import display
from torchvision.models.resnet import BasicBlock, ResNet

import attn_lib
from attn_lib.data import load_dataset, load_samples, normalize, one_per_class
from attn_lib.maps.viz import MapColumn, plot_map_columns
from attn_lib.models.add_attention import add_attention, valid_layer_names
from attn_lib.models.resnet import cifar_stem
from attn_lib.study.robustness import global_shuffle_effect

if attn_lib.__version__ != ATTN_LIB_VERSION:
    message = (f"this notebook was written for attn-lib {ATTN_LIB_VERSION}, "
               f"but {attn_lib.__version__} is imported")
    if IN_COLAB:
        raise RuntimeError(f"{message}; restart the session (Runtime -> Restart session) and "
                           "run the notebook again")
    print("warning:", message)
torch.manual_seed(0)
DATA_DIR = os.environ.get("ATTN_LIB_DATA_DIR") or None  # None: torchvision downloads CIFAR-10
SMOKE = attn_lib.smoke_mode()  # the tests' mode: seconds, offline, numbers that mean nothing
# smoke mode trains on the offline synthetic shapes (8 classes) instead of CIFAR-10
DATASET, NUM_CLASSES = ("synthetic", 8) if SMOKE else ("cifar10", 10)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
print(f"attn-lib {attn_lib.__version__}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}; device {DEVICE}; smoke mode: {SMOKE}")

# %% [markdown]
# ## A torchvision ResNet, and the names of its layers
#
# The network here is torchvision's `ResNet` class with one basic block per stage (a
# "ResNet-10"), so a short training fits in a few minutes on a CPU;
# `torchvision.models.resnet18(weights=...)` works the same way, with ImageNet weights if you
# have them (`weights="DEFAULT"` downloads them). For 32×32 images, `cifar_stem` makes the usual
# CIFAR change in place (a 3×3 stride-1 stem conv instead of the 7×7 stride-2 one, and no
# max-pool); the next line puts the max-pool back to save time, so the four stages see 16, 8, 4
# and 2 pixels. The layer names are torchvision's graph nodes; a module name such as `"layer2"`
# means the output of its last node.

# %%
backbone = cifar_stem(ResNet(BasicBlock, [1, 1, 1, 1], num_classes=1000))
backbone.maxpool = torch.nn.MaxPool2d(3, 2, 1)  # keep the pool: 4x fewer positions, 4x faster
names = valid_layer_names(backbone)
print(len(names), "layer names; the top level:", [n for n in names if "." not in n])

# %% [markdown]
# ## One call
#
# Attention on stages 2 and 3 (8×8 and 4×4 maps), $g$ from stage 4 (averaged over its 2×2
# positions, as the ResNet's own classifier does). The local widths (128, 256) differ from $g$'s
# (512), so each $l^s$ is projected up by a 1×1 conv, as the family does by default
# (`match="project_g"` projects $g$ down instead). A wrong name lists the valid ones.

# %%
model = add_attention(backbone, local_layers=["layer2", "layer3"], global_layer="layer4",
                      compatibility="pc", normalize="softmax", head="concat",
                      num_classes=NUM_CLASSES,
                      input_size=(3, 32, 32), name="resnet10-att2-concat-pc")
logits, maps = model(torch.randn(2, 3, 32, 32))
print("logits", tuple(logits.shape), "| maps", [tuple(m.shape) for m in maps])
print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
try:
    add_attention(backbone, ["layer9"], "layer4", num_classes=10, input_size=(3, 32, 32))
except ValueError as error:
    print("ValueError:", str(error)[:160], "...")

# %% [markdown]
# ## Train it briefly
#
# `attn_lib.train` takes the model as it takes one of the family: same loop, checkpoints and
# metrics. The library's `cpu` recipe (SGD with momentum, a one-cycle learning rate, random
# crops and flips; `docs/RECIPES.md`) on part of CIFAR-10's training set for a few epochs:
# minutes on a CPU, and only a start. The VGG attention model it is compared with below
# trained for 6 epochs on all 50,000 images. In smoke mode (the tests) it trains for seconds
# on the offline synthetic shapes instead, and its numbers mean nothing.

# %%
if SMOKE:
    SETTINGS = dict(preset="smoke")
else:
    SETTINGS = dict(preset="cpu", epochs=3, limit_train=20_000, limit_test=2_000,
                    data_dir=DATA_DIR)
start = time.perf_counter()
result = attn_lib.train(model, DATASET, out_dir=f"runs/resnet10-att2-{DATASET}",
                        device=DEVICE, progress=False, **SETTINGS)
minutes = (time.perf_counter() - start) / 60
recipe = json.loads((result.run_dir / "config.json").read_text())["recipe"]
print(f"{recipe['name']} recipe: batch {recipe['batch_size']}, lr {recipe['lr']} "
      f"({recipe['schedule']}), augmentation {recipe['augment']}")
for row in result.history:
    print(f"epoch {row['epoch']}: train loss {row['train_loss']:.3f}, "
          f"test accuracy {row['test_acc']:.1%}")
images = result.history[-1]["epoch"] * (SETTINGS.get("limit_train") or 0)
print(f"{len(result.history)} epochs in {minutes:.1f} min on {DEVICE} "
      f"({torch.get_num_threads()} CPU threads)" + (f", {images:,} training images" if images
                                                     else ""))
CHANCE = 1 / 10  # ten classes
assert SMOKE or result.history[-1]["test_acc"] > 2 * CHANCE, "three epochs: at least twice chance"

# %% [markdown]
# Three short epochs on a CPU are a start, not a result: the VGG model below trained 6 epochs
# on all 50,000 images. Read the first epoch's training loss against $\ln 10 \approx 2.30$,
# the loss of a uniform guess over 10 classes: a loss above it means the first steps made the
# model *worse* than guessing, the sign of a learning rate too high for this model (exercise 4).

# %% [markdown]
# ## Its maps beside the VGG's
#
# attn-lib ships a `vgg-att3-concat-pc` trained on CIFAR-10 at 1/16 width on a CPU
# (`weights="cifar10"`), and 100 CIFAR-10 test images. Both models are scored on the same
# test images, then drawn on images of different classes: each model's attention maps (where
# it looked), then its **contribution maps** for the class it predicts (notebook 04: position
# $i$ adds $a_i\,\tilde w_k^\top l_i$ to logit $k$, red for, blue against). Each map sits at its
# level's resolution: the ResNet's 8×8 and 4×4 against the VGG's 32×32, 16×16 and 8×8.

# %%
vgg = attn_lib.build_model("vgg-att3-concat-pc", weights="cifar10").to(DEVICE).eval()
model = model.to(DEVICE).eval()
samples = load_samples("cifar10")
test_set = load_dataset(DATASET, split="test", data_dir=DATA_DIR,
                        limit=SETTINGS.get("limit_test", 128))
for network in (model, vgg):
    acc = attn_lib.evaluate(network, test_set, batch_size=250, device=DEVICE)["acc"]
    parameters = sum(p.numel() for p in network.parameters())
    print(f"{network.name:<24} {parameters / 1e6:5.2f} M parameters, test accuracy {acc:.1%} "
          f"on {len(test_set):,} {DATASET} test images")

picked = one_per_class(samples.labels, 10)[1::2]  # five classes, one image each
x = normalize(samples.images[picked], samples.mean, samples.std).to(DEVICE)
y = samples.labels[picked]
for network in (model, vgg):
    contributions = attn_lib.contribution_maps(network, x)  # for the predicted class
    with torch.no_grad():
        attention = network(x).attention
    columns = [MapColumn(f"attention {lv}\n{h}×{w}", m) for lv, m, (h, w) in
               zip(network.levels, attention, (m.shape[-2:] for m in attention))]
    columns += [MapColumn(f"contribution {lv} ±", m, signed=True)
                for lv, m in zip(network.levels, contributions.maps)]
    titles = [f"{samples.classes[t]}\npredicted {samples.classes[p]}"
              for t, p in zip(y.tolist(), contributions.target.tolist())]
    figure = plot_map_columns(x.cpu(), columns, titles, samples.mean, samples.std)
    figure.suptitle(network.name)
    display(figure)
    total = sum(m.flatten(1).sum(1) for m in contributions.maps) + contributions.bias
    logit = contributions.logits.gather(1, contributions.target[:, None])[:, 0]
    assert torch.allclose(total, logit, atol=1e-4), "the contributions add up to the logit"

# %% [markdown]
# ## The `pc` cancellation holds on the ResNet too
#
# $\langle u, l_i + g\rangle = \langle u, l_i\rangle + \langle u, g\rangle$, and the second
# term is the same at every position, so the softmax cancels it: with `pc`, the maps cannot
# depend on $g$. Shuffling $g$ across the batch before the estimators proves it on this model.

# %%
effect = global_shuffle_effect(model, test_set, batch_size=250)
assert effect["max_attention_change"] < 1e-4, "pc maps cannot depend on g"
print(f"largest change of an attention weight: {effect['max_attention_change']:.1e}; "
      f"accuracy change: {effect['delta_acc']:+.1%}")

# %% [markdown]
# ## Exercises
#
# Solutions are in the appendix at the end; try first.
#
# 1. **Where g matters.** Build the same model with `compatibility="dp"` and run the shuffle
#    probe on it untrained. Does the map change now, and why?
# 2. **Another network.** Add attention to `torchvision.models.mobilenet_v3_small(weights=None)`
#    at two of its `features.*` blocks with $g$ from `features.12`. Which spatial sizes do the
#    maps have on 224×224 images?
# 3. **A layer that is not a feature map.** What does `add_attention` say if you pass
#    `"flatten"` as a local layer, and why can it not attend there?
# 4. **Train it properly.** On a GPU runtime, set `epochs=15` and `limit_train=None` (all
#    50,000 images) in the training cell, once with the recipe's learning rate and once with
#    `lr=0.01` added, then run on from there. Which learning rate keeps the first epoch's loss
#    below $\ln 10$, and how do the accuracy and the maps change?

# %% [markdown]
# ## What you learned
#
# * The paper's attention needs only named local layers, a global feature and a new classifier:
#   `add_attention` builds them on any CNN with one call.
# * The result is a model of the family: training, evaluation, maps, Grad-CAM and the study's
#   probes work on it unchanged.
# * Contribution maps split each logit exactly into one term per attended position: where a
#   network looked, and what it concluded there, on a ResNet as on the VGG.
# * The `pc` cancellation is a property of the estimator, not of the VGG: it holds on a ResNet.
# * Map resolution follows the tapped layers: a ResNet's stages give coarser maps than the
#   VGG's conv7 at full resolution.

# %% [markdown]
# ## Appendix: solutions
#
# <details><summary><b>Solution 1</b> (click to open)</summary>
#
# With `dp` the score $\langle l_i, g\rangle$ depends on $g$ at every position, so
# shuffling $g$ changes the maps.
#
# </details>

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution 1: the code
dp_model = add_attention(cifar_stem(ResNet(BasicBlock, [1, 1, 1, 1])), ["layer2", "layer3"],
                         "layer4", compatibility="dp", num_classes=10, input_size=(3, 32, 32))
dp_effect = global_shuffle_effect(dp_model.to(DEVICE).eval(), test_set, batch_size=250)
print(f"dp: largest change of an attention weight {dp_effect['max_attention_change']:.3f}")
assert dp_effect["max_attention_change"] > 1e-3, "with dp another image's g moves the maps"

# %% [markdown]
# <details><summary><b>Solution 2</b> (click to open)</summary>
#
# MobileNetV3-small halves the resolution five times; the cell prints the map sizes of
# the two blocks chosen (each block's stride decides them).
#
# </details>

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution 2: the code
mobile = torchvision.models.mobilenet_v3_small(weights=None)
mobile_att = add_attention(mobile, ["features.3", "features.8"], "features.12", num_classes=10)
print([tuple(m.shape) for m in mobile_att.eval()(torch.randn(1, 3, 224, 224)).attention])

# %% [markdown]
# <details><summary><b>Solution 3</b> (click to open)</summary>
#
# A flattened vector has no positions to weigh: the estimator needs (N, C, h, w).
# (**4** is a run, not a cell: change the numbers in the training cell and run on from there.)
#
# </details>

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution 3: the code
try:
    add_attention(backbone, ["flatten"], "layer4", num_classes=10, input_size=(3, 32, 32))
except ValueError as error:
    print("ValueError:", error)
