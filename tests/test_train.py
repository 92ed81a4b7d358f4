"""Training: learning, metrics files, resume after SIGKILL, NaN stop, presets and schedules."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import LEARN

import attn_lib
from attn_lib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from attn_lib.data import load_dataset
from attn_lib.figures import plot_history
from attn_lib.models import ModelOutput
from attn_lib.training import NonFiniteLossError, Recipe, evaluate, read_metrics
from attn_lib.training.optim import LRSchedule
from attn_lib.training.precision import resolve_precision
from attn_lib.training.recipe import default_preset_name, get_preset

#: Timing fields differ between runs; everything else must match exactly after a resume.
TIME_KEYS = {"train_time_s", "time_s", "elapsed_s", "images_per_s", "warmup_s"}
REPO = Path(__file__).resolve().parents[1]
#: Fused SGD runs on CPUs from PyTorch 2.4 (on CUDA from 2.3, the floor of pyproject.toml).
needs_cpu_fused_sgd = pytest.mark.skipif(
    tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 4),
    reason="fused SGD on CPU needs PyTorch >= 2.4")


def test_tiny_run_beats_chance_by_a_wide_margin(learned):
    chance = 1 / 8
    last = learned.history[-1]
    assert last["test_acc"] > 3 * chance, learned.history
    assert last["train_loss"] < learned.history[0]["train_loss"]
    assert not learned.model.training


def test_metrics_file_matches_history_and_run_folder_is_complete(learned):
    rows = read_metrics(learned.run_dir)
    assert rows == learned.history
    with open(learned.run_dir / "metrics.jsonl") as f:
        assert [json.loads(line) for line in f] == learned.history
    required = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "test_acc_tta",
                "lr", "time_s"}
    assert all(required <= set(row) for row in rows)
    assert [row["epoch"] for row in rows] == list(range(1, LEARN["epochs"] + 1))
    names = {p.name for p in learned.run_dir.iterdir()}
    assert {"last.pt", "metrics.jsonl", "config.json", "curves.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    config = json.loads((learned.run_dir / "config.json").read_text())
    assert config["model"] == "vgg-att3-concat-pc"
    assert config["recipe"]["epochs"] == LEARN["epochs"]


def test_attention_png_is_saved(learned):
    pytest.importorskip("attn_lib.maps.viz")
    assert (learned.run_dir / "attention.png").stat().st_size > 1000


def test_evaluate_and_load_model_agree_with_history(learned):
    test = load_dataset("synthetic", "test", limit=LEARN["limit_test"])
    metrics = evaluate(learned.model, test, tta=True)
    assert metrics["n"] == len(test)
    assert metrics["acc"] == pytest.approx(learned.history[-1]["test_acc"], abs=1e-6)
    assert metrics["acc_tta"] == pytest.approx(learned.history[-1]["test_acc_tta"], abs=1e-6)
    model, info = attn_lib.load_model(learned.run_dir / "last.pt")
    assert info["dataset"] == "synthetic" and len(info["classes"]) == 8
    assert evaluate(model, test)["acc"] == pytest.approx(metrics["acc"], abs=1e-6)
    fig = plot_history(learned.run_dir)
    assert len(fig.axes) == 2


def test_resume_of_a_finished_run_returns_it(learned):
    again = attn_lib.train(out_dir=learned.run_dir, resume=True, progress=False,
                           save_attention=False, device="cpu")
    assert again.history == learned.history


def test_resume_refuses_other_settings(learned):
    with pytest.raises(CheckpointError, match="not the requested 'vgg'"):
        attn_lib.train("vgg", out_dir=learned.run_dir, resume=True, progress=False,
                       device="cpu")
    with pytest.raises(ValueError, match=f"epochs: {LEARN['epochs']} -> 9"):
        attn_lib.train(out_dir=learned.run_dir, resume=True, epochs=9, progress=False,
                       device="cpu")
    with pytest.raises(ValueError, match="--resume"):
        attn_lib.train(out_dir=learned.run_dir, progress=False, device="cpu")


def _cli(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "attn_lib", "train", "--out", str(run_dir), "--quiet",
            "--device", "cpu", *extra]


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    settings = ["--preset", "smoke", "--epochs", "4", "--limit-train", "160", "--limit-test",
                "64", "--batch-size", "32", "--ema", "0.9", "--seed", "3", "--deterministic"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ATTN_LIB_SMOKE": "0"}
    full, broken = tmp_path / "full", tmp_path / "broken"
    reference = subprocess.Popen(_cli(full, *settings), env=env, cwd=REPO,
                                 stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_cli(broken, *settings), env=env, cwd=REPO,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (broken / "last.pt").exists():
        assert victim.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(broken / "last.pt")["epoch"]
    assert 1 <= killed_at < 4, "the kill came too late to test resuming"

    resumed = subprocess.run(_cli(broken, "--resume"), env=env, cwd=REPO,
                             stderr=subprocess.PIPE, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    def strip(rows):
        return [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in rows]

    assert len(read_metrics(broken)) == 4
    assert strip(read_metrics(broken)) == strip(read_metrics(full))
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(broken / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert not [p for p in broken.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("read_every", [1, 3])
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, read_every):
    # A GPU run reads the loss back only every few steps (read_every 3 here); the message must
    # still name the step whose loss was NaN, not the step that looked.
    import attn_lib.training.epoch as epoch

    monkeypatch.setattr(epoch, "HOST_READ_EVERY", {"cpu": read_every})
    classes = len(load_dataset("synthetic", limit=1).classes)
    model = attn_lib.build_model("vgg-att2-concat-pc", num_classes=classes, width=0.0625)
    calls = {"train": 0}

    def poison(module, inputs, output):  # a NaN in the 2nd epoch (4 steps per epoch)
        if module.training:
            calls["train"] += 1
            if calls["train"] > 5:
                return ModelOutput(output.logits * float("nan"), output.attention)
        return output

    model.register_forward_hook(poison)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"became nan in epoch 2, step 2;.*last good "
                                                 r"checkpoint"):
        attn_lib.train(model, "synthetic", out_dir=run_dir, preset="smoke", epochs=3,
                       limit_train=128, limit_test=32, batch_size=32, progress=False,
                       device="cpu")
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
               if v.is_floating_point())
    assert len(read_metrics(run_dir)) == 1
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_presets_and_precision_choices(monkeypatch):
    assert default_preset_name("cpu", smoke=True) == "smoke"
    assert default_preset_name("cuda", smoke=False) == "fast"
    assert default_preset_name("cpu", smoke=False) == "cpu"
    paper = get_preset("paper")
    assert (paper.epochs, paper.batch_size, paper.lr, paper.schedule) == (300, 128, 0.1, "step")
    assert resolve_precision(torch.device("cpu")) == "fp32"
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision(torch.device("cpu"), "fp16")
    for major, expected in ((7, "fp16"), (8, "bf16"), (9, "bf16")):  # T4/V100, A100, H100
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, m=major: (m, 0))
        assert resolve_precision(torch.device("cuda"), "auto") == expected
    with pytest.raises(ValueError, match="lr must be a positive"):
        Recipe(name="x", epochs=1, batch_size=1, lr=-1.0)
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("turbo")



def test_per_model_adjustments_match_whole_names():
    # paper: batch 64 for the three-level attention models only (the authors' run scripts)
    assert get_preset("paper", "vgg-att3-concat-pc").batch_size == 64
    assert get_preset("paper", "vgg-att3-indep-dp").batch_size == 64
    assert get_preset("paper", "vgg-att2-concat-pc").batch_size == 128
    assert get_preset("paper", "vgg").batch_size == 128
    # cpu: the pooled baseline trains longer; "vgg" must not match "vgg-noatt" or "vgg-att3-..."
    assert get_preset("cpu", "vgg").epochs == 30
    assert get_preset("cpu", "vgg-noatt").epochs == get_preset("cpu").epochs == 10
    assert get_preset("cpu", "vgg-att3-concat-pc").epochs == 10
    assert get_preset("cpu", "vgg").batch_size == get_preset("cpu").batch_size

def test_schedules():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    one = LRSchedule(opt, Recipe(name="t", epochs=10, batch_size=1, lr=1.0, warmup=0.2), 10)
    lrs = [one.lr_at(s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0)
    assert lrs.index(max(lrs)) == 20 and lrs[-1] < 1e-3
    assert all(a <= b for a, b in zip(lrs[:20], lrs[1:21]))
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:]))
    paper = LRSchedule(opt, get_preset("paper"), 391)
    assert paper.lr_at(0) == 0.1 and paper.lr_at(391 * 25) == 0.05
    assert paper.lr_at(391 * 299) == pytest.approx(0.1 * 0.5**11)
    one.step()
    assert opt.param_groups[0]["lr"] == one.lr_at(1)


def test_compile_warm_up_leaves_no_trace():
    from attn_lib.training.epoch import warm_up

    torch.manual_seed(0)
    model = attn_lib.build_model("vgg-att3-concat-pc", width=0.0625, dropout=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = warm_up(model, model, (4, 3, 32, 32), torch.device("cpu"), "fp32", False)
    assert seconds > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    # The check can fail: the same pass without the restore moves the batch-norm statistics.
    model(torch.randn(4, 3, 32, 32))
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@needs_cpu_fused_sgd
def test_optimizer_state_keeps_the_loading_optimizers_implementation():
    from attn_lib.training.optim import build_optimizer, load_optimizer_state

    recipe = get_preset("smoke")
    model = torch.nn.Linear(3, 2)
    cpu_opt = build_optimizer(model, recipe, torch.device("cpu"))
    assert not cpu_opt.param_groups[0].get("fused")
    assert cpu_opt.param_groups[0]["nesterov"] and cpu_opt.param_groups[0]["lr"] == recipe.lr
    # A checkpoint written by a fused (GPU-style) optimizer, resumed by a plain one.
    fused = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)
    model(torch.randn(5, 3)).sum().backward()
    fused.step()
    load_optimizer_state(cpu_opt, fused.state_dict())
    assert not cpu_opt.param_groups[0].get("fused")
    assert cpu_opt.param_groups[0]["lr"] == 0.1
    momentum = fused.state[model.weight]["momentum_buffer"]
    assert torch.equal(cpu_opt.state[model.weight]["momentum_buffer"], momentum)


@pytest.mark.skipif(
    os.environ.get("ATTN_LIB_SKIP_SLOW_TESTS") == "1",
    reason="torch.compile takes ~30-60 s on 2 cores; ATTN_LIB_SKIP_SLOW_TESTS=1 skips it",
)
def test_compile_warm_up_changes_nothing_but_the_clock(tmp_path, monkeypatch):
    # The GPU recipe compiles, with a one-time warm-up pass before the clock starts. That pass
    # must leak nothing into training (weights, batch-norm statistics): a compiled run with it
    # equals one without it exactly. (Compiled and eager runs differ in the last bits, which a
    # few steps of an untrained model amplify, so they are not compared.)
    import attn_lib.training.epoch as epoch

    kw = dict(preset="smoke", width=0.0625, limit_train=128, limit_test=64, epochs=2, device="cpu",
              progress=False, save_attention=False, compile=True)
    with monkeypatch.context() as patch:
        patch.setattr(epoch, "warm_up", lambda *args, **kwargs: 0.0)
        cold = attn_lib.train(out_dir=tmp_path / "cold", **kw).history
    # Without the warm-up, this process's first compilation lands in epoch 1's training time.
    assert cold[0]["warmup_s"] == 0
    assert cold[0]["train_time_s"] > 2 * cold[1]["train_time_s"]
    warmed = attn_lib.train(out_dir=tmp_path / "warmed", **kw).history
    assert warmed[0]["warmup_s"] > 0 and warmed[1]["warmup_s"] == 0

    def strip(rows):
        return [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in rows]

    assert strip(warmed) == strip(cold)


def test_bf16_autocast_trains_with_fp32_weights_and_loss(tmp_path):
    # The H100 path's numerics, on the CPU: convolutions run in bf16 under autocast, while the
    # weights, the optimiser state and the loss stay fp32.
    model = attn_lib.build_model("vgg-att3-concat-pc", num_classes=8, width=0.0625,
                                 dropout=False)
    conv_dtypes = set()
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, out: conv_dtypes.add(out.dtype))
    result = attn_lib.train(model, "synthetic", preset="smoke", precision="bf16", device="cpu",
                            out_dir=tmp_path / "run", progress=False, save_attention=False)
    assert torch.bfloat16 in conv_dtypes
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["config"]["recipe"]["precision"] == "bf16"
    momentum = saved["train_state"]["optimizer"]["state"][0]["momentum_buffer"]
    assert momentum.dtype == torch.float32


def test_ema_is_the_ramped_moving_average_of_the_weights():
    from attn_lib.training.optim import EMA

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9)
    expected = model[0].weight.detach().clone()
    for n in range(1, 6):
        with torch.no_grad():
            model[0].weight.add_(1.0)  # in place, as an optimiser step is
        model(torch.randn(4, 2))  # moves the BN statistics and its step counter
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * model[0].weight.detach()
    assert torch.allclose(ema.module[0].weight, expected)
    assert ema.module[1].num_batches_tracked.item() == 5  # integer buffers are copied
    assert not torch.allclose(ema.module[0].weight, model[0].weight)


# --- resuming on other hardware ---------------------------------------------------------------

TINY = dict(preset="smoke", width=0.0625, limit_train=64, limit_test=32, batch_size=32,
            device="cpu", progress=False, save_attention=False)


def _stop_after_first_epoch(monkeypatch):
    """Make the next run stop once epoch 1 is checkpointed, as a kill would."""
    import attn_lib.training.epoch as epoch

    real_append = epoch.append_metrics

    def append_then_stop(run_dir, row):
        real_append(run_dir, row)
        monkeypatch.setattr(epoch, "append_metrics", real_append)
        raise KeyboardInterrupt

    monkeypatch.setattr(epoch, "append_metrics", append_then_stop)


class _StrideCheckingSGD(torch.optim.SGD):
    """Fused SGD that refuses momentum buffers laid out unlike their parameters, as the fused
    CUDA kernel does (CPU's fused kernel accepts them)."""

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                buf = self.state.get(p, {}).get("momentum_buffer")
                if buf is not None and buf.stride() != p.stride():
                    raise RuntimeError(f"fused SGD: momentum buffer strides {buf.stride()} != "
                                       f"parameter strides {p.stride()}")
        return super().step(closure)


@needs_cpu_fused_sgd
def test_resume_in_the_other_memory_format_rebuilds_the_momentum_buffers(tmp_path, monkeypatch):
    import attn_lib.training.run as run

    def fused(net, recipe, dev):
        return _StrideCheckingSGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                  nesterov=recipe.nesterov, weight_decay=recipe.weight_decay,
                                  fused=True)

    monkeypatch.setattr(run, "build_optimizer", fused)
    run_dir = tmp_path / "run"
    _stop_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):  # started contiguous, as on a CPU
        attn_lib.train(out_dir=run_dir, epochs=2, channels_last=False, **TINY)
    assert json.loads((run_dir / "config.json").read_text())["channels_last"] is False
    result = attn_lib.train(out_dir=run_dir, resume=True, channels_last=True, **TINY)
    assert [row["epoch"] for row in result.history] == [1, 2]
    saved = load_checkpoint(run_dir / "last.pt")
    assert saved["config"]["channels_last"] is True
    # Resuming keeps the run's format unless told otherwise.
    attn_lib.train(out_dir=run_dir, resume=True, **TINY)
    assert json.loads((run_dir / "config.json").read_text())["channels_last"] is True


