"""Command line: the no-argument main job, evaluate, help, and one-line user errors."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attn_lib
from attn_lib.checkpoint import save_checkpoint
from attn_lib.cli import main
from attn_lib.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
MAIN_RUN = Path("runs") / "vgg-att3-concat-pc-synthetic"


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    """``python -m attn_lib`` with no arguments, shrunk by smoke mode (ATTN_LIB_SMOKE=1), on the
    CPU (no GPU visible: the command has no device argument to pin)."""
    cwd = tmp_path_factory.mktemp("cwd")
    env = {**os.environ, "ATTN_LIB_SMOKE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "attn_lib"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return cwd, proc


def test_no_argument_main_job_leaves_a_run_folder(main_job):
    cwd, proc = main_job
    assert proc.returncode == 0, proc.stderr
    run_dir = cwd / MAIN_RUN
    names = {p.name for p in run_dir.iterdir()}
    assert {"last.pt", "metrics.jsonl", "config.json"} <= names
    assert "best.pt" not in names  # no validation split: the test set selects nothing
    if importlib.util.find_spec("matplotlib") is not None:
        assert "attention.png" in names, proc.stderr
    else:  # training succeeds without the plotting dependency, and says what is missing
        assert "attention.png not written: an optional dependency is missing" in proc.stderr
    assert "done:" in proc.stdout and "preset smoke" in proc.stdout


def test_evaluate_prints_accuracy_and_tta_accuracy(main_job, capsys):
    cwd, _ = main_job
    code = main(["evaluate", "--checkpoint", str(cwd / MAIN_RUN), "--limit", "64"])
    out = capsys.readouterr().out
    assert code == 0
    assert "accuracy:" in out and "flip-TTA accuracy:" in out and "64 images" in out
    assert "last.pt" in out  # a run folder without best.pt resolves to its last.pt


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_user_errors_are_one_line_and_non_zero(tmp_path, capsys, main_job):
    cwd, _ = main_job
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in _error_line(capsys)

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((cwd / MAIN_RUN / "last.pt").read_bytes()[:1000])
    assert main(["evaluate", "--checkpoint", str(corrupt)]) == 2
    assert str(corrupt) in _error_line(capsys)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert main(["evaluate", "--checkpoint", str(foreign)]) == 2
    assert "not an attn-lib checkpoint" in _error_line(capsys)

    last = str(cwd / MAIN_RUN / "last.pt")
    assert main(["evaluate", "--checkpoint", last, "--model", "vgg-att2-indep-dp"]) == 2
    assert "vgg-att2-indep-dp" in _error_line(capsys)

    assert main(["train", "--dataset", "folder", "--data-dir", str(tmp_path / "nowhere"),
                 "--quiet", "--device", "cpu"]) == 2
    assert str(tmp_path / "nowhere") in _error_line(capsys)

    assert main(["train", "--lr", "-1", "--out", str(tmp_path / "r"), "--quiet",
                 "--device", "cpu"]) == 2
    assert "lr must be a positive" in _error_line(capsys)

    assert main(["train", "--out", str(cwd / MAIN_RUN), "--quiet", "--device", "cpu"]) == 2
    assert "--resume" in _error_line(capsys)


def test_other_variant_checkpoint_refused_on_resume(tmp_path, capsys, main_job):
    cwd, _ = main_job
    assert main(["train", "--out", str(cwd / MAIN_RUN), "--resume", "--model", "vgg",
                 "--quiet", "--device", "cpu"]) == 2
    assert "not the requested 'vgg'" in _error_line(capsys)


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["localize"]])
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: python -m attn_lib" in out
    expected = {"": "evaluate", "train": "--resume", "evaluate": "--checkpoint",
                "localize": "--checkpoint"}[command[0] if command else ""]
    assert expected in out


def test_unknown_option_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "many"])
    assert exit_info.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_evaluate_checkpoint_written_from_python(tmp_path, capsys):
    model = attn_lib.build_model("vgg", num_classes=8, width=0.0625)
    save_checkpoint(tmp_path / "best.pt", {
        "model_name": "vgg", "model_options": dict(model.options),
        "state_dict": model.state_dict(), "epoch": 0, "history": [],
        "data": {"dataset": "synthetic", "classes": [str(i) for i in range(8)],
                 "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "image_size": 32},
    })
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--limit", "16"]) == 0
    assert "flip-TTA accuracy" in capsys.readouterr().out


# --- numbers compared, exit codes, and the checkpoint's own statistics -------------------------

#: Statistics far from the synthetic data's own, so normalising with the wrong ones shows.
CKPT_MEAN, CKPT_STD = (0.2, 0.6, 0.3), (0.5, 0.15, 0.4)


def write_checkpoint(path, name: str = "vgg", num_classes: int = 8, *, dataset: str = "synthetic",
                     mean=CKPT_MEAN, std=CKPT_STD, image_size: int = 32, seed: int = 0):
    """A checkpoint of a fresh narrow model, with the data statistics given; returns the model.

    The last layer's weights are scaled up so that the logits, and with them loss and
    accuracy, depend clearly on the input (a fresh model's logits are all about equal).
    """
    torch.manual_seed(seed)
    model = attn_lib.build_model(name, num_classes=num_classes, width=0.0625).eval()
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(100)
    save_checkpoint(path, {
        "model_name": name, "model_options": dict(model.options),
        "state_dict": model.state_dict(), "epoch": 3, "history": [],
        "data": {"dataset": dataset, "classes": [str(i) for i in range(num_classes)],
                 "mean": tuple(mean), "std": tuple(std), "image_size": image_size},
    })
    return model


def _numbers(out: str) -> dict[str, float]:
    """accuracy, loss, tta accuracy and tta loss from evaluate's output."""
    import re

    plain = re.search(r"^accuracy: ([\d.]+)% \(loss ([\d.]+)\)", out, re.M)
    tta = re.search(r"^flip-TTA accuracy: ([\d.]+)% \(loss ([\d.]+)\)", out, re.M)
    assert plain and tta, out
    return {"acc": float(plain[1]) / 100, "loss": float(plain[2]),
            "acc_tta": float(tta[1]) / 100, "loss_tta": float(tta[2])}


def test_evaluate_prints_the_known_accuracy_and_loss_of_a_constant_classifier(tmp_path, capsys):
    # Zero weights in the last layer: every image gets the logits b, so the prediction is
    # argmax b = class 3, the accuracy is the share of class 3 in the labels and the loss is
    # logsumexp(b) - mean(b[y]), whatever the images (and the flip changes nothing).
    model = attn_lib.build_model("vgg", num_classes=8, width=0.0625)
    b = torch.tensor([0.0, 1.0, -1.0, 2.5, 0.5, 0.0, -2.0, 1.5])
    with torch.no_grad():
        model.classifier[-1].weight.zero_()
        model.classifier[-1].bias.copy_(b)
    save_checkpoint(tmp_path / "best.pt", {
        "model_name": "vgg", "model_options": dict(model.options),
        "state_dict": model.state_dict(), "epoch": 1, "history": [],
        "data": {"dataset": "synthetic", "classes": [str(i) for i in range(8)],
                 "mean": CKPT_MEAN, "std": CKPT_STD, "image_size": 32}})
    labels = load_dataset("synthetic", "test", limit=20).labels.tolist()
    accuracy = labels.count(3) / 20
    loss = float(torch.logsumexp(b, 0)) - sum(float(b[y]) for y in labels) / 20
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--limit", "20",
                 "--batch-size", "7"]) == 0
    out = capsys.readouterr().out
    assert "20 images" in out and "(epoch 1)" in out
    got = _numbers(out)
    assert got["acc"] == pytest.approx(accuracy, abs=5e-5)
    assert got["acc_tta"] == pytest.approx(accuracy, abs=5e-5)
    assert got["loss"] == pytest.approx(loss, abs=5e-5)
    assert got["loss_tta"] == pytest.approx(loss, abs=5e-5)


