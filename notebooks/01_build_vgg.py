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
# # 1 · Build the CIFAR VGG of *Learn To Pay Attention*
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/attn-lib/attn-lib/blob/main/notebooks/01_build_vgg.ipynb)
#
# [*Learn To Pay Attention*](https://arxiv.org/abs/1804.02391) (Jetley, Lord, Lee and Torr,
# ICLR 2018) adds **trainable attention** to an ordinary image classifier. A conv layer gives a
# grid of local feature vectors $l_1, \dots, l_n$ (one per position), the end of the network a
# global vector $g$; attention scores every position, turns the scores into weights and
# classifies from the weighted sum of the local features alone:
#
# $$c_i = \langle u,\ l_i + g \rangle \ \ (\text{pc}) \quad\text{or}\quad
#   c_i = \langle l_i,\ g \rangle \ \ (\text{dp}), \qquad
#   a_i = \frac{\exp(c_i)}{\sum_{j=1}^{n} \exp(c_j)} \ \ \text{(Eq. 1)}, \qquad
#   g_a = \sum_{i=1}^{n} a_i\, l_i \ \ \text{(Eq. 2)}$$
#
# Before any attention we need the network it is added to. This notebook builds the paper's
# CIFAR VGG block by block and answers four questions:
#
# 1. Why are there **no pooling layers in the first blocks**?
# 2. What is the **shape of the feature map after every block**?
# 3. Where do the **local features $l^1, l^2, l^3$** and the **global feature $g$** come from?
# 4. How many **parameters** does it have, and which of them does a `pc` model actually train?
#
# Series: **01 build the VGG** → 02 add attention → 03 train on Colab → 04 plot attention maps.
# No GPU is needed; everything here runs in about a minute on a laptop CPU.

# %% [markdown]
# ## Setup
#
# On Colab the next cell installs the attn-lib release this notebook was written for
# (`ATTN_LIB_VERSION`, the one place to change it) and stops with pip's message if the install
# fails. attn-lib asks only for lower bounds on torch, so pip keeps Colab's own torch. Anywhere
# else it uses the attn-lib that is installed (`pip install -e .` in a clone).

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

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import attn_lib
from attn_lib.data import load_samples, normalize, one_per_class
from attn_lib.maps.diagrams import draw_architecture, trace
from attn_lib.models import describe_model

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
# ## A few real images
#
# attn-lib ships 100 CIFAR-10 test images (10 per class), so this notebook needs no download.
# They come as one `uint8` tensor in PyTorch's layout **(N, C, H, W)**: channels first, RGB.

# %%
samples = load_samples()
shown = one_per_class(samples.labels, 8)  # the first image of eight classes
images, labels = samples.images[shown], samples.labels[shown]
print(samples, "| images", tuple(images.shape), images.dtype)

# %% [markdown]
# Matplotlib wants **(H, W, C)**, so each image is permuted before it is shown; showing a CHW
# tensor directly is a classic source of garbled pictures.

