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
# # 1 · Build the CIFAR VGG of *Learn To Pay Attention*
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/attn-lib/attn-lib/blob/main/notebooks/01_build_vgg.ipynb)
#
# *Learn To Pay Attention* (Jetley, Lord, Lee and Torr, ICLR 2018) adds **trainable attention** to
# an ordinary image classifier: the network looks at its own intermediate feature maps, scores every
# position, and classifies from a weighted sum of those features alone. Before any attention we
# need the network it is added to. This notebook builds the paper's CIFAR VGG block by block and
# answers four questions:
#
# 1. Why are there **no pooling layers in the first blocks**?
# 2. What is the **shape of the feature map after every block**?
# 3. Where do the **local features `l1`, `l2`, `l3`** and the **global feature `g`** come from?
# 4. How many **parameters** does it have?
#
# and ends with a forward pass on real images. Series: **01 build the VGG** → 02 add attention →
# 03 train on Colab → 04 plot attention maps. No GPU is needed here.

# %% [markdown]
# ## Setup
#
# On Colab this installs `attn-lib` from its repository. The package asks only for *lower* bounds on
# `torch`, so pip leaves Colab's own CUDA build of torch alone. Anywhere else the notebook uses the
# `attn-lib` that is already installed (`pip install -e .` in a clone).

# %%
import sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    # %pip install -q "attn-lib @ git+https://github.com/attn-lib/attn-lib"
    print("installed attn-lib from GitHub")

import matplotlib.pyplot as plt
import torch

import attn_lib
from attn_lib.data import load_dataset, normalize

# %matplotlib inline
# Fast mode for CI (ATTN_LIB_SMOKE=1): offline synthetic images instead of CIFAR-10.
SMOKE = attn_lib.smoke_mode()
DATASET = "synthetic" if SMOKE else "cifar10"
torch.manual_seed(0)
print(f"attn-lib {attn_lib.__version__}, torch {torch.__version__}, smoke mode: {SMOKE}")

# %% [markdown]
# ## A few test images
#
# The library's loader returns the whole split as one `uint8` tensor in PyTorch's layout
# **(N, C, H, W)**: channels first, RGB order. On Colab this downloads CIFAR-10 (170 MB) once; in
# smoke mode it draws a small synthetic set offline instead.

# %%
test_set = load_dataset(DATASET, split="test", limit=8)
images = test_set.images[:8]
labels = test_set.labels[:8]
print(test_set.name, "| images", tuple(images.shape), images.dtype, "| classes:", test_set.classes)

# %% [markdown]
# Matplotlib wants **(H, W, C)**, so each image is permuted before it is shown; showing a CHW
# tensor directly is a classic source of garbled pictures.

