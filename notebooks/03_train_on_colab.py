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
# # 3 · Train the attention VGG on CIFAR-10 (Colab GPU)
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/attn-lib/attn-lib/blob/main/notebooks/03_train_on_colab.ipynb)
#
# Notebooks 01 and 02 built `vgg-att3-concat-pc`, the model of
# [*Learn To Pay Attention*](https://arxiv.org/abs/1804.02391) (Jetley et al., ICLR 2018): the
# CIFAR VGG with attention at conv7, conv10 and conv13, classifying from the attended
# descriptors alone,
#
# $$c_i = \langle u,\ l_i + g \rangle \ \ (\text{pc}) \quad\text{or}\quad
#   c_i = \langle l_i,\ g \rangle \ \ (\text{dp}), \qquad
#   a_i = \frac{\exp(c_i)}{\sum_{j=1}^{n} \exp(c_j)} \ \ \text{(Eq. 1)}, \qquad
#   g_a = \sum_{i=1}^{n} a_i\, l_i \ \ \text{(Eq. 2)}.$$
#
# Here we train it on CIFAR-10, as in the paper's classification experiments, and train the
# paper's baseline `vgg` (the standard CIFAR VGG) with the same budget to compare. First one
# training step written out by hand, then `attn_lib.train` for the real run.
#
# **Runtime.** Use a GPU: *Runtime → Change runtime type → T4 GPU* (the notebook asks Colab for
# one). Without a GPU the notebook says so and switches to a CPU-sized run: a 1/16-width model
# on 10,000 training images for 3 epochs, to see every step work (its accuracy says little about
# the paper's). At the 515 images/s that attn-lib's CPU study measured for this model on two
# cores, that is about a minute of training, plus data loading and evaluation (an estimate).
#
# **Budget.** On a GPU the default is a *reduced* run: the library's `fast` recipe (SGD with
# Nesterov momentum, one-cycle learning rate, label smoothing, batch 512, mixed precision, the
# whole training set kept on the GPU) cut to 10 epochs per model. Set `FULL_RECIPE = True` for
# the paper's own schedule instead (300 epochs, learning rate halved every 25 epochs), which
# takes many hours: longer than a free Colab session, which is what Drive and resuming are for.
# As a guide, one training epoch of the attention model is about 1.2 PFLOP (3.9 GMAC per image
# forward, ×3 with the backward pass, ×2 FLOP per multiply-add, 50,000 images); at the
# 10–20 TFLOP/s that a T4 might sustain in fp16 that is 1–2 minutes per epoch. The baseline
# `vgg` pools after every block and needs about a twelfth of that (0.31 GMAC per image).
# **These T4 figures are estimates from the operation count, not measurements;** the notebook
# prints the time it measures, on the hardware it names.
#
# **Disconnects, and notebook 04.** Every epoch writes `last.pt` (and `best.pt` when the test
# accuracy improves) to the run folder, whose name holds the model, data set, recipe and epoch
# budget. Rerun the notebook after a disconnect and training resumes from `last.pt`; a finished
# run is loaded instead of retrained. Each Colab notebook runs on its own machine, so notebook
# 04 can only read these runs if they are on Google Drive: set `USE_DRIVE = True` here and
# there.

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

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from IPython.display import display

import attn_lib
from attn_lib.data import load_dataset, normalize
from attn_lib.study.scales import REFERENCE_NOTE, REFERENCES
from attn_lib.training.recipe import get_preset

if attn_lib.__version__ != ATTN_LIB_VERSION:
    message = (f"this notebook was written for attn-lib {ATTN_LIB_VERSION}, "
               f"but {attn_lib.__version__} is imported")
    if IN_COLAB:
        raise RuntimeError(f"{message}; restart the session (Runtime -> Restart session) and "
                           "run the notebook again")
    print("warning:", message)
print(f"attn-lib {attn_lib.__version__}, torch {torch.__version__}, "
      f"smoke mode: {attn_lib.smoke_mode()}")

# %% [markdown]
# ## Settings
#
# The two switches a reader may want to change are at the top. What is trained follows from
# them and from the hardware: `PRESET` names the library's recipe and `SETTINGS` overrides some
# of its values. In smoke mode (`ATTN_LIB_SMOKE=1`, used by the tests) everything shrinks to
# seconds on a CPU: a narrow model, a few hundred offline synthetic images, two epochs.

# %%
FULL_RECIPE = False  # True: the paper's schedule (300 epochs) instead of 10 fast epochs
USE_DRIVE = False  # True on Colab: keep the run folders in Google Drive (asks for permission)

