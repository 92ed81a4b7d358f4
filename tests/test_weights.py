"""Trained weights by name: shipped entries, aliases, fp16 files, hash checks, unknown names,
hosted files by URL."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import threading

import pytest
import torch

import attn_lib
from attn_lib.data import load_samples, normalize
from attn_lib.models import weights as W

SHIPPED = W.list_weights()


def test_every_shipped_entry_has_the_facts_a_user_needs() -> None:
    assert {(e["model"], e["weights"]) for e in SHIPPED} >= {
        ("vgg", "cifar10-cpu"), ("vgg-att3-concat-pc", "cifar10-cpu"),
        ("vgg-att3-concat-dp", "cifar10-cpu"), ("vgg-att3-concat-pc", "synthetic")}
    for entry in SHIPPED:
        for key in ("model", "weights", "dataset", "mean", "std", "test_acc", "width", "classes"):
            assert key in entry, (entry["model"], key)
        for key in ("command", "epochs", "seed"):
            assert key in entry["trained"], (entry["model"], key)
        assert 0 < entry["test_acc"] <= 1 and len(entry["mean"]) == len(entry["std"]) == 3
        assert entry["file"].endswith(f"-{entry['sha256'][:8]}.pt")  # torch hub's convention


def test_shipped_weights_stay_small() -> None:
    # The width-1/4 gpu files together at most 10 MB (tools/ship_weights.py refuses more),
    # everything else (1/16 width) about 1.7 MB.
    folder = W._pretrained_dir()
    sizes = {e["file"]: (folder / e["file"]).stat().st_size for e in SHIPPED}
    gpu = sum(sizes[e["file"]] for e in SHIPPED if e["weights"] == "cifar10-gpu")
    assert gpu <= 10_000_000
    assert sum(sizes.values()) - gpu < 2 * 2**20


def test_cifar10_is_an_alias_of_the_best_shipped_entry() -> None:
    for model in ("vgg", "vgg-noatt", "vgg-att3-concat-pc", "vgg-att3-concat-dp"):
        names = [e["weights"] for e in W.list_weights(model)]
        best = "cifar10-gpu" if "cifar10-gpu" in names else "cifar10-cpu"
        assert W.get_weights(model, "cifar10")["weights"] == best
        assert [e["weights"] for e in W.list_weights(model) if "cifar10" in e["aliases"]] == [best]
    assert W.list_weights("vgg-att3-concat-pc")  # and the alias loads:
    model = attn_lib.build_model("vgg-att3-concat-pc", weights="cifar10")
    assert model.weights_info["weights"] in ("cifar10-gpu", "cifar10-cpu")


@pytest.mark.parametrize("entry", SHIPPED, ids=lambda e: f"{e['model']}-{e['weights']}")
def test_each_entry_matches_its_file_and_model(entry: dict) -> None:
    path = W._pretrained_dir() / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    model = attn_lib.build_model(entry["model"], weights=entry["weights"])
    assert not model.training and model.name == entry["model"]
    assert model.options["width"] == entry["width"]
    assert model.options["num_classes"] == len(entry["classes"])
    assert model.weights_info["mean"] == entry["mean"]
    state = torch.load(path, weights_only=True)
    # (a float16 file loads into the float32 model: the values are the file's)
    assert all(torch.equal(state[k].to(v.dtype), v) for k, v in model.state_dict().items())
    if entry["dataset"] == "cifar10":
        # The recorded accuracy on the shipped sample images is what these weights give.
        samples = load_samples()
        with torch.no_grad():
            x = normalize(samples.images, entry["mean"], entry["std"])
            acc = (model(x).logits.argmax(1) == samples.labels).float().mean().item()
        assert acc == pytest.approx(entry["sample_acc"], abs=1e-6)
        assert entry["classes"] == samples.classes


def test_default_is_what_the_alias_resolves_to() -> None:
    model = attn_lib.build_model("vgg-att3-concat-pc", weights="DEFAULT")
    assert model.weights_info["weights"] == W.get_weights("vgg-att3-concat-pc",
                                                          "cifar10")["weights"]


def test_unknown_weights_name_lists_the_available_ones() -> None:
    with pytest.raises(ValueError,
                       match=r"unknown weights 'imagenet'.*'cifar10-cpu' \(alias 'cifar10'\)"):
        attn_lib.build_model("vgg-att3-concat-pc", weights="imagenet")
    with pytest.raises(ValueError, match="no trained weights for 'vgg-att2-indep-dp'"):
        attn_lib.build_model("vgg-att2-indep-dp", weights="cifar10")


def test_options_that_contradict_the_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="width=1.0"):
        attn_lib.build_model("vgg-att3-concat-pc", weights="cifar10", width=1.0)
    with pytest.raises(ValueError, match="num_classes=100"):
        attn_lib.build_model("vgg", 100, weights="cifar10")


@pytest.fixture()
def private_store(tmp_path, monkeypatch):
    """An empty weights folder in place of the package's, with one exported model."""
    monkeypatch.setattr(W, "_pretrained_dir", lambda: tmp_path)
    W._manifest.cache_clear()
    torch.manual_seed(0)
    model = attn_lib.build_model("vgg-att2-concat-dp", 3, width=0.0625)
    facts = {"dataset": "toy", "classes": ["a", "b", "c"], "mean": [0.5] * 3,
             "std": [0.25] * 3, "image_size": 32, "test_acc": 0.5,
             "trained": {"command": "test", "epochs": 1, "seed": 0}}
    entry = W.export_weights(model, "toy", facts)
    yield tmp_path, entry, model
    W._manifest.cache_clear()