# %%
fig, axes = plt.subplots(1, len(images), figsize=(1.6 * len(images), 2))
for ax, image, label in zip(axes, images, labels):
    ax.imshow(image.permute(1, 2, 0))  # CHW -> HWC
    ax.set_title(samples.classes[label], fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# The network takes *normalised* floats: each channel shifted by the data set's mean and divided
# by its standard deviation.

# %%
x = normalize(images, samples.mean, samples.std)
print("x:", tuple(x.shape), x.dtype, f"mean {x.mean():.2f}, std {x.std():.2f}")

# %% [markdown]
# ## The plan: thirteen 3×3 convolutions in five blocks
#
# The backbone is the CIFAR variant of VGG-16: every layer is a 3×3 convolution, batch norm and
# ReLU, grouped in five blocks. `VGG_BLOCKS` lists the output channels of each layer.

# %%
from attn_lib.models.backbone import GLOBAL_CHANNELS, VGG_BLOCKS

layer = 0
for block, widths in enumerate(VGG_BLOCKS, start=1):
    names = ", ".join(f"conv{layer + i + 1}" for i in range(len(widths)))
    layer += len(widths)
    print(f"block {block}: {names:<22} channels {widths}")
print("then two more conv + pool stages and a fully connected layer to g, width", GLOBAL_CHANNELS)

# %% [markdown]
# ## Walking through the blocks
#
# We build the paper's full-width model (`width=1.0`) and call its backbone's pieces one at a
# time, printing the shape after each. Evaluation mode turns dropout off and makes batch norm
# use its running statistics.

# %%
model = attn_lib.build_model("vgg-att3-concat-pc", num_classes=len(samples.classes)).eval()
backbone = model.backbone

with torch.no_grad():
    h = backbone.blocks[0](x)
    print("after block 1 (conv1-2):  ", tuple(h.shape))
    h = backbone.blocks[1](h)
    print("after block 2 (conv3-4):  ", tuple(h.shape))
    l1 = backbone.blocks[2](h)
    print("after block 3 (conv5-7):  ", tuple(l1.shape), "<- l1 = conv7")

# %% [markdown]
# **No pooling so far.** The standard CIFAR VGG, which the paper uses as its baseline and
# attn-lib calls `vgg`, max-pools after every block, so by conv7 a 32×32 image is down to 8×8.
# The attention network drops the first pools: conv1 … conv7 all work at the full input
# resolution. The point is the first attention level. It attends over $l^1$, the output of
# conv7, and a 32×32 grid has one position per pixel (a *stride* of 1 pixel), so it can give
# neighbouring pixels of a small object different weights; an 8×8 grid has one position per
# 4×4 pixels (stride 4). How much of the image each position *sees* is another matter, its
# receptive field: every 3×3 convolution widens it by 2 pixels times the stride so far, and
# every 2×2 pool doubles the stride. The next cell follows a forward pass through both models
# up to conv7 and computes both numbers. The price of the full resolution is compute: from
# conv5 on, every layer runs on 16× the positions of the baseline's (32×32 against 8×8 at
# conv7, 16×16 against 4×4 at conv10, 8×8 against 2×2 at conv13), conv3 and conv4 on 4×.

# %%
def grid_geometry(network, x, last_conv=7):
    """Stride and receptive field (in pixels) of the output of conv ``last_conv``, from the
    convolutions and pools that a forward pass calls before it, in order."""
    layers = []
    hooks = [m.register_forward_hook(lambda m, _i, _o: layers.append(m))
             for m in network.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]
    with torch.no_grad():
        network.eval()(x)
    for hook in hooks:
        hook.remove()
    stride, field, convs = 1, 1, 0
    for layer in layers:
        if convs == last_conv:
            break
        k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
        s = layer.stride if isinstance(layer.stride, int) else layer.stride[0]
        field += (k - 1) * stride
        stride *= s
        convs += isinstance(layer, nn.Conv2d)
    return stride, field


for name in ("vgg-att3-concat-pc", "vgg"):
    stride, field = grid_geometry(attn_lib.build_model(name, width=1 / 16), x[:1])
    print(f"{name:<20} conv7: one position every {stride} pixel(s), each sees "
          f"{field}×{field} pixels")
#
# From here on each block is followed by a 2×2 max-pool, as usual.

# %%
with torch.no_grad():
    p1 = backbone.pool(l1)
    l2 = backbone.blocks[3](p1)
    print("after pool + block 4 (conv8-10): ", tuple(l2.shape), "<- l2 = conv10")
    p2 = backbone.pool(l2)
    l3 = backbone.blocks[4](p2)
    print("after pool + block 5 (conv11-13):", tuple(l3.shape), "<- l3 = conv13")
    p3 = backbone.pool(l3)
    print("after pool:                      ", tuple(p3.shape))

# %% [markdown]
# ## The global feature `g`
#
# Two more conv + pool stages (conv14, conv15) shrink the map to 1×1 for a 32×32 input, and a
# fully connected 512 → 512 layer gives $g$: one vector per image that summarises the whole
# picture, the kind of vector an ordinary CNN classifies.
#
# **What `g` does, and does not do.** It is tempting to read $g$ as the *query* that decides
# which positions matter. That is true for the `dp` form, $c_i = \langle l_i, g\rangle$. It is
# **not** true for the `pc` model built here: in $c_i = \langle u, l_i\rangle + \langle u,
# g\rangle$ the second term is the same at every position and the softmax removes it, so the
# map depends on $l$ and $u$ alone. Notebook 02 proves this by hand and on trained models;
# below, the gradient shows what it costs.

# %%
with torch.no_grad():
    h = backbone.global_convs(p3)
    print("after conv14, conv15 and their pools:", tuple(h.shape))
    g = backbone.global_fc(backbone.global_pool(h).flatten(1))
    print("g:", tuple(g.shape))

# %% [markdown]
# `backbone(x)` does all of the above in one call and returns the three local maps (before
# their max-pool), the same maps after the pool, and `g`. The step-by-step tensors must match it
# exactly; the cell checks that and stops if they do not.

# %%
with torch.no_grad():
    features = backbone(x)
for name, ours, library in zip(("l1", "l2", "l3"), (l1, l2, l3), features.local):
    assert torch.equal(ours, library), f"{name} differs from backbone(x)"
    print(f"{name}: {tuple(library.shape)}  matches step by step")
assert torch.equal(g, features.global_), "g differs from backbone(x)"
print(f"g:  {tuple(features.global_.shape)}  matches step by step")

# %% [markdown]
# So the attention model has three grids of local feature vectors to attend over, each cell
# describing one patch of the image:
#
# | level | layer | channels | grid for a 32×32 image |
# |---|---|---|---|
# | $l^1$ | conv7 | 256 | 32 × 32 |
# | $l^2$ | conv10 | 512 | 16 × 16 |
# | $l^3$ | conv13 | 512 | 8 × 8 |
#
# and one global vector $g$ (512). $l^1$ is narrower than $g$; notebook 02 shows how the two
# are matched.

# %% [markdown]
# ## The architecture, drawn from the model itself
#
# The diagram below is not a picture someone drew: `trace` (in `attn_lib.maps.diagrams`) runs
# one forward pass with hooks on the backbone's stages and on the three attention estimators,
# records every output's shape, and finds which stage's output each estimator reads.
# `draw_architecture` turns that record into boxes. Change the model and the diagram changes
# with it.

# %%
calls, attached, _ = trace(model, x[:1])
print("the estimators read:", [calls[i][0] for i in attached])
assert [calls[i][0] for i in attached] == ["conv5-7", "conv8-10", "conv11-13"]
draw_architecture(model)
plt.show()

# %% [markdown]
# The three estimators read the outputs of conv7, conv10 and conv13 (the last layer of blocks
# 3, 4 and 5), before the pool that follows each block. The classifier after them is not a bare
# linear layer: batch norm, then dropout, then a linear layer. At test time batch norm is a fixed
# affine map and dropout is off, so the classifier is still linear in the descriptors, as the
# paper's Sec. 3.3 describes.

# %% [markdown]
# ## Parameter count
#
# Where do the parameters live? Almost all of them are in the convolutions of blocks 4 and 5 and
# the two global stages (512 channels × 512 channels × 9 weights each). The attention adds very
# little.

# %%
def count(module):
    return sum(p.numel() for p in module.parameters())


parts = {f"block {i + 1}": b for i, b in enumerate(backbone.blocks)}
parts |= {"global convs (conv14-15)": backbone.global_convs, "global FC": backbone.global_fc,
          "attention (3 levels)": model.estimators, "classifier": model.heads}
for name, part in parts.items():
    print(f"{name:<26}{count(part):>12,}")
total = count(model)
print(f"{'total':<26}{total:>12,}")
global_branch = count(backbone.global_convs) + count(backbone.global_fc)
print(f"\nglobal branch (conv14, conv15, FC): {global_branch / 1e6:.2f} M, "
      f"{global_branch / total:.0%} of the model")

# %% [markdown]
# **In a `pc` model the global branch (its share is printed above) gets no gradient from the
# loss:** $g$ reaches the output only through $\langle u, g\rangle$,
# which the softmax cancels. Weight decay is then the only thing that moves those weights. You
# can watch it: one backward pass through a narrow copy of the same model (`width=1/16`: same
# layers, 1/16 of the channels, quick on a CPU) and the largest gradient in each part.

# %%
torch.manual_seed(0)
narrow = attn_lib.build_model("vgg-att3-concat-pc", width=1 / 16).train()
F.cross_entropy(narrow(x).logits, labels).backward()
largest = {"global branch": 0.0, "everything else": 0.0}
for name, p in narrow.named_parameters():
    part = "global branch" if name.startswith("backbone.global_") else "everything else"
    largest[part] = max(largest[part], p.grad.abs().max().item())
for part, value in largest.items():
    print(f"largest |gradient| in {part:<16} {value:.2e}")
# Only float rounding is left of the global branch's gradient.
assert largest["global branch"] < 1e-5 * largest["everything else"]

# %% [markdown]
# Two other models help to read this count. `vgg` is the paper's baseline, the standard CIFAR
# VGG with a pool after every block and a small classifier on its 1×1 output. `vgg-noatt` is
# this notebook's backbone without attention, classifying $g$: comparing it with the attention
# model separates what attention adds from what the changed backbone adds.

# %%
for name in ("vgg", "vgg-noatt", "vgg-att3-concat-pc"):
    print(f"{name:<22}{count(attn_lib.build_model(name)) / 1e6:>7.2f} M   "
          f"{describe_model(name)}")

# %% [markdown]
# ## A forward pass, untrained and trained
#
# The full model returns the class scores (`logits`) and, for each attention level, an
# attention map of shape (N, 1, h, w). This one is untrained, so its predictions are guesses.

# %%
with torch.no_grad():
    out = model(x)
probabilities = out.logits.softmax(dim=1)
print("logits:", tuple(out.logits.shape))
print("attention maps:", [tuple(a.shape) for a in out.attention])
print("predicted:", [samples.classes[i] for i in probabilities.argmax(dim=1)])
print("true:     ", [samples.classes[i] for i in labels])
print(f"highest class probability: {probabilities.max():.3f} "
      f"(one over the number of classes: {1 / len(samples.classes):.3f})")

# %% [markdown]
# attn-lib also ships trained weights, loaded the way torchvision loads its own:
# `build_model(name, weights="cifar10")`, trained on a JPEG (quality 75) copy of CIFAR-10.
# `attn_lib.list_weights()` says how each was trained (the cell prints it), and
# `model.weights_info` carries the normalisation the inputs need. Notebooks 02 and 04 use them.

# %%
trained = attn_lib.build_model("vgg-att3-concat-pc", weights="cifar10")
info = trained.weights_info
entry = next(e for e in attn_lib.list_weights(trained.name) if e["weights"] == info["weights"])
how = entry["trained"]
print(f"width {entry['width']}, {how['epochs']} epochs on {how.get('data', entry['dataset'])}")
print(f"trained with: {how['command']}\non: {how['hardware']} {how.get('date', '')}")
print(f"test accuracy recorded with the weights: {entry['test_acc']:.1%}")
x_trained = normalize(images, info["mean"], info["std"])
with torch.no_grad():
    predicted = trained(x_trained).logits.argmax(dim=1)
print("predicted:", [info["classes"][i] for i in predicted])
print("true:     ", [samples.classes[i] for i in labels])

# %% [markdown]
# ## Exercises
#
# Try them before you open the solutions at the end of the notebook.
#
# 1. **Where the baseline is.** How large is conv7's feature map in the paper's baseline `vgg`,
#    which pools after every block? Check your answer with a forward hook on
#    `baseline.backbone.blocks[2]`.
# 2. **Count by hand.** How many parameters does block 5 (conv11-13) have? Each conv is 3×3
#    without bias, each batch norm has a scale and a shift per channel. Compare with
#    `count(backbone.blocks[4])`.
# 3. **Bigger images.** The model accepts any size that is a multiple of 32. What are the shapes
#    of $l^1$, $l^2$, $l^3$ and $g$ for a 64×64 image?

# %% [markdown]
# ## What you learned
#
# * The attention network keeps conv1 … conv7 at full resolution so that the first attention
#   level can weigh each of the 32×32 positions; the paper's baseline pools after every block
#   and is down to 8×8 by conv7. A grid's stride (how far apart its positions are) is not its
#   receptive field (how much of the image each position sees).
# * Attention reads three grids of local features (conv7, conv10, conv13: 32×32, 16×16, 8×8 on
#   CIFAR) and one global vector $g$ made by two more conv stages and a fully connected layer.
# * Nearly all of the parameters are in the VGG itself; the attention adds few (both counted
#   above). In a `pc` model the ones that make $g$ receive no gradient, because the softmax
#   cancels $g$'s contribution to the scores.
# * The classifier reads only the attended descriptors, through batch norm, dropout and a linear
#   layer.
#
# Next, [02 · Add attention](02_add_attention.ipynb) turns $l$ and $g$ into attention maps.

# %% [markdown]
# ## Appendix: solutions
#
# <details><summary><b>Solution 1</b> (click to open)</summary>
#
# 8×8: the baseline pools after block 1 (32 → 16) and block 2 (16 → 8), so conv7 is an 8×8
# grid and conv13 only 2×2.
#
# </details>

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution 1: the code
baseline = attn_lib.build_model("vgg").eval()
seen = {}
hook = baseline.backbone.blocks[2].register_forward_hook(
    lambda _m, _inputs, output: seen.update(conv7=tuple(output.shape)))
with torch.no_grad():
    baseline(x[:1])
hook.remove()
print("conv7 in vgg:", seen["conv7"])
assert seen["conv7"] == (1, 256, 8, 8)

# %% [markdown]
# <details><summary><b>Solution 2</b> (click to open)</summary>
#
# Three convs of 3·3·512·512 = 2,359,296 weights each, and three batch norms of
# 2 · 512 = 1,024: 7,077,888 + 3,072 = **7,080,960**.
#
# </details>

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution 2: the code
by_hand = 3 * (3 * 3 * 512 * 512) + 3 * (2 * 512)
print(f"by hand {by_hand:,}, counted {count(backbone.blocks[4]):,}")
assert by_hand == count(backbone.blocks[4])

# %% [markdown]
# <details><summary><b>Solution 3</b> (click to open)</summary>
#
# Every grid doubles in each direction: $l^1$ 256×64×64, $l^2$ 512×32×32, $l^3$ 512×16×16.
# $g$ stays 512: the global stages end at 2×2 and are averaged to 1×1 before the fully
# connected layer, so the same weights serve any size.
#
# </details>

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution 3: the code
with torch.no_grad():
    big = backbone(torch.randn(1, 3, 64, 64))
print([tuple(t.shape) for t in big.local], tuple(big.global_.shape))
assert [t.shape[-1] for t in big.local] == [64, 32, 16] and big.global_.shape == (1, 512)