def test_a_resumed_run_keeps_its_precision(tmp_path, monkeypatch):
    import attn_lib.training.epoch as epoch
    import attn_lib.training.settings as settings

    run_dir = tmp_path / "run"
    _stop_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):  # "auto" resolves to fp32 on this CPU
        attn_lib.train(out_dir=run_dir, epochs=3, **TINY)
    assert json.loads((run_dir / "config.json").read_text())["precision"] == "fp32"

    # Resumed on a device where "auto" means bf16 (an A100, say): it still trains in fp32.
    real_resolve, real_autocast, used = settings.resolve_precision, epoch.autocast, set()
    monkeypatch.setattr(settings, "resolve_precision",
                        lambda dev, asked="auto": "bf16" if asked == "auto"
                        else real_resolve(dev, asked))
    monkeypatch.setattr(epoch, "autocast",
                        lambda dev, precision: used.add(precision) or real_autocast(dev, precision))
    _stop_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        attn_lib.train(out_dir=run_dir, resume=True, **TINY)
    assert used == {"fp32"}

    # A device that cannot honour the stored precision is a clear error...
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["epoch"] == 2
    ckpt["config"]["precision"] = "fp16"  # as if trained on a T4
    save_checkpoint(run_dir / "last.pt", ckpt)
    with pytest.raises(ValueError, match=r"trains in fp16, but fp16 training .* needs a CUDA "
                                         r"GPU.*--precision"):
        attn_lib.train(out_dir=run_dir, resume=True, **TINY)
    # ... and an explicit precision continues in it, warned about and recorded.
    used.clear()
    with pytest.warns(UserWarning, match="trained in fp16 for 2 epoch.*continues in bf16"):
        result = attn_lib.train(out_dir=run_dir, resume=True, precision="bf16", **TINY)
    assert used == {"bf16"} and len(result.history) == 3
    config = json.loads((run_dir / "config.json").read_text())
    assert config["precision"] == "bf16"
    assert config["precision_changes"] == [{"after_epoch": 2, "from": "fp16", "to": "bf16"}]


