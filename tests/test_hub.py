"""``hubconf.py``: one torch.hub entry point per model of the family, loaded offline."""

import importlib.util
from pathlib import Path

import pytest
import torch

from attn_lib.models import build_model, list_models

ROOT = Path(__file__).resolve().parents[1]


def test_every_model_has_an_entry_point():
    # torch.hub.list reads GitHub repositories only; torch.hub loads hubconf.py like this.
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    names = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]
    assert sorted(names) == sorted(n.replace("-", "_") for n in list_models())
    assert "vgg-att3" in hubconf.vgg_att3_concat_pc.__doc__


def test_entry_point_builds_the_model_with_the_options_passed_through():
    model = torch.hub.load(str(ROOT), "vgg_att3_concat_pc", source="local", num_classes=7,
                           width=0.0625)
    assert model.name == "vgg-att3-concat-pc"
    assert model.options["num_classes"] == 7 and model.options["width"] == 0.0625
    logits, maps = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7) and len(maps) == 3


def test_weights_are_passed_through():
    from attn_lib.models.weights import list_weights

    shipped = [e for e in list_weights() if e.get("file")]
    if not shipped:
        pytest.skip("no shipped weights in this checkout")
    entry = shipped[0]
    hub = torch.hub.load(str(ROOT), entry["model"].replace("-", "_"), source="local",
                         weights=entry["weights"])
    direct = build_model(entry["model"], weights=entry["weights"])
    for (k, a), b in zip(hub.state_dict().items(), direct.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="unknown weights"):
        torch.hub.load(str(ROOT), entry["model"].replace("-", "_"), source="local",
                       weights="no-such-weights")
