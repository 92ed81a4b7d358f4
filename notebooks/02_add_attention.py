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
# # 2 · Add attention to the VGG
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/attn-lib/attn-lib/blob/main/notebooks/02_add_attention.ipynb)
#
# Notebook 01 built the VGG of [*Learn To Pay Attention*](https://arxiv.org/abs/1804.02391)
# (Jetley et al., ICLR 2018) and found its **local features** $l$ (a grid of vectors at conv7,
# conv10 and conv13) and its **global feature** $g$ (one vector per image). This notebook adds
# the paper's attention in the order its Section 3 builds it:
#
# $$c_i = \langle u,\ l_i + g \rangle \ \ (\text{pc}) \quad\text{or}\quad
#   c_i = \langle l_i,\ g \rangle \ \ (\text{dp}), \qquad
#   a_i = \frac{\exp(c_i)}{\sum_{j=1}^{n} \exp(c_j)} \ \ \text{(Eq. 1)}, \qquad
#   g_a = \sum_{i=1}^{n} a_i\, l_i \ \ \text{(Eq. 2)}$$
#
# 1. a **compatibility score** $c_i$ between every local vector $l_i$ and $g$, in the two forms
#    `pc` and `dp` (Sec. 3.2), worked out by hand on a tiny example;
# 2. a **softmax over positions** that turns the scores into an attention map $a$ (Eq. 1);
# 3. the **attended descriptor** $g_a$, which replaces $g$ as the classifier's input (Eq. 2);
#
# then the library's attention block, the full model, trained models that show what $g$ does
# (and does not do), all the paper's variants, and maps drawn on images. No GPU is needed.

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

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import display

import attn_lib
from attn_lib.data import load_samples, normalize, one_per_class
from attn_lib.maps.diagrams import draw_estimator
from attn_lib.maps.viz import plot_attention_grid
from attn_lib.models.attention import AttentionEstimator, attend, normalize_scores
from attn_lib.study.published import study_results
from attn_lib.study.robustness import derangement, shuffled_global

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
# ## A worked example you can check by hand
#
# Take a feature map with **2 channels** on a **2×2 grid**, so there are four positions
# $i = 1 \dots 4$ (read row by row), each with a local vector $l_i$, and a global vector $g$:
#
# | position | $l_i$ |
# |---|---|
# | 1 (top left) | (1, 0) |
# | 2 (top right) | (0, 1) |
# | 3 (bottom left) | (2, 1) |
# | 4 (bottom right) | (1, 1) |
#
# $g = (1, 1)$. A network stores such a grid channels first, as a tensor of shape
# (batch, channels, height, width) = (1, 2, 2, 2).

# %%
l_vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 1.0]])  # (positions, C)
local = l_vectors.T.reshape(1, 2, 2, 2)  # (N, C, h, w)
g = torch.tensor([[1.0, 1.0]])  # (N, C)
print("local features, channel 0:\n", local[0, 0], "\nchannel 1:\n", local[0, 1])

# %% [markdown]
# ### Start from what you know: global average pooling
#
# A standard CNN ends by averaging its last feature map over all positions: every position gets
# the same weight $1/n$. Written as Eq. 2, that is attention with a *uniform* map,
# $a_i = 1/n$, and it is what the softmax of Eq. 1 gives when all scores are equal:

# %%
uniform = normalize_scores(torch.zeros(1, 1, 2, 2), "softmax")  # equal scores c_i = 0
print("uniform attention:\n", uniform[0, 0])
pooled = attend(local, uniform)
print("g_a with uniform attention:", pooled[0], "| global average pooling:",
      F.adaptive_avg_pool2d(local, 1).flatten(1)[0])
assert torch.allclose(pooled, F.adaptive_avg_pool2d(local, 1).flatten(1))