def test_bf16_needs_an_ampere_gpu(monkeypatch):
    from attn_lib.training.precision import check_precision

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))  # a T4
    with pytest.raises(ValueError, match="compute capability 7.5"):
        check_precision(torch.device("cuda"), "bf16")
    check_precision(torch.device("cuda"), "fp16")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))  # an A100
    check_precision(torch.device("cuda"), "bf16")
    check_precision(torch.device("cpu"), "bf16")
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        check_precision(torch.device("cpu"), "fp16")


def test_deterministic_flags_are_set_and_restored_exactly(tmp_path, monkeypatch):
    from attn_lib.training.precision import backend_flags

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = torch.backends.cudnn
    before = (cudnn.benchmark, cudnn.deterministic)
    torch.use_deterministic_algorithms(True, warn_only=True)  # the caller's own setting
    try:
        # The flags a CUDA run sets (they are plain switches: no GPU needed to set them).
        with backend_flags(torch.device("cuda"), deterministic=True):
            assert torch.are_deterministic_algorithms_enabled()
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
            assert cudnn.deterministic and not cudnn.benchmark
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        with backend_flags(torch.device("cuda"), deterministic=False):
            assert cudnn.benchmark
        assert (cudnn.benchmark, cudnn.deterministic) == before
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's choice is kept
        with backend_flags(torch.device("cuda"), deterministic=True):
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
        # A deterministic training run leaves the caller's setting as it found it, warn_only
        # included.
        attn_lib.train(out_dir=tmp_path / "run", epochs=1, deterministic=True, **TINY)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.use_deterministic_algorithms(False)