def test_evaluate_normalises_with_the_checkpoints_statistics(tmp_path, capsys):
    from attn_lib.training import evaluate

    model = write_checkpoint(tmp_path / "best.pt")
    data = load_dataset("synthetic", "test", limit=32)
    own = evaluate(model, data, tta=True)
    theirs = evaluate(model, dataclasses.replace(data, mean=CKPT_MEAN, std=CKPT_STD), tta=True)
    assert abs(own["loss"] - theirs["loss"]) > 1e-2  # the statistics matter for this model
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--limit", "32"]) == 0
    got = _numbers(capsys.readouterr().out)
    for key in ("acc", "loss", "acc_tta", "loss_tta"):
        assert got[key] == pytest.approx(theirs[key], abs=5e-5), key


def test_evaluate_refuses_a_class_count_mismatch_and_limit_zero(tmp_path, capsys):
    write_checkpoint(tmp_path / "five.pt", num_classes=5)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "five.pt"), "--limit", "8"]) == 2
    err = _error_line(capsys)
    assert "classifies 5 classes" in err and "'synthetic' has 8" in err
    write_checkpoint(tmp_path / "eight.pt")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "eight.pt"), "--limit", "0"]) == 2
    assert "--limit must be a positive integer, got 0" in _error_line(capsys)


COMMAND_LINES = {
    "evaluate": ["evaluate", "--checkpoint", "{ckpt}", "--limit", "8"],
    "localize": ["localize", "--checkpoint", "{ckpt}", "--limit", "8"],
    "train": ["train", "--preset", "smoke", "--limit-train", "32", "--limit-test", "32",
              "--epochs", "1", "--out", "{tmp}/run", "--quiet"],
}


@pytest.mark.parametrize("command", list(COMMAND_LINES))
@pytest.mark.parametrize("device, message", [
    ("gpu0", "invalid device 'gpu0'"),
    ("xla", "device 'xla' cannot be used on this machine"),
    ("meta", "device 'meta' cannot be used on this machine"),
])
def test_bad_device_is_a_one_line_error(tmp_path, capsys, command, device, message):
    write_checkpoint(tmp_path / "best.pt")
    argv = [a.format(ckpt=tmp_path / "best.pt", tmp=tmp_path) for a in COMMAND_LINES[command]]
    assert main([*argv, "--device", device]) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    write_checkpoint(tmp_path / "best.pt")
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--device", "cuda"]) == 2
    assert "CUDA is not available" in _error_line(capsys)