def test_the_alias_prefers_gpu_weights_once_shipped(private_store) -> None:
    folder, entry, model = private_store
    facts = {k: entry[k] for k in ("dataset", "classes", "mean", "std", "image_size",
                                   "test_acc", "trained")}
    W.export_weights(model, "cifar10-cpu", facts)
    assert W.get_weights("vgg-att2-concat-dp", "cifar10")["weights"] == "cifar10-cpu"
    W.export_weights(model, "cifar10-gpu", facts, dtype=torch.float16)
    assert W.get_weights("vgg-att2-concat-dp", "cifar10")["weights"] == "cifar10-gpu"
    assert W.get_weights("vgg-att2-concat-dp", "cifar10-cpu")["aliases"] == []
    with pytest.raises(ValueError, match="alias"):
        W.export_weights(model, "cifar10", facts)


def test_fp16_files_load_into_fp32_models(private_store) -> None:
    folder, entry, model = private_store
    half = W.export_weights(model, "half", {k: entry[k] for k in W.REQUIRED_KEYS
                                            if k not in ("model", "weights", "width", "options",
                                                         "sha256")}, dtype=torch.float16)
    path = folder / half["file"]
    assert half["stored_dtype"] == "float16"
    assert path.stat().st_size < 0.6 * (folder / entry["file"]).stat().st_size
    stored = torch.load(path, weights_only=True)
    assert {v.dtype for v in stored.values()} == {torch.float16, torch.int64}
    loaded = attn_lib.build_model("vgg-att2-concat-dp", weights="half")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(loaded(x).logits, model.eval()(x).logits, atol=2e-2, rtol=2e-2)


def test_export_then_load_round_trips(private_store) -> None:
    folder, entry, model = private_store
    assert json.loads((folder / W.MANIFEST).read_text())[0]["sha256"] == entry["sha256"]
    loaded = attn_lib.build_model("vgg-att2-concat-dp", weights="toy")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x).logits, model.eval()(x).logits)


def test_a_file_whose_hash_differs_is_a_clear_error(private_store) -> None:
    folder, entry, _ = private_store
    path = folder / entry["file"]
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(W.WeightsError, match="SHA-256.*corrupt or was replaced"):
        attn_lib.build_model("vgg-att2-concat-dp", weights="toy")
    path.unlink()
    with pytest.raises(W.WeightsError, match="missing"):
        attn_lib.build_model("vgg-att2-concat-dp", weights="toy")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server(tmp_path):
    """A local HTTP server for a folder: the hosted-weights path, offline."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _host(private_store, server, monkeypatch, tmp_path, corrupt: bool = False) -> None:
    folder, entry, _ = private_store
    root, base = server
    data = (folder / entry["file"]).read_bytes()
    if corrupt:
        data = data[:-1] + bytes([data[-1] ^ 0xFF])
    (root / entry["file"]).write_bytes(data)
    hosted = dict(entry, url=f"{base}/{entry['file']}")
    del hosted["file"]
    (folder / W.MANIFEST).write_text(json.dumps([hosted]))
    W._manifest.cache_clear()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def test_hosted_weights_download_once_with_their_hash_checked(private_store, server,
                                                              monkeypatch, tmp_path) -> None:
    _host(private_store, server, monkeypatch, tmp_path)
    _, _, model = private_store
    loaded = attn_lib.build_model("vgg-att2-concat-dp", weights="toy")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x).logits, model.eval()(x).logits)
    cached = list((tmp_path / "hub" / "checkpoints").iterdir())
    assert [p.name for p in cached] == [private_store[1]["file"]]
    shutil.rmtree(server[0])  # the server has nothing now: the cached copy serves
    attn_lib.build_model("vgg-att2-concat-dp", weights="toy")


def test_a_hosted_file_with_the_wrong_hash_is_refused_and_not_kept(private_store, server,
                                                                    monkeypatch,
                                                                    tmp_path) -> None:
    _host(private_store, server, monkeypatch, tmp_path, corrupt=True)
    with pytest.raises(W.WeightsError, match="do not match their hash"):
        attn_lib.build_model("vgg-att2-concat-dp", weights="toy")
    assert not list((tmp_path / "hub" / "checkpoints").glob("*.pt"))


def test_main_job_weights_were_trained_with_todays_main_job() -> None:
    # The 'synthetic' weights stand in for `make run` (notebooks, README, localisation test):
    # a change to the cpu preset or the default model must come with weights trained anew.
    from attn_lib.training.recipe import Recipe, get_preset

    entry = W.get_weights("vgg-att3-concat-pc", "synthetic")
    # A setting added since takes its default, which the preset must still have.
    trained = Recipe.from_dict(entry["trained"]["recipe"])
    assert trained == get_preset("cpu", "vgg-att3-concat-pc")
    defaults = {k: v for k, v in attn_lib.DEFAULT_OPTIONS.items() if k != "width"}
    assert entry["options"] == {**defaults, "dropout": False}
