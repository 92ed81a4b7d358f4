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
# # 2 · Add attention to the VGG
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/attn-lib/attn-lib/blob/main/notebooks/02_add_attention.ipynb)
#
# Notebook 01 built the VGG and found its **local features** `l` (a grid of vectors at conv7, conv10
# and conv13) and its **global feature** `g` (one vector per image). This notebook adds the paper's
# attention in the order Section 3 of the paper builds it:
#
# 1. a **compatibility score** `c_i` between every local vector `l_i` and `g`, in two forms, `pc`
#    and `dp`, worked out by hand on a tiny example;
# 2. a **softmax over positions** that turns the scores into an attention map `a`;
# 3. the **attended descriptor** `g_a = Σ_i a_i l_i`, which replaces `g` as the classifier's input;
#
# then the library's attention block, the full model, all the paper's variants, and the maps of
# an untrained model drawn on images. No GPU is needed.

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

import torch

import attn_lib
from attn_lib.data import load_dataset, normalize
from attn_lib.maps.viz import plot_attention_grid
from attn_lib.models.attention import AttentionEstimator, attend, normalize_scores

# %matplotlib inline
SMOKE = attn_lib.smoke_mode()
DATASET = "synthetic" if SMOKE else "cifar10"
torch.manual_seed(0)
print(f"attn-lib {attn_lib.__version__}, torch {torch.__version__}, smoke mode: {SMOKE}")

# %% [markdown]
# ## A worked example you can check by hand
#
# Take a feature map with **2 channels** on a **2×2 grid**, so there are four positions
# `i = 1 … 4` (read row by row), each with a local vector `l_i`, and a global vector `g`:
#
# | position | `l_i` |
# |---|---|
# | 1 (top left) | (1, 0) |
# | 2 (top right) | (0, 1) |
# | 3 (bottom left) | (2, 1) |
# | 4 (bottom right) | (1, 1) |
#
# `g = (1, 1)`. A network stores such a grid channels first, as a tensor of shape
# (batch, channels, height, width) = (1, 2, 2, 2).

# %%
l_vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 1.0]])  # (positions, channels)
local = l_vectors.T.reshape(1, 2, 2, 2)  # (N, C, h, w)
g = torch.tensor([[1.0, 1.0]])  # (N, C)
print("local features, channel 0:\n", local[0, 0], "\nchannel 1:\n", local[0, 1])

# %% [markdown]
# ### Step 1: compatibility scores
#
# The paper gives two ways to score how well a position `l_i` agrees with `g` (Sec. 3.2):
#
# * **dot product, `dp`**: `c_i = <l_i, g>`. Here: 1·1 + 0·1 = **1**, 0·1 + 1·1 = **1**,
#   2·1 + 1·1 = **3**, 1·1 + 1·1 = **2**.
# * **parametrised, `pc`**: `c_i = <u, l_i + g>` with a vector `u` the network learns. With
#   `u = (2, -1)`: `l_1 + g = (2, 1)` gives 2·2 − 1·1 = **3**; `(1, 2)` gives **0**; `(3, 2)` gives
#   **4**; `(2, 2)` gives **2**.
#
# The library's functions give the same numbers, laid out on the grid:

# %%
u = torch.tensor([2.0, -1.0])
c_dp = attn_lib.dp_compatibility(local, g)
c_pc = attn_lib.pc_compatibility(local, g, u)
print("dp scores:\n", c_dp[0, 0])
print("pc scores:\n", c_pc[0, 0])

# %% [markdown]
# ### Step 2: softmax over positions
#
# The scores become weights with a softmax over *all positions of the image* (Eq. 1):
# `a_i = exp(c_i) / Σ_j exp(c_j)`. For the `dp` scores (1, 1, 3, 2):
#
# * exp: e¹ = 2.718, e¹ = 2.718, e³ = 20.086, e² = 7.389; their sum is 32.911;
# * so `a` = (0.083, 0.083, 0.610, 0.225), which sums to 1.
#
# Position 3, whose vector points most in the direction of `g`, gets most of the attention.