# %% [markdown]
# **Learned attention** keeps the weighted average but computes the weights from the features
# themselves, so positions that matter count more. The three steps below do that.
#
# ### Step 1: compatibility scores
#
# The paper gives two ways to score how well a position $l_i$ agrees with $g$ (Sec. 3.2):
#
# * **dot product, `dp`**: $c_i = \langle l_i, g\rangle$. Here:
#   $1 \cdot 1 + 0 \cdot 1 = \mathbf{1}$, $0 \cdot 1 + 1 \cdot 1 = \mathbf{1}$,
#   $2 \cdot 1 + 1 \cdot 1 = \mathbf{3}$, $1 \cdot 1 + 1 \cdot 1 = \mathbf{2}$.
# * **parametrised, `pc`**: $c_i = \langle u, l_i + g\rangle$ with a vector $u$ the network
#   learns. With $u = (2, -1)$: $l_1 + g = (2, 1)$ gives $2 \cdot 2 - 1 \cdot 1 = \mathbf{3}$;
#   $(1, 2)$ gives $\mathbf{0}$; $(3, 2)$ gives $\mathbf{4}$; $(2, 2)$ gives $\mathbf{2}$.
#
# The library's functions give the same numbers, laid out on the grid:

# %%
u = torch.tensor([2.0, -1.0])
c_dp = attn_lib.dp_compatibility(local, g)
c_pc = attn_lib.pc_compatibility(local, g, u)
print("dp scores:\n", c_dp[0, 0])
print("pc scores:\n", c_pc[0, 0])
assert c_dp.flatten().tolist() == [1, 1, 3, 2] and c_pc.flatten().tolist() == [3, 0, 4, 2]

# %% [markdown]
# **Length counts as much as direction.** A dot product is
# $\langle l_i, g\rangle = \lVert l_i\rVert\,\lVert g\rVert \cos\theta_i$. Position 4,
# $l_4 = (1, 1)$, points *exactly* along $g$ ($\cos\theta_4 = 1$), yet position 3,
# $l_3 = (2, 1)$, scores higher: it is less aligned but longer. In `dp` a large activation can
# win over a well-aligned one.

# %%
cosines = F.cosine_similarity(l_vectors, g, dim=1)
lengths = l_vectors.norm(dim=1)
for i in range(4):
    print(f"position {i + 1}: length {lengths[i]:.3f}, cos with g {cosines[i]:.3f}, "
          f"dp score {c_dp.flatten()[i]:.0f}")
assert cosines.argmax() == 3 and c_dp.flatten().argmax() == 2  # most aligned: 4; winner: 3

# %% [markdown]
# ### Step 2: softmax over positions
#
# The scores become weights with a softmax over *all positions of the image* (Eq. 1),
# $a_i = \exp(c_i) / \sum_j \exp(c_j)$. For the `dp` scores (1, 1, 3, 2):
#
# * $e^1 = 2.718$, $e^1 = 2.718$, $e^3 = 20.086$, $e^2 = 7.389$; their sum is 32.911;
# * so $a = (0.083, 0.083, 0.610, 0.225)$, which sums to 1.

# %%
a_dp = normalize_scores(c_dp, "softmax")
print("dp attention:\n", a_dp[0, 0])
assert torch.allclose(a_dp.flatten(), torch.tensor([0.083, 0.083, 0.610, 0.225]), atol=1e-3)
assert torch.isclose(a_dp.sum(), torch.tensor(1.0))

# %% [markdown]
# Laid out on the grid, this is the **attention map**: one weight per position, on the same grid
# as the features. The maps of the real network are the same thing, on grids of 32×32, 16×16
# and 8×8 positions.

# %%
fig, ax = plt.subplots(figsize=(2.6, 2.3))
shown_map = ax.imshow(a_dp[0, 0], cmap="viridis", vmin=0, vmax=1)
for (row, col), weight in zip([(0, 0), (0, 1), (1, 0), (1, 1)], a_dp.flatten().tolist()):
    ax.text(col, row, f"{weight:.3f}", ha="center", va="center",
            color="black" if weight > 0.5 else "white")
ax.set_xticks([])
ax.set_yticks([])
ax.set_title("dp attention a", fontsize=9)
fig.colorbar(shown_map, ax=ax)
plt.show()

