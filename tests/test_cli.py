"""Command line: the no-argument main job, evaluate, help, and one-line user errors."""

from __future__ import annotations

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
    assert {"last.pt", "best.pt", "metrics.jsonl", "config.json"} <= names
    if importlib.util.find_spec("matplotlib") is not None:
        assert "attention.png" in names, proc.stderr
    else:  # training succeeds without the plotting dependency, and says what is missing
        assert "attention.png not written: an optional dependency is missing" in proc.stderr
    assert "done:" in proc.stdout and "preset smoke" in proc.stdout


def test_evaluate_prints_accuracy_and_tta_accuracy(main_job, capsys):
    cwd, _ = main_job
    code = main(["evaluate", "--checkpoint", str(cwd / MAIN_RUN / "best.pt"), "--limit", "64"])
    out = capsys.readouterr().out
    assert code == 0
    assert "accuracy:" in out and "flip-TTA accuracy:" in out and "64 images" in out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_user_errors_are_one_line_and_non_zero(tmp_path, capsys, main_job):
    cwd, _ = main_job
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in _error_line(capsys)

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((cwd / MAIN_RUN / "best.pt").read_bytes()[:1000])
    assert main(["evaluate", "--checkpoint", str(corrupt)]) == 2
    assert str(corrupt) in _error_line(capsys)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert main(["evaluate", "--checkpoint", str(foreign)]) == 2
    assert "not an attn-lib checkpoint" in _error_line(capsys)

    best = str(cwd / MAIN_RUN / "best.pt")
    assert main(["evaluate", "--checkpoint", best, "--model", "vgg-att2-indep-dp"]) == 2
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