# %%
a_dp = normalize_scores(c_dp, "softmax")
print("dp attention:\n", a_dp[0, 0])
print("sum over positions:", float(a_dp.sum()))

# %% [markdown]
# ### Step 3: the attended descriptor
#
# The attention-weighted average of the local vectors (Eq. 2), `g_a = Σ_i a_i l_i`:
#
# `g_a` = 0.083·(1, 0) + 0.083·(0, 1) + 0.610·(2, 1) + 0.225·(1, 1) = **(1.528, 0.917)**.
#
# It describes the image by its most compatible positions. In the paper the classifier sees only
# these descriptors, not `g`: the network *has* to route its decision through the attention map,
# which is why the map ends up pointing at the object.

# %%
g_a = attend(local, a_dp, "softmax")
print("attended descriptor g_a:", g_a[0])

# %% [markdown]
# ### A property of `pc`: the `g` term cancels
#
# `<u, l_i + g> = <u, l_i> + <u, g>`, and the second term, here 2·1 − 1·1 = 1, is **the same for
# every position**. A softmax does not change when the same number is added to all its inputs, so
# the `pc` attention map does not depend on `g` at all: the scores (3, 0, 4, 2) and `<u, l_i>` alone
# (2, −1, 3, 1) give the same weights. With softmax, `pc` learns a fixed "what is interesting"
# direction `u`, and only `dp` makes the map depend on the image's global content. (With a sigmoid
# instead of the softmax the shift would matter; the library offers `normalize="sigmoid"`, used by
# some ports, as an option.)

# %%
zero_g = torch.zeros_like(g)
a_pc = normalize_scores(attn_lib.pc_compatibility(local, g, u), "softmax")
a_pc_without_g = normalize_scores(attn_lib.pc_compatibility(local, zero_g, u), "softmax")
print("pc attention with g:\n", a_pc[0, 0])
print("pc attention with g = 0:\n", a_pc_without_g[0, 0])
print("identical:", torch.allclose(a_pc, a_pc_without_g))
s_with = normalize_scores(attn_lib.pc_compatibility(local, g, u), "sigmoid")
s_without = normalize_scores(attn_lib.pc_compatibility(local, zero_g, u), "sigmoid")
print("with a sigmoid instead, identical:", torch.allclose(s_with, s_without))

# %% [markdown]
# ## The library's attention block
#
# `AttentionEstimator` does steps 1–3 in one module and returns the descriptor, the map and the raw
# scores. Given our `u`, it reproduces the hand-computed `pc` numbers:

# %%
estimator = AttentionEstimator(local_channels=2, global_channels=2, compatibility="pc")
with torch.no_grad():
    estimator.u.copy_(u)
    result = estimator(local, g)
print("scores:\n", result.scores[0, 0])
print("attention:\n", result.attention[0, 0])
print("descriptor:", result.descriptor[0])

# %% [markdown]
# On the real network, level 1 is conv7 with 256 channels, while `g` has 512. The two must have the
# same width before a dot product; by default a learned 1×1 convolution projects `l` up to 512
# (`match="project_l"`); the authors' code instead projects `g` down to 256 (`match="project_g"`).

# %%
for match in ("project_l", "project_g"):
    block = AttentionEstimator(256, 512, compatibility="pc", match=match)
    with torch.no_grad():
        out = block(torch.randn(2, 256, 32, 32), torch.randn(2, 512))
    sums = [round(v, 4) for v in out.attention.flatten(1).sum(1).tolist()]
    print(f"{match}: descriptor {tuple(out.descriptor.shape)}, "
          f"attention {tuple(out.attention.shape)}, each map sums to {sums}")