# %% [markdown]
# ### Step 3: the attended descriptor
#
# The attention-weighted sum of the local vectors (Eq. 2), $g_a = \sum_i a_i l_i$:
#
# $g_a = 0.083 \cdot (1, 0) + 0.083 \cdot (0, 1) + 0.610 \cdot (2, 1) + 0.225 \cdot (1, 1)
# = \mathbf{(1.528, 0.917)}$.
#
# It describes the image by its highest-scoring positions. In the paper the classifier sees
# only these descriptors, not $g$: the network *has* to route its decision through the
# attention map.

# %%
g_a = attend(local, a_dp, "softmax")
print("attended descriptor g_a:", g_a[0])
assert torch.allclose(g_a, torch.tensor([[1.528, 0.917]]), atol=1e-3)

# %% [markdown]
# ### A property of `pc`: the `g` term cancels
#
# $\langle u, l_i + g\rangle = \langle u, l_i\rangle + \langle u, g\rangle$, and the second term,
# here $2 \cdot 1 - 1 \cdot 1 = 1$, is **the same for every position**. A softmax does not change
# when the same number is added to all its inputs, so the `pc` attention map does not depend on
# $g$ at all: the scores (3, 0, 4, 2) and $\langle u, l_i\rangle$ alone (2, −1, 3, 1) give the
# same weights. With a softmax, `pc` learns a fixed "what is interesting" direction $u$; only
# `dp` makes the map depend on the image's global content. (With a sigmoid instead of the
# softmax the shift would matter; the library offers `normalize="sigmoid"`, used by some ports,
# as an option.)

# %%
zero_g = torch.zeros_like(g)
a_pc = normalize_scores(attn_lib.pc_compatibility(local, g, u), "softmax")
a_pc_without_g = normalize_scores(attn_lib.pc_compatibility(local, zero_g, u), "softmax")
print("pc attention with g:\n", a_pc[0, 0])
print("pc attention with g = 0:\n", a_pc_without_g[0, 0])
assert torch.allclose(a_pc, a_pc_without_g)
s_with = normalize_scores(attn_lib.pc_compatibility(local, g, u), "sigmoid")
s_without = normalize_scores(attn_lib.pc_compatibility(local, zero_g, u), "sigmoid")
print("sigmoid instead of softmax, with g:", s_with.flatten(), "without:", s_without.flatten())
assert not torch.allclose(s_with, s_without)

# %% [markdown]
# ## The library's attention block
#
# `AttentionEstimator` does steps 1–3 in one module and returns the descriptor, the map and
# the raw scores. Given our $u$, it must reproduce the hand-computed `pc` numbers:

# %%
estimator = AttentionEstimator(local_channels=2, global_channels=2, compatibility="pc")
with torch.no_grad():
    estimator.u.copy_(u)
    result = estimator(local, g)
print("scores:\n", result.scores[0, 0])
print("attention:\n", result.attention[0, 0])
print("descriptor:", result.descriptor[0])
assert torch.equal(result.scores, c_pc) and torch.allclose(result.attention, a_pc)
assert torch.allclose(result.descriptor, attend(local, a_pc))

# %% [markdown]
# Here is the estimator of the real network's first level, drawn from the module itself: every
# box holds the shape that this step produces for one image.

# %%
level1 = attn_lib.build_model("vgg-att3-concat-pc").estimators[0]
draw_estimator(level1, local_shape=(256, 32, 32), global_channels=512)
plt.show()

# %% [markdown]
# On the real network, level 1 is conv7 with 256 channels, while $g$ has 512. The two must have
# the same width before a dot product; by default a learned 1×1 convolution projects $l$ up to
# 512 (`match="project_l"`, the model files the authors' CIFAR run scripts train); their earlier
# files project $g$ down to 256 instead (`match="project_g"`).