def _smoke_train(tmp_path, *extra: str) -> list[str]:
    return ["train", "--preset", "smoke", "--limit-train", "64", "--limit-test", "32",
            "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu",
            "--no-tta", *extra]


def test_diverging_loss_exits_with_status_1(tmp_path, capsys):
    # lr 1e30 from the first step (no warm-up): the second step's loss is not finite.
    assert main(_smoke_train(tmp_path, "--lr", "1e30", "--schedule", "step")) == 1
    err = _error_line(capsys)
    assert "training loss became" in err and "Lower the learning rate" in err


def test_ctrl_c_exits_with_status_130(tmp_path, capsys, monkeypatch):
    import attn_lib.training.epoch as epoch

    real_step, calls = epoch.train_step, []

    def interrupted_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C would, in the middle of the first epoch
        return real_step(*args, **kwargs)

    monkeypatch.setattr(epoch, "train_step", interrupted_step)
    assert main(_smoke_train(tmp_path)) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted" and "Traceback" not in err
    assert len(calls) == 2


def test_ctrl_c_on_the_command_line_exits_with_status_130(tmp_path):
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    # Enough epochs to still be training when the signal comes.
    argv = [sys.executable, "-m", "attn_lib", *_smoke_train(tmp_path), "--epochs", "50"]
    # Ctrl-C as in a terminal: a shell's background job would inherit SIGINT ignored.
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        started = tmp_path / "run" / "config.json"  # written just before the first epoch
        deadline = time.monotonic() + 600  # seconds on an idle machine; generous for a busy one
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert started.exists(), proc.communicate()[1] if proc.poll() is not None else "slow"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted", err


# --- one place per setting: the Recipe dataclass ---------------------------------------------


def test_every_recipe_setting_is_an_option_of_train_and_of_the_command_line(tmp_path,
                                                                             monkeypatch):
    # Each Recipe field (but the preset's name) is parsed from its flag and reaches train() as
    # the keyword of the same name, and train() applies it to the run's recipe.
    import attn_lib.runs
    from attn_lib.cli import build_parser, recipe_flag
    from attn_lib.training.recipe import PRESETS, recipe_fields
    from attn_lib.training.settings import split_options

    fields = recipe_fields()
    assert {f.name for f in fields} == set(PRESETS["smoke"].to_dict()) - {"name"}
    parser = build_parser()
    received = {}
    monkeypatch.setattr(attn_lib.runs, "train_without_figures",
                        lambda *args, **kwargs: received.update(kwargs) or _FakeResult())
    for f in fields:
        value = getattr(PRESETS["paper"], f.name)
        if value == ():  # a list-valued setting the paper preset leaves empty
            value = getattr(PRESETS["resnet"], f.name)
        if isinstance(value, bool):
            argv = [recipe_flag(f) if value else f"--no-{recipe_flag(f)[2:]}"]
        elif value is None:
            continue
        elif isinstance(value, tuple):
            argv = [recipe_flag(f), *map(str, value)]
        else:
            argv = [recipe_flag(f), str(value)]

        def same(parsed, value=value):
            return tuple(parsed) == value if isinstance(value, tuple) else parsed == value

        args = parser.parse_args(["train", *argv])
        assert same(getattr(args, f.name)), f.name
        received.clear()
        assert main(["train", *argv, "--device", "cpu"]) == 0
        assert same(received[f.name]), f.name
        overrides, model_options = split_options({f.name: value})
        assert overrides[f.name] == value and not model_options


class _FakeResult:
    history: list = []
    run_dir = Path("nowhere")


def test_recipe_options_default_to_the_preset_and_choices_come_from_the_library():
    from attn_lib.cli import build_parser
    from attn_lib.data.loaders import AUGMENTATIONS
    from attn_lib.models import list_models
    from attn_lib.training import MAIN_MODEL

    args = build_parser().parse_args(["train"])
    assert args.epochs is None and args.val_size is None and args.tta is None
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    actions = {a.dest: a for a in train_parser._actions}
    assert tuple(actions["augment"].choices) == AUGMENTATIONS
    assert list(actions["model"].choices) == list_models() and "vgg-noatt" in list_models()
    assert "vgg-noatt" in actions["model"].help and MAIN_MODEL in actions["model"].help


def test_the_recipes_page_is_generated_from_the_recipe():
    # (that the page is current: tests/test_docs.py, for every generated part)
    from attn_lib.cli import recipe_reference
    from attn_lib.training.recipe import recipe_fields

    page = (Path(__file__).resolve().parents[1] / "docs" / "RECIPES.md").read_text(
        encoding="utf-8")
    assert recipe_reference() in page
    assert all(f"| `{f.name}` |" in page for f in recipe_fields())
