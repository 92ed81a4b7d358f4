"""Checkpoints: atomic writes, safe loading, clear errors for bad or foreign files."""

from __future__ import annotations

import os

import pytest
import torch

import attn_lib
from attn_lib.checkpoint import (
    FORMAT,
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    load_model,
    save_checkpoint,
)


def _payload(name: str = "vgg-att2-concat-dp", width: float = 0.0625) -> dict:
    torch.manual_seed(0)
    model = attn_lib.build_model(name, num_classes=8, width=width)
    return {
        "model_name": model.name, "model_options": dict(model.options),
        "state_dict": model.state_dict(), "epoch": 3, "history": [{"epoch": 1, "test_acc": 0.5}],
        "data": {"dataset": "synthetic", "classes": list("abcdefgh"), "mean": (0.5, 0.5, 0.5),
                 "std": (0.25, 0.25, 0.25), "image_size": 32},
    }


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_roundtrip_rebuilds_the_same_model(tmp_path):
    payload = _payload()
    save_checkpoint(tmp_path / "best.pt", payload)
    model, info = load_model(tmp_path / "best.pt")
    assert not model.training and model.name == "vgg-att2-concat-dp"
    assert info["classes"] == list("abcdefgh") and info["image_size"] == 32
    reference = attn_lib.build_model("vgg-att2-concat-dp", num_classes=8, width=0.0625)
    reference.load_state_dict(payload["state_dict"])
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x).logits, reference.eval()(x).logits)
    # A run folder resolves to its best.pt.
    assert load_model(tmp_path)[0].name == "vgg-att2-concat-dp"
    assert torch.load(tmp_path / "best.pt", weights_only=True)["format"] == FORMAT


def test_atomic_write_leaves_no_temp_files_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_checkpoint(target, _payload())
    save_checkpoint(target, _payload())  # overwrite in place
    assert _leftovers(tmp_path) == []
    before = target.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == before  # the old checkpoint is untouched
    assert _leftovers(tmp_path) == []  # and the temp file is gone


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read the checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_garbage_and_foreign_files_are_clear_errors(tmp_path):
    garbage = tmp_path / "notes.pt"
    garbage.write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match=str(garbage)):
        load_checkpoint(garbage)
    foreign = tmp_path / "state_dict.pt"
    torch.save(attn_lib.build_model("vgg", width=0.0625).state_dict(), foreign)
    with pytest.raises(CheckpointError, match="not an attn-lib checkpoint"):
        load_checkpoint(foreign)
    # Pickled code is refused by weights_only=True, and reported as unreadable.
    pickled = tmp_path / "module.pt"
    torch.save({"format": FORMAT, "obj": torch.nn.Linear(2, 2)}, pickled)
    with pytest.raises(CheckpointError, match=str(pickled)):
        load_checkpoint(pickled)


def test_other_variant_and_newer_version_are_clear_errors(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, _payload())
    with pytest.raises(CheckpointError, match="'vgg-att2-concat-dp', not the requested "
                                              "'vgg-att3-concat-pc'"):
        load_checkpoint(path, expect_model="vgg-att3-concat-pc")
    with pytest.raises(CheckpointError):
        load_model(path, expect_model="vgg")
    newer = tmp_path / "newer.pt"
    save_checkpoint(newer, {**_payload(), "version": 99})
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(newer)


def test_weights_of_another_shape_are_a_clear_error(tmp_path):
    payload = _payload()
    payload["model_options"] = {**payload["model_options"], "width": 0.125}
    path = tmp_path / "best.pt"
    save_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_model(tmp_path)


def test_version_1_vgg_checkpoints_load_as_the_noatt_backbone(tmp_path):
    """Before version 2, ``vgg`` named the attention backbone without attention."""
    payload = _payload("vgg-noatt")
    payload["model_name"] = "vgg"
    payload["config"] = {"model": "vgg"}
    path = tmp_path / "old.pt"
    torch.save({"format": FORMAT, "version": 1, **payload}, path)
    ckpt = load_checkpoint(path)
    assert ckpt["model_name"] == "vgg-noatt" and ckpt["config"]["model"] == "vgg-noatt"
    model, _ = load_model(path, expect_model="vgg-noatt")
    assert model.name == "vgg-noatt" and len(model.estimators) == 0
    # The same name in a version-2 file is the paper's baseline, and stays so.
    save_checkpoint(tmp_path / "new.pt", _payload("vgg"))
    assert load_model(tmp_path / "new.pt")[0].name == "vgg"