# %%
for match in ("project_l", "project_g"):
    block = AttentionEstimator(256, 512, compatibility="pc", match=match)
    with torch.no_grad():
        out = block(torch.randn(2, 256, 32, 32), torch.randn(2, 512))
    sums = out.attention.flatten(1).sum(1)
    print(f"{match}: descriptor {tuple(out.descriptor.shape)}, "
          f"attention {tuple(out.attention.shape)}, each map sums to "
          f"{[round(v, 4) for v in sums.tolist()]}")
    assert torch.allclose(sums, torch.ones(2))

# %% [markdown]
# ## The full model
#
# `vgg-att3-concat-pc` puts one estimator on each of $l^1$, $l^2$, $l^3$, all given the same
# $g$, and **concatenates** the three descriptors for the classifier (Sec. 3.3). That
# classifier is batch norm, dropout and one linear layer: at test time batch norm is a fixed
# affine map and dropout is off, so it is linear in the descriptors. We run the model on a few
# of the sample images that ship with attn-lib and check that the pieces, called by hand, give
# the model's output.

# %%
samples = load_samples()
shown = one_per_class(samples.labels, 8)
x = normalize(samples.images[shown], samples.mean, samples.std)
labels = samples.labels[shown]
classes = samples.classes

model = attn_lib.build_model("vgg-att3-concat-pc", num_classes=len(classes)).eval()
print("classifier:", model.heads[0])
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
assert torch.allclose(logits, output.logits, atol=1e-5), "the pieces do not give model(x)"
print("the pieces give the same logits as model(x)")

# %% [markdown]
# ## What `g` does in trained models
#
# The hand example showed that `pc` cancels $g$. Does that hold in a trained network, and does
# `dp` really use $g$? attn-lib ships weights of both, trained on a JPEG (quality 75) copy of
# CIFAR-10 (`build_model(name, weights="cifar10")`). We give every image **another image's $g$** (a
# shuffle of the batch in which no image keeps its own) with `shuffled_global`, which swaps
# $g$ on its way from the backbone to the estimators and changes nothing else, and compare maps
# and logits with and without the swap.

# %%
def g_swap_effect(name):
    """Largest change of the attention weights and of the logits when g is shuffled, the
    share of the 100 sample images whose predicted class changes, and the accuracy on them
    with each image's own g and with the shuffled one."""
    trained = attn_lib.build_model(name, weights="cifar10")
    info = trained.weights_info
    x_all = normalize(samples.images, info["mean"], info["std"])
    permutation = derangement(len(x_all), torch.Generator().manual_seed(0))
    with torch.no_grad():
        own = trained(x_all)
        with shuffled_global(trained, permutation):
            swapped = trained(x_all)
    map_change = max((a - b).abs().max().item() for a, b in zip(own.attention, swapped.attention))
    logit_change = (own.logits - swapped.logits).abs().max().item()
    changed = (own.logits.argmax(1) != swapped.logits.argmax(1)).float().mean().item()
    accuracy = [(out.logits.argmax(1) == samples.labels).float().mean().item()
                for out in (own, swapped)]
    return map_change, logit_change, changed, accuracy


effect = {name: g_swap_effect(name) for name in ("vgg-att3-concat-pc", "vgg-att3-concat-dp")}
for name, (map_change, logit_change, changed, accuracy) in effect.items():
    print(f"{name}: attention changes by up to {map_change:.1e}, logits by up to "
          f"{logit_change:.1e}; {changed:.0%} of predictions change; accuracy {accuracy[0]:.0%} "
          f"with its own g, {accuracy[1]:.0%} with another image's")
pc_maps, pc_logits, _, _ = effect["vgg-att3-concat-pc"]
dp_maps, dp_logits, _, _ = effect["vgg-att3-concat-dp"]
assert pc_maps < 1e-5 and pc_logits < 1e-3, "pc should not depend on g (float rounding only)"
assert dp_maps > 1e3 * pc_maps and dp_logits > 1e3 * pc_logits, "dp should depend on g"