SMOKE = attn_lib.smoke_mode()
MODEL, BASELINE = "vgg-att3-concat-pc", "vgg"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HARDWARE = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "CPU"
if SMOKE:
    DATASET, PRESET, SETTINGS, BUDGET = "synthetic", "smoke", {}, "smoke"
elif DEVICE == "cpu":
    print("No GPU on this runtime: switching to a CPU-sized run (1/16 width, 10,000 training "
          "images, 3 epochs). On Colab choose Runtime -> Change runtime type -> T4 GPU for the "
          "real one" + (" (FULL_RECIPE needs a GPU too)." if FULL_RECIPE else "."))
    DATASET, PRESET, BUDGET = "cifar10", "fast", "cpu-sized"
    SETTINGS = dict(epochs=3, width=1 / 16, batch_size=128, lr=0.1, limit_train=10_000,
                    limit_test=2_000, tta=False)
elif FULL_RECIPE:
    DATASET, PRESET, SETTINGS, BUDGET = "cifar10", "paper", {}, "paper"
else:
    DATASET, PRESET, SETTINGS, BUDGET = "cifar10", "fast", dict(epochs=10), "fast"
EPOCHS = SETTINGS.get("epochs", get_preset(PRESET).epochs)
WIDTH = SETTINGS.get("width", get_preset(PRESET).width)

if IN_COLAB and USE_DRIVE:
    from google.colab import drive

    drive.mount("/content/drive")
    RUNS = Path("/content/drive/MyDrive/attn-lib/runs")
else:
    RUNS = Path("runs")
RUNS.mkdir(parents=True, exist_ok=True)


def run_folder(name):
    """A run's folder: model, data set, recipe and epoch budget, so that another budget starts
    a new run instead of resuming (and being refused by) this one."""
    return RUNS / f"{name}-{DATASET}-{BUDGET}-{EPOCHS}ep"


print(f"dataset {DATASET}, preset {PRESET}, {EPOCHS} epochs, width {WIDTH:g}, "
      f"hardware {HARDWARE}\nruns: {run_folder(MODEL)} and {run_folder(BASELINE)}")

# %% [markdown]
# ## One training step, by hand
#
# Before the library takes over, here is what one step of training is: take a batch, run the
# model forward, compute the cross-entropy loss **on the logits** (`F.cross_entropy` applies the
# softmax itself), backpropagate to get a gradient for every parameter, and let the optimiser
# move the parameters a little against their gradients. Five batches of 32 images:

# %%
train_set = load_dataset(DATASET, split="train",
                         limit=SETTINGS.get("limit_train", get_preset(PRESET).limit_train))
torch.manual_seed(0)
net = attn_lib.build_model(MODEL, num_classes=len(train_set.classes), width=WIDTH).to(DEVICE)
net.train()  # dropout on, batch norm uses the batch's statistics
optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
order = torch.randperm(len(train_set))
for step in range(5):
    batch = order[step * 32:(step + 1) * 32]
    xb = normalize(train_set.images[batch], train_set.mean, train_set.std).to(DEVICE)
    yb = train_set.labels[batch].to(DEVICE)
    out = net(xb)  # forward: logits and one attention map per level
    loss = F.cross_entropy(out.logits, yb)  # loss on the logits
    optimizer.zero_grad()
    loss.backward()  # gradients of the loss for every parameter
    optimizer.step()  # SGD with momentum and weight decay
    print(f"step {step + 1}: loss {loss.item():.3f}")
    assert math.isfinite(loss.item())
print(f"(a loss of ln({len(train_set.classes)}) = {math.log(len(train_set.classes)):.3f} "
      "is what guessing uniformly gives)")

# %% [markdown]
# Five steps are far too few to learn anything; a real run takes thousands. `attn_lib.train`
# runs the same loop and adds what a good run needs: shuffled batches every epoch, random crops
# and flips, a learning-rate schedule, mixed precision on a GPU, an evaluation on the test set
# after every epoch and checkpoints to resume from (the `fast` recipe also smooths the labels).

# %% [markdown]
# ## Train the attention model
#
# `attn_lib.train` loads the data, builds the model by name, trains it with a progress bar per
# epoch and evaluates on the test set after every epoch. `resume=True` makes the cell safe to
# rerun: it continues from the run folder's `last.pt` if there is one, and starts fresh if not.

# %%
result = attn_lib.train(MODEL, DATASET, preset=PRESET, out_dir=run_folder(MODEL), resume=True,
                        device=DEVICE, **SETTINGS)