# %%
fig, axes = plt.subplots(1, len(images), figsize=(1.6 * len(images), 2))
for ax, image, label in zip(axes, images, labels):
    ax.imshow(image.permute(1, 2, 0))  # CHW -> HWC
    ax.set_title(test_set.classes[label], fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# The network itself takes *normalised* floats: each channel shifted by the dataset's mean and
# divided by its standard deviation.

# %%
x = normalize(images, test_set.mean, test_set.std)
print("x:", tuple(x.shape), x.dtype, f"mean {x.mean():.2f}, std {x.std():.2f}")

# %% [markdown]
# ## The plan: thirteen 3×3 convolutions in five blocks
#
# The paper's backbone is the CIFAR variant of VGG-16: every layer is a 3×3 convolution, batch norm
# and ReLU, grouped in five blocks. `VGG_BLOCKS` lists the output channels of each layer.

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
# We build the paper's full-width model (`width=1.0`) and call its backbone's pieces one at a time,
# printing the shape after each. Evaluation mode turns dropout off and makes batch norm use its
# running statistics.

# %%
model = attn_lib.build_model("vgg-att3-concat-pc", num_classes=len(test_set.classes))
model.eval()
backbone = model.backbone

with torch.no_grad():
    h = backbone.blocks[0](x)
    print("after block 1 (conv1-2):  ", tuple(h.shape))
    h = backbone.blocks[1](h)
    print("after block 2 (conv3-4):  ", tuple(h.shape))
    l1 = backbone.blocks[2](h)
    print("after block 3 (conv5-7):  ", tuple(l1.shape), "<- l1 = conv7")

# %% [markdown]
# **No pooling so far.** A textbook CIFAR VGG max-pools after every block, so by conv7 a 32×32 image
# is down to 8×8. The paper drops the first pools: conv1 … conv7 all work at the full input
# resolution. The point is the first attention level. It attends over `l1`, the output of conv7,
# and a 32×32 grid lets it weigh every pixel of a small object separately, where an 8×8 grid only
# sees 4×4-pixel patches. The price is compute: conv5 … conv7 run on 16× more
# positions than in the textbook VGG, and so do the blocks after them.
#
# From here on each block is followed by a 2×2 max-pool, as usual; two extra conv + pool stages at
# the end make up for the two pools that were left out.

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
# Two more conv + pool stages shrink the map to 1×1 (for a 32×32 input), and a fully connected
# 512 → 512 layer gives `g`, one vector per image that summarises the whole picture. In the plain
# VGG, `g` is what the classifier reads. In the attention model `g` has a different job: it is the
# *query* that decides which local positions matter (notebook 02).

# %%
with torch.no_grad():
    h = backbone.global_convs(p3)
    print("after two conv + pool stages:", tuple(h.shape))
    g = backbone.global_fc(backbone.global_pool(h).flatten(1))
    print("g:", tuple(g.shape))

# %% [markdown]
# `backbone(x)` does all of the above in one call and returns the three local maps (before their
# max-pool), the same maps after the pool, and `g`. The step-by-step tensors match it exactly.

# %%
with torch.no_grad():
    features = backbone(x)
for name, ours, library in zip(("l1", "l2", "l3"), (l1, l2, l3), features.local):
    print(f"{name}: {tuple(library.shape)}  matches step by step: {torch.equal(ours, library)}")
same = torch.equal(g, features.global_)
print(f"g:  {tuple(features.global_.shape)}  matches step by step: {same}")

# %% [markdown]
# So the attention model has three grids of local feature vectors to attend over, each cell
# describing one patch of the image:
#
# | level | layer | channels | grid for a 32×32 image |
# |---|---|---|---|
# | `l1` | conv7 | 256 | 32 × 32 |
# | `l2` | conv10 | 512 | 16 × 16 |
# | `l3` | conv13 | 512 | 8 × 8 |
#
# and one global vector `g` (512). `l1` is narrower than `g`; notebook 02 shows how the two are
# matched.

# %% [markdown]
# ## Parameter count
#
# Where do the parameters live? Almost all of them are in the convolutions of blocks 4 and 5 and the
# two global stages (512 channels × 512 channels × 9 weights each). The attention adds very little.

# %%
def count(module):
    return sum(p.numel() for p in module.parameters())


parts = {f"block {i + 1}": b for i, b in enumerate(backbone.blocks)}
parts |= {"global convs": backbone.global_convs, "global fc": backbone.global_fc,
          "attention (3 levels)": model.estimators, "classifier": model.heads}
for name, part in parts.items():
    print(f"{name:<22}{count(part):>12,}")
print(f"{'total':<22}{count(model):>12,}")

baseline = attn_lib.build_model("vgg", num_classes=len(test_set.classes))
extra = count(model) - count(baseline)
print(f"\nplain VGG baseline ('vgg'): {count(baseline):,} parameters; "
      f"the attention model adds {extra:,} ({extra / count(baseline):.1%})")

# %% [markdown]
# ## A forward pass on real images
#
# The full model returns the class scores (`logits`) and, for each attention level, an attention map
# of shape (N, 1, h, w). It is untrained, so its predictions are guesses and its class
# probabilities are close to uniform (one over the number of classes).

# %%
with torch.no_grad():
    out = model(x)
probabilities = out.logits.softmax(dim=1)
print("logits:", tuple(out.logits.shape))
print("attention maps:", [tuple(a.shape) for a in out.attention])
print("predicted:", [test_set.classes[i] for i in probabilities.argmax(dim=1)])
print("true:     ", [test_set.classes[i] for i in labels])
uniform = 1 / len(test_set.classes)
print(f"highest class probability: {probabilities.max():.3f} (uniform would be {uniform:.3f})")

# %% [markdown]
# ## Summary
#
# * The CIFAR VGG has thirteen 3×3 conv layers; the paper removes the pooling before conv7 so that
#   the first attention level sees the full 32×32 grid.
# * The local features come from conv7 (`l1`, 256×32×32), conv10 (`l2`, 512×16×16) and conv13
#   (`l3`, 512×8×8); the global feature `g` (512) comes from two more conv + pool stages and a
#   fully connected layer.
# * The attention model has about 20 million parameters, almost all in the VGG itself.
#
# Next, [02 · Add attention](02_add_attention.ipynb) turns `l` and `g` into attention maps.