# %% [markdown]
# ## The full model
#
# `vgg-att3-concat-pc` puts one estimator on each of `l1`, `l2`, `l3`, all queried by the same `g`,
# and **concatenates** the three descriptors into one vector for a linear classifier (Sec. 3.3). We
# run it on a few images and check that the pieces, called by hand, give the model's output.

# %%
test_set = load_dataset(DATASET, split="test", limit=8)
x = normalize(test_set.images[:8], test_set.mean, test_set.std)
labels = test_set.labels[:8]

model = attn_lib.build_model("vgg-att3-concat-pc", num_classes=len(test_set.classes)).eval()
with torch.no_grad():
    output = model(x)
    features = model.backbone(x)
    results = [est(features.local[level - 1], features.global_)
               for level, est in zip(model.levels, model.estimators)]
    descriptors = torch.cat([r.descriptor for r in results], dim=1)
    logits = model.heads[0](descriptors)
for level, r in zip(model.levels, results):
    print(f"level {level}: map {tuple(r.attention.shape)}, descriptor {tuple(r.descriptor.shape)}")
print("concatenated descriptors:", tuple(descriptors.shape), "-> logits", tuple(logits.shape))
print("same as model(x).logits:", torch.allclose(logits, output.logits, atol=1e-5))

# %% [markdown]
# ## All the variants
#
# The paper compares attention at **2 levels** (conv10, conv13) or **3** (adding conv7), descriptors
# **concatenated** into one classifier or classified **independently** with the class scores
# averaged, and the two compatibility functions. Together with the plain `vgg` baseline these are
# the names `build_model` accepts. The parameters are counted at the paper's width; the map shapes
# come from a narrow copy (`width=1/16`), which is quicker to run and has the same spatial sizes.

# %%
num_classes = len(test_set.classes)
print(f"{'model':<22}{'parameters':>12}   attention map sizes")
for name in attn_lib.list_models():
    params = sum(p.numel() for p in attn_lib.build_model(name, num_classes).parameters())
    narrow = attn_lib.build_model(name, num_classes, width=1 / 16).eval()
    with torch.no_grad():
        maps = narrow(x[:1]).attention
    sizes = "  ".join("x".join(map(str, m.shape[-2:])) for m in maps) or "(no attention)"
    print(f"{name:<22}{params:>12,}   {sizes}")

# %% [markdown]
# The shape of each map depends only on its level, and on where attention is taken: before the
# max-pool that follows the level (the paper, the default) or after it
# (`attention_position="after"`), which halves each map.

# %%
for position in ("before", "after"):
    narrow = attn_lib.build_model("vgg-att3-concat-pc", num_classes, width=1 / 16,
                                  attention_position=position).eval()
    with torch.no_grad():
        maps = narrow(x[:1]).attention
    print(f"attention_position={position!r}:", [tuple(m.shape) for m in maps])

# %% [markdown]
# ## An untrained model's attention, on images
#
# Each row is one image: the image with the model's (random) guess, then the map of each level
# upsampled to the image and overlaid, red for high attention. Before training, `u` and the
# features are random, so the maps follow low-level texture and colour, and often the image
# border (where the convolutions' zero padding makes the features differ), rather than the
# object. Notebook 04 shows the same picture after training.

# %%
plot_attention_grid(model, x[:4], labels[:4], test_set.classes, test_set.mean, test_set.std)

# %% [markdown]
# ## Summary
#
# * Compatibility: `dp` is `<l_i, g>`; `pc` is `<u, l_i + g>`, and under a softmax its `g` term
#   cancels, so the `pc` map depends on `l` alone.
# * The softmax over positions makes an attention map that sums to one; the attended descriptor
#   `g_a` is the map-weighted sum of local features, and the classifier sees only the `g_a`s.
# * `vgg-att3-concat-pc` attends at conv7 (32×32), conv10 (16×16) and conv13 (8×8).
#
# Next, [03 · Train on Colab](03_train_on_colab.ipynb) trains it on CIFAR-10.