# %% [markdown]
# What is left of the change in the `pc` model is float rounding; the `dp` model's maps and
# logits move with $g$ (the printed share says how many of its predictions the swap flips on
# these 100 images). So in `pc` models $g$, and the quarter of the network that computes it,
# does nothing for the prediction; in `dp` models $g$ is the query that the local features are
# compared with.
#
# Does that query *help*? If $g$ told the `dp` model where this image's evidence lies, another
# image's $g$ should hurt its accuracy. 100 images are too few to tell (each is one point), so
# the next cell also reads attn-lib's CPU study, which measured the change on all 10,000 test
# images for each seed of the same training (`results/cifar10-cpu`).

# %%
study = study_results("cifar10-cpu")
if study:
    delta, spread = study["summary"]["vgg-att3-concat-dp"]["g_shuffle_delta_acc"]
    seeds = study["summary"]["vgg-att3-concat-dp"]["seeds"]
    print(f"the study: dp's accuracy with another image's g minus with its own: "
          f"{100 * delta:+.1f} ± {100 * spread:.1f} points (mean ± std over seeds {seeds})")
    own, swapped = effect["vgg-att3-concat-dp"][3]
    print(f"here, on 100 images: {100 * (swapped - own):+.0f} points")
    per_seed = [r["g_shuffle"]["delta_acc"] for r in study["runs"]
                if r["model"] == "vgg-att3-concat-dp"]
    print("per seed:", [f"{100 * d:+.2f}" for d in per_seed])
    assert min(per_seed) > 0, "the prose below says every seed gained from another image's g"

# %% [markdown]
# In the study the shuffled $g$ does not lower `dp`'s accuracy: it *raises* it slightly, in
# every seed. The query moves the maps, but the trained $g$ does not steer
# them towards better evidence than a random image's $g$ does: a model can use $g$ in its
# computation without $g$ carrying the information the paper's framing suggests. It is a
# reminder that "the map depends on $g$" and "$g$ helps the model find the object" are two
# different claims, and only the second is about attention working as intended.

# %% [markdown]
# ## All the variants
#
# The paper compares attention at **2 levels** (conv10, conv13) or **3** (adding conv7),
# descriptors **concatenated** into one classifier or classified **independently** with the
# class scores averaged, and the two compatibility functions. Beside them: the paper's baseline
# `vgg` (the standard CIFAR VGG, pooled after every block) and `vgg-noatt` (the attention
# backbone without attention). Parameters are counted at the paper's width on PyTorch's `meta`
# device, which records shapes without allocating memory; the map shapes come from a narrow
# copy (`width=1/16`), which has the same spatial sizes.

# %%
num_classes = len(classes)
print(f"{'model':<22}{'parameters':>12}   attention map sizes")
for name in attn_lib.list_models():
    with torch.device("meta"):
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
# ## Attention on images: untrained, then trained
#
# Each row is one image: the image with the model's prediction, then the map of each level
# upsampled to the image and overlaid, red for the highest attention in that map and blue for
# the lowest. **Each map is min-max scaled on its own**, so colours do not compare across levels
# or images: a map that is nearly flat is drawn with the same full range of colours as a
# peaked one.
#
# First the untrained full-width model from above: its $u$ and features are random, so nothing
# ties its maps to the object.

# %%
display(plot_attention_grid(model, x[:4], labels[:4], classes, samples.mean, samples.std))

# %% [markdown]
# Then the shipped `pc` weights, trained on CIFAR-10 (the cell prints their width, training and
# test accuracy; some of the predictions may be wrong). Compare where the maps of each level
# sit relative to the objects; notebook 04 looks at trained maps in detail and measures, on
# data with object masks, how often they land on the object.

# %%
trained = attn_lib.build_model("vgg-att3-concat-pc", weights="cifar10")
info = trained.weights_info
entry = next(e for e in attn_lib.list_weights(trained.name) if e["weights"] == info["weights"])
print(f"width {entry['width']:g}, {entry['trained']['epochs']} epochs on "
      f"{entry['trained']['hardware']}; test accuracy {entry['test_acc']:.1%}")