def test_evaluation_accumulates_on_the_device_and_reads_once(monkeypatch):
    # Each host read waits for the GPU: evaluate sums on the device and reads the sums once.
    from attn_lib.data import normalize

    torch.manual_seed(0)
    model = attn_lib.build_model("vgg-att2-concat-pc", num_classes=8, width=0.0625).eval()
    test = load_dataset("synthetic", "test", limit=64)
    reads = []
    for name in ("item", "tolist"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _real=real, _name=name: reads.append(_name)
                            or _real(self, *a))
    metrics = evaluate(model, test, tta=True, batch_size=16)  # 4 batches
    assert reads == ["tolist"]
    monkeypatch.undo()
    with torch.no_grad():
        logits = model(normalize(test.images, test.mean, test.std)).logits
    expected = torch.nn.functional.cross_entropy(logits, test.labels)
    assert metrics["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["acc"] == (logits.argmax(1) == test.labels).float().mean().item()


# --- what best.pt and last.pt hold; the validation split ------------------------------------

#: A run that holds 32 of its 96 training images out for validation.
VALIDATED = dict(TINY, limit_train=96, val_size=32)


@pytest.mark.parametrize("save_every_epoch", [True, False])
def test_best_pt_holds_the_epoch_of_best_validation_accuracy(tmp_path, monkeypatch,
                                                             save_every_epoch):
    # Scripted accuracies whose best validation epoch is neither the first nor the last, and
    # whose test accuracy peaks elsewhere: best.pt follows validation, never the test set.
    import attn_lib.training.epoch as epoch
    import attn_lib.training.run_folder as run_folder

    val, test, evaluated = iter([0.5, 0.9, 0.3]), iter([0.2, 0.1, 0.95]), []

    def scripted(run):
        evaluated.append({k: v.clone() for k, v in run.eval_model.state_dict().items()})
        v, t = next(val), next(test)
        return {"val_loss": 1 - v, "val_acc": v, "val_loss_tta": 1 - v, "val_acc_tta": v,
                "test_loss": 1 - t, "test_acc": t, "test_loss_tta": 1 - t, "test_acc_tta": t}

    writes = []
    real_save = run_folder.save_checkpoint
    monkeypatch.setattr(epoch, "evaluate_epoch", scripted)
    monkeypatch.setattr(run_folder, "save_checkpoint",
                        lambda path, payload: writes.append(path.name) or real_save(path, payload))
    result = attn_lib.train(out_dir=tmp_path / "run", epochs=3, ema_decay=0.9,
                            save_every_epoch=save_every_epoch, **VALIDATED)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["epoch"] == 2 and best["history"] == result.history[:2]
    for key, value in best["state_dict"].items():
        assert torch.equal(value, evaluated[1][key]), key
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["epoch"] == 3
    assert all(torch.equal(v, evaluated[2][k]) for k, v in last["state_dict"].items())
    if save_every_epoch:
        assert writes == ["best.pt", "last.pt", "best.pt", "last.pt", "last.pt"]
    else:  # one write of each, at the end
        assert writes == ["best.pt", "last.pt"]
        assert len(read_metrics(tmp_path / "run")) == 3  # the metrics still go out every epoch


def test_without_a_validation_split_no_best_pt_is_written(learned):
    # The test set never selects a checkpoint: a run without validation images (the default)
    # leaves last.pt only, and a run folder resolves to it.
    assert not (learned.run_dir / "best.pt").exists()
    assert all("val_acc" not in row for row in learned.history)
    assert json.loads((learned.run_dir / "config.json").read_text())["validation"] is None
    assert attn_lib.load_model(learned.run_dir)[0] is not None


def test_best_pt_of_a_real_run_reproduces_its_epochs_validation_accuracy(tmp_path):
    from attn_lib.training.run import validation_indices

    result = attn_lib.train(out_dir=tmp_path / "run", epochs=3, **VALIDATED)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    scores = [row["val_acc_tta"] for row in result.history]
    assert best["epoch"] == scores.index(max(scores)) + 1
    row = result.history[best["epoch"] - 1]
    model, _ = attn_lib.load_model(tmp_path / "run" / "best.pt")
    # The validation images, drawn again from what config.json records.
    record = json.loads((tmp_path / "run" / "config.json").read_text())["validation"]
    train = load_dataset("synthetic", "train", limit=VALIDATED["limit_train"], seed=0)
    held_out = train.subset(validation_indices(record["train_images"], record["size"],
                                               record["seed"]))
    metrics = evaluate(model, held_out, tta=True)
    assert metrics["n"] == 32
    assert metrics["acc"] == pytest.approx(row["val_acc"], abs=1e-6)
    assert metrics["acc_tta"] == pytest.approx(row["val_acc_tta"], abs=1e-6)
    test = load_dataset("synthetic", "test", limit=VALIDATED["limit_test"])
    assert evaluate(model, test)["acc"] == pytest.approx(row["test_acc"], abs=1e-6)


def test_the_validation_split_is_seeded_disjoint_from_training_and_recorded(tmp_path,
                                                                           monkeypatch):
    import attn_lib.training.loop as loop
    from attn_lib.training.run import split_validation, validation_indices

    train = load_dataset("synthetic", "train", limit=200, seed=0)
    kept, held_out, record = split_validation(train, 50, seed=3)
    assert (len(kept), len(held_out)) == (150, 50)
    assert record == {"size": 50, "seed": 3, "train_images": 200}
    ids = {bytes(image.numpy().tobytes()) for image in train.images}
    assert len(ids) == 200  # the synthetic images are distinct, so they identify themselves
    kept_ids = {bytes(image.numpy().tobytes()) for image in kept.images}
    held_ids = {bytes(image.numpy().tobytes()) for image in held_out.images}
    assert not kept_ids & held_ids and kept_ids | held_ids == ids
    # Same seed, same split; another seed, another.
    assert torch.equal(validation_indices(200, 50, 3), validation_indices(200, 50, 3))
    assert not torch.equal(validation_indices(200, 50, 3), validation_indices(200, 50, 4))
    assert split_validation(train, 0, seed=3) == (train, None, None)
    with pytest.raises(ValueError, match="val_size 200 leaves no training images"):
        validation_indices(200, 200, 0)

    # A run trains on the kept images only and validates on the held-out ones, whose record
    # config.json keeps; a resumed run draws the same split.
    seen = []
    real_build = loop.build_run

    def spy(settings):
        run = real_build(settings)
        seen.append((run.train_ds.images.clone(), run.val_ds.images.clone()))
        return run

    monkeypatch.setattr(loop, "build_run", spy)
    run_dir = tmp_path / "run"
    _stop_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        attn_lib.train(out_dir=run_dir, epochs=2, seed=5, **VALIDATED)
    resumed = attn_lib.train(out_dir=run_dir, resume=True, **VALIDATED)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["validation"] == {"size": 32, "seed": 5, "train_images": 96}
    assert config["recipe"]["val_size"] == 32
    (first_train, first_val), (again_train, again_val) = seen
    assert torch.equal(first_train, again_train) and torch.equal(first_val, again_val)
    assert len(first_train) == 64 and len(first_val) == 32
    train_ids = {bytes(x.numpy().tobytes()) for x in first_train}
    assert not train_ids & {bytes(x.numpy().tobytes()) for x in first_val}
    assert all({"val_loss", "val_acc"} <= set(row) for row in resumed.history)
    assert (run_dir / "best.pt").is_file()


def test_the_paper_preset_holds_out_5000_images_and_the_others_none():
    assert get_preset("paper").val_size == 5000
    assert [get_preset(name).val_size for name in ("fast", "cpu", "smoke")] == [0, 0, 0]
    with pytest.raises(ValueError, match="val_size must be a non-negative integer"):
        Recipe.from_dict({**get_preset("smoke").to_dict(), "val_size": -1})


# --- figures ---------------------------------------------------------------------------------

FIGURES = dict(TINY, save_attention=True, epochs=1)


def test_attention_png_shows_one_test_image_per_class(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import attn_lib.maps.viz as viz

    shown, real_plot = [], viz.plot_attention_grid
    monkeypatch.setattr(viz, "plot_attention_grid",
                        lambda model, images, labels=None, **kw: shown.append(labels.tolist())
                        or real_plot(model, images, labels=labels, **kw))
    result = attn_lib.train(out_dir=tmp_path / "run", **FIGURES)
    test = load_dataset("synthetic", "test", limit=TINY["limit_test"])
    assert shown == [sorted(set(test.labels.tolist()))[:8]]
    assert (result.run_dir / "attention.png").stat().st_size > 1000


def test_a_plotting_error_is_a_warning_naming_it(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import attn_lib.maps.viz as viz
    from attn_lib.figures import FigureWarning

    def broken(*args, **kwargs):
        raise RuntimeError("no room for the colour bar")

    monkeypatch.setattr(viz, "plot_attention_grid", broken)
    with pytest.warns(FigureWarning, match=r"attention.png not written: plotting failed "
                                           r"\(RuntimeError: no room for the colour bar\)"):
        result = attn_lib.train(out_dir=tmp_path / "run", **FIGURES)
    assert len(result.history) == 1 and (result.run_dir / "last.pt").is_file()
    assert not (result.run_dir / "attention.png").exists()


def test_a_missing_plotting_dependency_is_a_warning_naming_it(tmp_path, monkeypatch):
    from attn_lib.figures import FigureWarning

    monkeypatch.setitem(sys.modules, "attn_lib.maps.viz", None)  # as if it cannot be imported
    with pytest.warns(FigureWarning, match="attention.png not written: an optional dependency "
                                           "is missing"):
        result = attn_lib.train(out_dir=tmp_path / "run", **FIGURES)
    assert not (result.run_dir / "attention.png").exists()


def _strip(rows):
    return [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in rows]


def test_torch_loader_trains_and_resumes_exactly(tmp_path, monkeypatch):
    # The reference input pipeline: torchvision transforms in a worker process, rebuilt each
    # epoch from (seed, epoch), so a resumed run sees the same batches and augmentations.
    kw = dict(TINY, loader="torch", num_workers=1, epochs=3)
    full = attn_lib.train(out_dir=tmp_path / "full", **kw)
    assert load_checkpoint(tmp_path / "full" / "last.pt")["config"]["recipe"]["loader"] == "torch"
    _stop_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        attn_lib.train(out_dir=tmp_path / "broken", **kw)
    resumed = attn_lib.train(out_dir=tmp_path / "broken", resume=True, **TINY)
    assert _strip(resumed.history) == _strip(full.history) and len(full.history) == 3
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_the_tests_run_on_the_cpu():
    # tests/conftest.py hides GPUs from the suite; a default device must resolve to the CPU
    # (on a GPU machine this fails if the pin is lost).
    from attn_lib.training import resolve_device

    assert os.environ.get("CUDA_VISIBLE_DEVICES") == ""
    assert resolve_device(None).type == "cpu" and not torch.cuda.is_available()


def test_the_torch_loader_honours_augment():
    # The torchvision path applies the recipe's augmentation as the device loader does: none,
    # flip only, or random crop (pad 4) + flip.
    from attn_lib.data import normalize, reference_transform
    from attn_lib.training.run import EpochDataLoader

    ds = load_dataset("synthetic", "train", limit=8)
    image = ds.images[0]
    plain = normalize(image, ds.mean, ds.std)
    torch.manual_seed(0)
    none = reference_transform(ds, train=True, augment="none")
    assert all(torch.equal(none(image), plain) for _ in range(8))
    flip = reference_transform(ds, train=True, augment="flip")
    outs = [flip(image) for _ in range(32)]
    assert all(torch.equal(o, plain) or torch.equal(o, plain.flip(-1)) for o in outs)
    assert any(torch.equal(o, plain.flip(-1)) for o in outs)
    crop = reference_transform(ds, train=True, augment="crop-flip")
    assert any(not (torch.equal(o, plain) or torch.equal(o, plain.flip(-1)))
               for o in (crop(image) for _ in range(32)))
    # The run's loader passes the recipe's choice on.
    originals = [normalize(x, ds.mean, ds.std) for x in ds.images]
    loader = EpochDataLoader(ds, 4, num_workers=0, seed=0, augment="none")
    for x, _ in loader:
        assert all(any(torch.equal(image, o) for o in originals) for image in x)


def test_a_checkpoint_written_before_the_validation_split_still_resumes(tmp_path, monkeypatch):
    # Checkpoints of earlier versions have no val_size in their recipe and no validation
    # record in their config: they resume as runs without a validation split, exactly.
    full = attn_lib.train(out_dir=tmp_path / "full", epochs=2, **TINY)
    _stop_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        attn_lib.train(out_dir=tmp_path / "old", epochs=2, **TINY)
    path = tmp_path / "old" / "last.pt"
    ckpt = load_checkpoint(path)
    del ckpt["config"]["validation"], ckpt["config"]["recipe"]["val_size"]
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    resumed = attn_lib.train(out_dir=tmp_path / "old", resume=True, **TINY)
    assert _strip(resumed.history) == _strip(full.history)
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    assert config["validation"] is None and config["recipe"]["val_size"] == 0