last = result.history[-1]
print(f"epoch {last['epoch']}: train accuracy {last['train_acc']:.1%}, "
      f"test accuracy {last['test_acc']:.1%}")

# %% [markdown]
# ## Learning curves
#
# Loss and accuracy per epoch, on the training set (with augmentation) and on the test set.

# %%
display(attn_lib.plot_history(result.history, title=MODEL))

# %% [markdown]
# ## What the run folder holds
#
# `last.pt` is the resumable state (weights, optimiser, schedule, random number generators),
# `best.pt` the weights of the best epoch, `metrics.jsonl` one line of metrics per epoch and
# `config.json` the settings. Notebook 04 reads `best.pt` and `config.json`.

# %%
for path in sorted(result.run_dir.iterdir()):
    print(f"{path.name:<16}{path.stat().st_size / 1e6:8.2f} MB")
config = json.loads((result.run_dir / "config.json").read_text())
assert config["model"] == MODEL and config["recipe"]["epochs"] == EPOCHS

# %% [markdown]
# ## Resuming after a disconnect
#
# Colab can drop a session at any time; the run folder keeps `last.pt` from the last finished
# epoch. Running the training call again with `resume=True` restores the weights, optimiser,
# schedule and random state from it and trains only the epochs that are missing. Here the run
# is complete, so the same call just loads it back and trains nothing.

# %%
start = time.perf_counter()
again = attn_lib.train(MODEL, DATASET, preset=PRESET, out_dir=run_folder(MODEL), resume=True,
                       device=DEVICE, **SETTINGS)
print(f"rerun took {time.perf_counter() - start:.1f} s: {len(again.history)} epochs, "
      f"as before ({len(result.history)})")
assert again.history == result.history

# %% [markdown]
# ## Load the best checkpoint and evaluate it
#
# `load_model` rebuilds the model from the file alone (its name and options are stored in it)
# and returns it in evaluation mode on the device we ask for, together with the data statistics
# it was trained with.

# %%
model, data_info = attn_lib.load_model(result.run_dir, map_location=DEVICE)
test_set = load_dataset(data_info["dataset"], split="test",
                        limit=500 if SMOKE else SETTINGS.get("limit_test"))
attention_metrics = attn_lib.evaluate(model, test_set)
print(f"{model.name}: {attention_metrics['acc']:.2%} test accuracy "
      f"({len(test_set)} images), loss {attention_metrics['loss']:.3f}")

# %% [markdown]
# ## The baseline: the paper's VGG
#
# The paper's claim is not only that attention maps look sensible but that classifying from the
# attended descriptors generalises at least as well as the standard network. Its baseline is
# the standard CIFAR VGG (`vgg`: a pool after every block, 15.0 M parameters). We train it with
# the same recipe and budget (same cell, other name).

# %%
baseline_result = attn_lib.train(BASELINE, DATASET, preset=PRESET,
                                 out_dir=run_folder(BASELINE), resume=True, device=DEVICE,
                                 **SETTINGS)
baseline_model, _ = attn_lib.load_model(baseline_result.run_dir,
                                        map_location=DEVICE)
baseline_metrics = attn_lib.evaluate(baseline_model, test_set)
print(f"{BASELINE}: test accuracy {baseline_metrics['acc']:.2%}")

# %% [markdown]
# ## Comparison, with the published numbers
#
# Test accuracy of each model's best checkpoint, its size and its training time, all measured
# in this run, on the hardware printed below; then the reference numbers for the same models,
# each labelled with where it comes from, and the cells of the paper's Table 1 that are
# confirmed here (on CIFAR-100). A reduced budget says little about the final gap
# between the two: the references come from full-width models trained for 300 epochs, and a
# single short run also varies with the random seed.

# %%
def summary(name, run, metrics, network):
    minutes = sum(row["time_s"] for row in run.history) / 60
    params = sum(p.numel() for p in network.parameters())
    return (f"{name:<22}{metrics['acc']:>10.2%}{params:>14,}{len(run.history):>8}"
            f"{minutes:>10.1f}")


print(f"{'model':<22}{'test acc':>10}{'parameters':>14}{'epochs':>8}{'minutes':>10}")
print(summary(MODEL, result, attention_metrics, model))
print(summary(BASELINE, baseline_result, baseline_metrics, baseline_model))
print(f"\nmeasured on: {HARDWARE}; dataset: {DATASET}; preset: {PRESET}; "
      f"{len(test_set)} test images")