x_trained = normalize(samples.images[shown], info["mean"], info["std"])
display(plot_attention_grid(trained, x_trained[:4], labels[:4], info["classes"], info["mean"],
                            info["std"]))

# %% [markdown]
# ## Exercises
#
# Solutions are in the appendix at the end; try first.
#
# 1. **Direction versus length.** Halve $l_3$ to (1, 0.5): it points the same way, only
#    shorter. Which position wins the `dp` softmax now, and why?
# 2. **A `pc` model that has learned nothing.** What attention map and which $g_a$ does `pc`
#    give when $u = 0$? Which familiar operation is that?
# 3. **Temperature.** Multiply $g$ by 10 in the `dp` example. Does the map get sharper or
#    flatter, and what does that tell you about the scale of `dp` scores in a trained network?

# %% [markdown]
# ## What you learned
#
# * Global average pooling is attention with equal weights; learned attention computes the
#   weights from the features, scores every position, normalises the scores with a softmax over
#   the whole image and takes the weighted sum.
# * A dot product rewards length as much as alignment: in `dp`, a position with large
#   activations can outscore one that points exactly along $g$.
# * In `pc`, $\langle u, g\rangle$ is the same at every position and the softmax cancels it: the
#   map depends on the local features and $u$ only, trained or not. Only `dp` (or a sigmoid)
#   lets $g$ steer the attention, and in attn-lib's study a `dp` model did no worse with
#   another image's $g$: steering is not the same as helping.
# * The classifier sees only the attended descriptors, so every prediction passes through the
#   attention maps.
#
# Next, [03 · Train on Colab](03_train_on_colab.ipynb) trains the model on CIFAR-10.

# %% [markdown]
# ## Appendix: solutions
#
# <details><summary><b>Solution 1</b> (click to open)</summary>
#
# The `dp` scores become (1, 1, 1.5, 2), so position 4 wins. A dot product is length × length ×
# cosine. Before, $l_3$ was the less aligned of the two (its cosine with $g$ is below $l_4$'s,
# which is exactly 1) but the longer, and its length more than made up for its angle. Halving
# it keeps its angle and halves its score, and now the better-aligned $l_4$ wins. The cell
# prints both positions' lengths and cosines.
#
# </details>

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution 1: the code
shorter = l_vectors.clone()
shorter[2] = torch.tensor([1.0, 0.5])
c_short = attn_lib.dp_compatibility(shorter.T.reshape(1, 2, 2, 2), g)
print("dp scores:", c_short.flatten().tolist())
for name, vector in (("l3 before", l_vectors[2]), ("l3 halved", shorter[2]),
                     ("l4", l_vectors[3])):
    print(f"{name}: length {vector.norm():.3f}, cos with g "
          f"{F.cosine_similarity(vector, g[0], dim=0):.3f}")
assert c_short.flatten().argmax() == 3

# %% [markdown]
# <details><summary><b>Solution 2</b> (click to open)</summary>
#
# All scores are 0, so the softmax gives the uniform map $a_i = 1/4$ and $g_a$ is the plain
# average of the local vectors: global average pooling, the starting point above.
#
# </details>

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution 2: the code
a_zero = normalize_scores(attn_lib.pc_compatibility(local, g, torch.zeros(2)), "softmax")
print("attention with u = 0:", a_zero.flatten().tolist())
assert torch.allclose(attend(local, a_zero), F.adaptive_avg_pool2d(local, 1).flatten(1))

# %% [markdown]
# <details><summary><b>Solution 3</b> (click to open)</summary>
#
# Sharper: every score is multiplied by 10, and a softmax of larger numbers puts more of its
# weight on the largest. `dp` scores grow with the length of $l_i$ and $g$, so in a trained
# network the size of the activations sets how peaked the maps are; `pc` learns that scale in
# the length of $u$.
#
# </details>

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution 3: the code
a_hot = normalize_scores(attn_lib.dp_compatibility(local, 10 * g), "softmax")
print("dp attention with 10 g:", [round(v, 4) for v in a_hot.flatten().tolist()])
assert a_hot.max() > a_dp.max()