references = [(name, ref) for name in (MODEL, BASELINE)
              for ref in REFERENCES.get(DATASET, {}).get(name, [])]
print("\nreferences:" if references else f"\nno published numbers for {DATASET}")
for name, ref in references:
    print(f"{name:<22}{ref['acc']:>10.2%}   {ref['kind']}, {ref['source']}")
if references:
    print(REFERENCE_NOTE)
print("\nthe paper's Table 1 (the cells confirmed here are on CIFAR-100, not CIFAR-10):")
for name, refs in REFERENCES["cifar100"].items():
    for ref in refs:
        if ref["kind"].startswith("paper"):
            print(f"{name:<22}{ref['acc']:>10.2%}   {ref['kind']}, {ref['source']}")

# %% [markdown]
# ## Exercises
#
# Solutions are in the appendix at the end; try first.
#
# 1. **Reading the history.** In which epoch did the attention model reach its best test
#    accuracy, and how far apart were its training and test accuracy then?
# 2. **What a `pc` step does not train.** Repeat a few hand-made steps on a fresh copy of the
#    model without weight decay and compare how far each parameter moved. Which part of the
#    network stays put, and why (notebooks 01 and 02)?
# 3. **Why the budget is in the folder name.** What happens if you resume a run with a
#    different recipe? Try it on the attention model's run folder with `preset="paper"`.

# %% [markdown]
# ## What you learned
#
# * A training step is forward, loss on the logits, backward, optimiser step; a training run is
#   that step repeated with shuffling, augmentation, a schedule and regular evaluation.
# * Checkpoints every epoch make a long run survive disconnects: a resumed run continues
#   exactly where it stopped, and keeps the settings it started with.
# * A comparison is only as good as its budget: short runs show the pipeline works; the paper's
#   numbers need the paper's schedule, and several seeds.
#
# Next, [04 · Plot attention maps](04_plot_attention_maps.ipynb) looks at where a trained model
# attends. It runs on its own machine on Colab: with `USE_DRIVE = True` in both notebooks it
# finds these runs on Drive; otherwise it uses the trained weights that ship with attn-lib.

# %% [markdown]
# ## Appendix: solutions
#
# **1.** `result.history` has one row per epoch; the best epoch is the one `best.pt` holds.

# %%
best_row = max(result.history, key=lambda row: row["test_acc"])
print(f"best epoch {best_row['epoch']}: test {best_row['test_acc']:.1%}, "
      f"train {best_row['train_acc']:.1%}, "
      f"gap {best_row['train_acc'] - best_row['test_acc']:+.1%}")
assert best_row["test_acc"] == max(row["test_acc"] for row in result.history)

# %% [markdown]
# **2.** The global branch (conv14, conv15 and the FC layer that make $g$) stays put: in a `pc`
# model $g$ enters the scores only through $\langle u, g\rangle$, which the softmax cancels, so
# its gradient is float rounding. (With weight decay on, that decay is all that moves it.)

# %%
torch.manual_seed(0)
fresh = attn_lib.build_model(MODEL, num_classes=len(train_set.classes), width=1 / 16).train()
before = {n: p.detach().clone() for n, p in fresh.named_parameters()}
sgd = torch.optim.SGD(fresh.parameters(), lr=0.05, momentum=0.9)
for step in range(3):
    batch = order[step * 32:(step + 1) * 32]
    xb = normalize(train_set.images[batch], train_set.mean, train_set.std)
    sgd.zero_grad()
    F.cross_entropy(fresh(xb).logits, train_set.labels[batch]).backward()
    sgd.step()
moved = {"global branch": 0.0, "everything else": 0.0}
for n, p in fresh.named_parameters():
    part = "global branch" if n.startswith("backbone.global_") else "everything else"
    moved[part] = max(moved[part], (p.detach() - before[n]).abs().max().item())
print({part: f"{value:.1e}" for part, value in moved.items()})
assert moved["global branch"] < 1e-3 * moved["everything else"]

# %% [markdown]
# **3.** A resumed run keeps the settings it started with, so asking for another recipe is
# refused with a message instead of silently mixing two recipes in one run. That is why each
# budget gets its own folder: switching `FULL_RECIPE` starts a new run next to the old one.

# %%
other = "fast" if PRESET == "paper" else "paper"
try:
    attn_lib.train(MODEL, DATASET, preset=other, out_dir=run_folder(MODEL), resume=True,
                   device=DEVICE)
except ValueError as error:
    print("refused:", error)
else:
    raise AssertionError("resuming with another preset should be refused")
