"""Localisation scores: hand-made maps, the table, the CLI, and a trained model against chance."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import attn_lib
from attn_lib.data import load_dataset, make_synthetic, normalize
from attn_lib.maps.contribution import contribution_maps
from attn_lib.maps.gradcam import gradcam_layers
from attn_lib.maps.localize import (
    TOPK_FRACTIONS,
    LocalizationRow,
    _Accumulator,
    _sweep_regions,
    chance_jaccard,
    format_rows,
    jaccard_index,
    localization_scores,
    mass_in_mask,
    pointing_game,
    topk_jaccard,
)
from attn_lib.models import split_output


def _box_mask(size: int = 32, top: int = 4, left: int = 4, side: int = 8) -> torch.Tensor:
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, top:top + side, left:left + side] = True
    return mask


# --- the two scores on hand-made maps --------------------------------------------------------


def test_map_equal_to_mask_scores_one():
    mask = _box_mask()
    assert mass_in_mask(mask.float()[:, None], mask).item() == pytest.approx(1.0)
    assert pointing_game(mask.float(), mask).item() == pytest.approx(1.0)


def test_uniform_map_scores_the_area_fraction():
    mask = _box_mask(side=8)  # 64 of 1024 pixels
    for maps in (torch.ones(1, 1, 32, 32), torch.full((1, 1, 1, 1), 0.3), torch.ones(1, 4, 4)):
        assert mass_in_mask(maps, mask).item() == pytest.approx(64 / 1024)
        assert pointing_game(maps, mask).item() == pytest.approx(64 / 1024)


def test_all_zero_map_is_scored_as_uniform():
    mask = _box_mask(side=16)
    assert mass_in_mask(torch.zeros(1, 1, 8, 8), mask).item() == pytest.approx(0.25)
    assert pointing_game(torch.zeros(1, 1, 8, 8), mask).item() == pytest.approx(0.25)


def test_pointing_game_on_hand_made_maps():
    masks = _box_mask(top=0, left=0, side=8).repeat(4, 1, 1)  # object in the top-left 8x8
    maps = torch.zeros(4, 1, 32, 32)
    maps[0, 0, 3, 5] = 1.0  # peak inside: hit
    maps[1, 0, 20, 20] = 1.0  # peak outside: miss
    maps[2, 0, 1, 1] = maps[2, 0, 30, 30] = 1.0  # a tie, one in one out: expected hit 0.5
    maps[3, 0, 9, 9] = 1.0  # just outside the box: miss (no tolerance radius)
    torch.testing.assert_close(pointing_game(maps, masks), torch.tensor([1.0, 0.0, 0.5, 0.0]))


def test_low_resolution_maps_are_upsampled_to_the_mask():
    mask = _box_mask(top=0, left=0, side=8)  # the top-left cell of a 4x4 grid
    corner = torch.zeros(1, 1, 4, 4)
    corner[0, 0, 0, 0] = 1.0
    assert pointing_game(corner, mask).item() == 1.0
    # Bilinear upsampling spreads the cell a little beyond its 8x8 patch, but most mass stays.
    assert 0.5 < mass_in_mask(corner, mask).item() < 1.0
    opposite = torch.zeros(1, 1, 4, 4)
    opposite[0, 0, 3, 3] = 1.0
    assert pointing_game(opposite, mask).item() == 0.0
    assert mass_in_mask(opposite, mask).item() == 0.0


def test_mass_in_mask_is_a_share():
    mask = _box_mask(top=0, left=0, side=16)  # the top-left quarter
    maps = torch.zeros(1, 1, 32, 32)
    maps[0, 0, :16, :16] = 3.0  # 3 * 256 inside
    maps[0, 0, 16:, 16:] = 1.0  # 1 * 256 outside
    assert mass_in_mask(maps, mask).item() == pytest.approx(0.75)
    assert mass_in_mask(maps, mask[:, None]).item() == pytest.approx(0.75), "(N, 1, H, W)"
    # A softmax map sums to one (or less, once some of it is cut): still a share of its mass.
    small = maps / maps.sum() / 2
    assert mass_in_mask(small, mask).item() == pytest.approx(0.75)
    # One-row images: (N, H, W) masks with H = 1 are not (N, 1, H, W) ones.
    row = torch.tensor([[[True, False, False, False]]])
    assert mass_in_mask(torch.tensor([[[[3.0, 1.0, 0.0, 0.0]]]]), row).item() == 0.75


def test_scores_reject_bad_maps():
    mask = _box_mask()
    with pytest.raises(ValueError, match=r"^maps must be non-negative \(attention weights or "
                                         r"ReLU'd Grad-CAM\)$"):
        mass_in_mask(-torch.ones(1, 1, 4, 4), mask)
    unit = torch.ones(1, 1, 4, 4)
    unit[0, 0, 0, 0] = -1.5e-6  # beyond round-off on a map of scale 1
    with pytest.raises(ValueError, match="non-negative"):
        mass_in_mask(unit, mask)
    # Round-off below zero is relative to the map's scale: tolerated on a large map.
    large = torch.full((1, 1, 4, 4), 100.0)
    large[0, 0, 0, 0] = -5e-5
    assert 0 < mass_in_mask(large, mask).item() < 1
    with pytest.raises(ValueError, match=r"^masks must be \(N, H, W\) matching 2 maps, got "
                                         r"\(1, 32, 32\)$"):
        pointing_game(torch.ones(2, 1, 4, 4), mask)
    with pytest.raises(ValueError, match="^maps contain NaN or infinite values$"):
        pointing_game(torch.full((1, 1, 4, 4), math.nan), mask)
    with pytest.raises(ValueError, match="maps must be"):
        pointing_game(torch.ones(1, 2, 4, 4), mask)


# --- the table over a dataset ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_set():
    return make_synthetic(24, seed=5)


def _tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return attn_lib.build_model(name, num_classes=8, width=0.0625)


def test_rows_per_method_and_level(tiny_set):
    model, baseline = _tiny("vgg-att3-concat-pc"), _tiny("vgg")
    rows = localization_scores(model, tiny_set, baseline=baseline, batch_size=10)
    assert [(r.method, r.level) for r in rows] == [
        ("attention", 1), ("attention", 2), ("attention", 3),
        ("contribution", 1), ("contribution", 2), ("contribution", 3),
        ("gradcam", 1), ("gradcam", 2), ("gradcam", 3), ("chance", None), ("uniform", None)]
    assert [r.model for r in rows[6:9]] == ["vgg"] * 3
    assert [r.layer for r in rows] == ["conv7", "conv10", "conv13"] * 3 + ["", ""]
    area = tiny_set.masks.flatten(1).float().mean(1).mean().item()
    chance, uniform = rows[-2], rows[-1]
    assert uniform.mass_in_mask == pytest.approx(area) == pytest.approx(uniform.pointing_game)
    assert uniform.jaccard == pytest.approx(area)  # the whole image called object
    # A constant map's top-k pixels are a random region: exactly the chance row.
    for key in ("jaccard_topk", "jaccard_best", "best_fraction", "jaccard_auc"):
        assert getattr(uniform, key) == pytest.approx(getattr(chance, key), abs=1e-6)
    assert chance.jaccard_topk < uniform.jaccard and math.isnan(chance.jaccard)
    # Summed over three batches of up to 10 images, the chance row is each score's mean.
    masks = torch.as_tensor(tiny_set.masks).bool()
    assert chance.mass_in_mask == pytest.approx(area) == pytest.approx(chance.pointing_game)
    assert chance.jaccard_topk == pytest.approx(chance_jaccard(masks).double().mean().item())
    curve = chance_jaccard(masks, _sweep_regions(masks)).double().mean(0)
    assert chance.jaccard_best == pytest.approx(curve.max().item())
    assert chance.best_fraction == TOPK_FRACTIONS[int(curve.argmax())]
    x = torch.tensor((0.0, *TOPK_FRACTIONS), dtype=torch.float64)
    auc = torch.trapezoid(torch.cat([torch.zeros(1, dtype=torch.float64), curve]), x)
    assert chance.jaccard_auc == pytest.approx(auc.item())
    assert [r.model for r in rows] == ["vgg-att3-concat-pc"] * 6 + ["vgg"] * 3 + ["", ""]
    # Accuracies over all batches, each model its own (on 7 images, where the two differ);
    # contribution maps for the true class.
    x, labels = normalize(tiny_set.images, tiny_set.mean, tiny_set.std), tiny_set.labels
    seven = localization_scores(model, tiny_set, baseline=baseline, batch_size=3, limit=7)
    with torch.no_grad():
        accuracy = [(split_output(net(x[:7]))[0].argmax(1) == labels[:7]).double().mean().item()
                    for net in (model.eval(), baseline.eval())]
    assert accuracy[0] != accuracy[1]
    assert [r.accuracy for r in seven] == pytest.approx([accuracy[0]] * 6 + [accuracy[1]] * 3
                                                         + [None, None])
    shares = contribution_maps(model, x, labels).maps[0].clamp_min(0)
    assert rows[3].mass_in_mask == pytest.approx(mass_in_mask(shares, masks).mean().item())
    cams = gradcam_layers(baseline, x, labels, (1,))[0]  # Grad-CAM of the true class too
    assert rows[6].mass_in_mask == pytest.approx(mass_in_mask(cams, masks).mean().item())
    for r in rows:
        assert 0.0 <= r.mass_in_mask <= 1.0 and 0.0 <= r.pointing_game <= 1.0
        assert r.images == 24


def test_topk_jaccard_on_hand_made_maps():
    mask = torch.zeros(4, 4, 4, dtype=torch.bool)
    mask[:, :2, :2] = True  # a 2x2 object: 4 of 16 pixels
    maps = torch.full((4, 1, 4, 4), 0.1)
    maps[0, 0, :2, :2] = torch.tensor([[0.9, 0.8], [0.7, 0.6]])  # ranks the object first
    maps[1, 0, 0, 0], maps[1, 0, 0, 1] = 1.0, 0.2  # peaked: two object pixels on top ...
    maps[1, 0, 3, 2:] = 0.15  # ... then two background pixels
    maps[2] = 0.0
    maps[2, 0, 0, :2] = 1.0  # two object pixels, then 14 tied pixels (2 of them object)
    maps[3] = 0.3  # constant
    scores = topk_jaccard(maps, mask)
    # [1] top 4 = 2 object + 2 background: 2 / (4 + 4 - 2); the half-range cut keeps 1 pixel.
    # [2] 2 of the 14 tied pixels drawn, h ~ Hypergeometric(14, 2, 2), J = (2 + h) / (6 - h).
    tied = (66 / 91) * (2 / 6) + (24 / 91) * (3 / 5) + (1 / 91) * 1.0
    # [3] chance: h ~ Hypergeometric(16, 4, 4), J = h / (8 - h).
    chance = (880 / 7 + 396 / 3 + 48 * 3 / 5 + 1) / 1820
    torch.testing.assert_close(scores, torch.tensor([1.0, 1 / 3, tied, chance]))
    torch.testing.assert_close(jaccard_index(maps, mask)[:2], torch.tensor([1.0, 0.25]))
    torch.testing.assert_close(chance_jaccard(mask), torch.full((4,), chance))
    # Explicit region sizes, one per image or a sweep of several.
    torch.testing.assert_close(topk_jaccard(maps[1:2], mask[:1], torch.tensor([2])),
                               torch.tensor([0.5]))
    torch.testing.assert_close(topk_jaccard(maps[1:2], mask[:1], torch.tensor([1.6])),
                               torch.tensor([0.5]))  # sizes in pixels round to the nearest
    sweep = topk_jaccard(maps[:1], mask[:1], torch.tensor([[1, 4, 8]]))
    torch.testing.assert_close(sweep, torch.tensor([[0.25, 1.0, 0.5]]))
    with pytest.raises(ValueError, match="between 1 and 16"):
        topk_jaccard(maps, mask, torch.zeros(4))
    for regions in (torch.full((4,), 17), torch.zeros(4, 2)):
        with pytest.raises(ValueError, match=r"^regions must be between 1 and 16 pixels$"):
            chance_jaccard(mask, regions)  # the chance level of a region that cannot exist


def test_region_sizes_are_one_row_per_image():
    """(2N,) sizes are not read as (N, 2): a row per image, or a clear error."""
    maps, mask = torch.rand(2, 1, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool)
    for regions in (torch.ones(4), torch.ones(3, 2), torch.ones(2, 2, 1), torch.tensor(3.0)):
        message = (r"^regions must be \(N,\) or \(N, F\) for N = 2 images, got shape "
                   + re.escape(str(tuple(regions.shape))) + "$")
        with pytest.raises(ValueError, match=message):
            topk_jaccard(maps, mask, regions)
        with pytest.raises(ValueError, match=message):
            chance_jaccard(mask, regions)
    assert topk_jaccard(maps, mask, [16, 16]).tolist() == [1.0, 1.0]  # a list, as a tensor


def test_every_score_takes_an_empty_batch():
    maps, masks = torch.zeros(0, 1, 4, 4), torch.zeros(0, 4, 4, dtype=torch.bool)
    for score in (mass_in_mask, pointing_game, jaccard_index, topk_jaccard):
        assert score(maps, masks).shape == (0,), score.__name__
    assert chance_jaccard(masks).shape == (0,)
    assert topk_jaccard(maps, masks, torch.zeros(0, 3)).shape == (0, 3)
    assert chance_jaccard(masks, torch.zeros(0, 2)).shape == (0, 2)


def test_topk_jaccard_reads_ties_relative_to_the_peak_and_scores_one_pixel_exactly():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = True
    maps = torch.linspace(1.0, 0.25, 16).view(1, 1, 4, 4)  # steps of 5 % of the peak: no ties
    for scale in (1.0, 1e-6):  # a softmax map's values are ~1/(h*w): the same ranking
        torch.testing.assert_close(topk_jaccard(maps * scale, mask, torch.tensor([[2, 6]])),
                                   torch.tensor([[0.5, 4 / 6]]))
    one = torch.zeros(1, 4, 4, dtype=torch.bool)
    one[0, 0, 0] = True  # a one-pixel object, found: region and object are the same pixel
    torch.testing.assert_close(topk_jaccard(maps, one), torch.tensor([1.0]))


def test_jaccard_index_keeps_half_the_peak_whatever_the_scale():
    mask = torch.zeros(1, 2, 2, dtype=torch.bool)
    mask[0, 0, :] = True  # the top row is the object
    maps = torch.tensor([[1.0, 0.6], [0.4, 0.2]]).view(1, 1, 2, 2)  # min-max: 1, 0.5, 0.25, 0
    for scale in (1.0, 1e-3):  # 0.6 sits at exactly half the range: object
        torch.testing.assert_close(jaccard_index(maps * scale, mask), torch.tensor([1.0]))
    peak = torch.zeros(1, 2, 2, dtype=torch.bool)
    peak[0, 0, 0] = True  # a one-pixel object at the peak; threshold 1 keeps the peak alone
    torch.testing.assert_close(jaccard_index(maps, peak, threshold=1.0), torch.tensor([1.0]))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"^threshold must be in \(0, 1\], got {bad}$"):
            jaccard_index(maps, mask, threshold=bad)
    # Masks come as (N, H, W) or (N, 1, H, W), as the data sets store them.
    torch.testing.assert_close(chance_jaccard(mask[:, None]), chance_jaccard(mask))


def test_expectations_computed_in_chunks_agree(monkeypatch):
    """Large ties are summed in chunks of images to bound the memory; the chunks must not show."""
    from attn_lib.maps import localize

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 6, 6, generator=g) < torch.linspace(0.1, 0.6, 5).view(5, 1, 1)
    regions = torch.tensor([[3.0, 9.0]]).expand(5, -1)
    whole, swept = chance_jaccard(masks), chance_jaccard(masks, regions)
    top = int(masks.flatten(1).sum(1).max())  # the largest object: terms per image, plus one
    for rows in (1, 2, 5):  # one image a chunk, uneven chunks, exactly all the images
        monkeypatch.setattr(localize, "_EXPECTATION_CHUNK", rows * (top + 1))
        assert torch.equal(chance_jaccard(masks), whole)
        monkeypatch.setattr(localize, "_EXPECTATION_CHUNK", rows * 2 * (min(top, 9) + 1))
        assert torch.equal(chance_jaccard(masks, regions), swept)


def test_sweep_best_fraction_and_area_under_the_curve():
    # A map equal to its 40-pixel mask on a 20x20 image: the top f of the image scores
    # min(f / 0.1, 0.1 / f), best 1.0 at f = 0.1.
    mask = torch.zeros(1, 20, 20, dtype=torch.bool)
    mask[0, 2:7, 3:11] = True
    acc = _Accumulator()
    acc.add(mask.float()[:, None], mask)
    best, fraction, auc = acc.sweep_summary(1)
    assert (best, fraction) == (pytest.approx(1.0), 0.1)
    f = [0.0, *TOPK_FRACTIONS]
    j = [0.0] + [min(round(x * 400) / 40, 40 / round(x * 400)) for x in TOPK_FRACTIONS]
    by_hand = sum((f[i + 1] - f[i]) * (j[i + 1] + j[i]) / 2 for i in range(len(f) - 1))
    assert auc == pytest.approx(by_hand)
    chance = _Accumulator()
    chance.add_chance(mask)
    assert chance.sweep_summary(1)[2] < auc / 2


def test_rows_name_the_layers_of_a_model_beyond_the_vgg(tiny_set):
    """An attention ResNet's levels are its stages: level 1 is not the VGG's conv7."""
    torch.manual_seed(0)
    model = attn_lib.build_model("resnet20-att2-concat-pc", num_classes=8, width=0.0625)
    rows = localization_scores(model, tiny_set, limit=4)
    assert [(r.method, r.level, r.layer) for r in rows] == [
        ("attention", 1, "stage 2"), ("attention", 2, "stage 3"),
        ("contribution", 1, "stage 2"), ("contribution", 2, "stage 3"),
        ("chance", None, ""), ("uniform", None, "")]
    assert json.loads(format_rows(rows, "json"))[0]["layer"] == "stage 2"


def test_rows_name_a_model_without_a_name_by_its_class(tiny_set):
    torch.manual_seed(0)
    model = attn_lib.models.AttnVGG(num_classes=8, width=0.0625)  # not from build_model
    assert {r.model for r in localization_scores(model, tiny_set, limit=2)} == {"AttnVGG", ""}


def test_swept_regions_are_fractions_of_every_pixel_at_least_one():
    masks = torch.zeros(2, 4, 6, dtype=torch.bool)  # 24 pixels, not square
    expected = [1, 1, 1, 1, 2, 2, 3, 4, 5, 6, 7, 10, 12, 14, 17, 19, 22, 24]  # round(f * 24)
    assert _sweep_regions(masks).tolist() == [expected] * 2


def test_models_without_attention_get_gradcam_rows(tiny_set):
    rows = localization_scores(_tiny("vgg"), tiny_set, limit=8)
    assert [(r.method, r.level) for r in rows] == [
        ("gradcam", 1), ("gradcam", 2), ("gradcam", 3), ("chance", None), ("uniform", None)]
    assert rows[0].images == 8


def test_dataset_without_masks_is_an_error(tiny_set):
    import dataclasses
    from types import SimpleNamespace

    fix = re.escape("; localisation needs a dataset with masks, e.g. load_dataset('synthetic', "
                    "split='test') or 'cub200'") + "$"
    model = _tiny("vgg-att2-concat-pc")
    with pytest.raises(ValueError, match="^dataset 'synthetic' has no object masks" + fix):
        localization_scores(model, dataclasses.replace(tiny_set, masks=None))
    with pytest.raises(ValueError, match="^dataset '' has no object masks" + fix):
        localization_scores(model, SimpleNamespace(images=tiny_set.images))


def test_batch_sizes_and_image_counts_at_their_limits(tiny_set):
    import dataclasses

    model = _tiny("vgg-att2-concat-pc")
    with pytest.raises(ValueError, match="^batch_size must be positive, got 0$"):
        localization_scores(model, tiny_set, batch_size=0)
    one = localization_scores(model, tiny_set, batch_size=1, limit=1)
    assert {r.images for r in one} == {1}
    empty = dataclasses.replace(tiny_set, masks=torch.zeros_like(torch.as_tensor(tiny_set.masks)))
    with pytest.raises(ValueError, match="^no images with a non-empty object mask to score$"):
        localization_scores(model, empty)


def test_a_model_beyond_the_vgg_without_attention_is_told_to_name_a_layer(tiny_set):
    """Its Grad-CAM rows need the VGG's levels; a plain classifier gets the error, not a crash."""
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 8))
    with pytest.raises(ValueError, match="^Sequential has no VGG backbone"):
        localization_scores(plain, tiny_set, limit=2)


def test_formats():
    rows = [LocalizationRow("attention", 1, 0.5, 0.75, "m", 0.9, 10, 0.25, 0.4, 0.45, 0.1, 0.3,
                            "conv7"),
            LocalizationRow("chance", None, 0.1, 0.1, "", None, 10, math.nan, 0.05, 0.1, 0.2,
                            0.15)]
    table = format_rows(rows).splitlines()
    assert table[0].split() == ["method", "model", "level", "layer", "mass_in_mask",
                                "pointing_game", "jaccard", "jaccard_topk", "jaccard_best",
                                "best_fraction", "jaccard_auc", "accuracy", "images"]
    assert table[1].split() == ["attention", "m", "1", "conv7", "0.500", "0.750", "0.250",
                                "0.400", "0.450", "0.100", "0.300", "0.900", "10"]
    assert table[2].split() == ["chance", "-", "-", "-", "0.100", "0.100", "nan", "0.050",
                                "0.100", "0.200", "0.150", "-", "10"]
    assert all(line == line.rstrip() for line in table)  # no trailing spaces
    # Aligned: names start under their header, numbers end under theirs (cells are no wider).
    for name, cells in zip(table[0].split(), zip(table[1].split(), table[2].split())):
        start = table[0].index(name)
        for line, value in zip(table[1:], cells):
            if name in ("method", "model", "layer"):
                assert line[start:start + len(value)] == value, (name, line)
            else:
                end = start + len(name)
                assert line[end - len(value):end] == value and line[end:end + 1] in ("", " ")
    assert json.loads(format_rows(rows, "json"))[1]["level"] is None
    assert format_rows(rows, "json").splitlines()[:3] == [  # one field a line, for reading
        "[", "  {", '    "method": "attention",']
    assert format_rows(rows, "csv").splitlines()[1] == (
        "attention,m,1,conv7,0.5,0.75,0.25,0.4,0.45,0.1,0.3,0.9,10")
    csv_text = format_rows(rows, "csv")
    assert "\r" not in csv_text and not csv_text.endswith("\n"), "plain lines, none empty"
    with pytest.raises(ValueError,
                       match="^unknown format 'xml'; expected one of table, csv, json$"):
        format_rows(rows, "xml")


# --- the command line and a trained model ---------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A seconds-long run of the smoke preset: a checkpoint to point the CLI at."""
    out = tmp_path_factory.mktemp("run")
    return attn_lib.train("vgg-att2-concat-pc", "synthetic", preset="smoke", out_dir=out,
                          progress=False, device="cpu")


def test_cli_prints_the_table(smoke_run, capsys):
    from attn_lib.cli import main

    code = main(["localize", "--checkpoint", str(smoke_run.run_dir), "--limit", "20",
                 "--gradcam"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert "20 images" in lines[0]
    assert lines[1].split()[:6] == ["method", "model", "level", "layer", "mass_in_mask",
                                    "pointing_game"]
    methods = [line.split()[0] for line in lines[2:]]
    assert methods == (["attention"] * 2 + ["contribution"] * 2 + ["gradcam"] * 3
                       + ["chance", "uniform"])


def test_cli_json_and_baseline(smoke_run, capsys):
    from attn_lib.cli import main

    checkpoint = str(smoke_run.run_dir)
    assert main(["localize", "--checkpoint", checkpoint, "--baseline", checkpoint,
                 "--limit", "10", "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in records] == (["attention"] * 2 + ["contribution"] * 2
                                              + ["gradcam"] * 3 + ["chance", "uniform"])
    assert {"mass_in_mask", "pointing_game", "level", "layer"} <= set(records[0])


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    from attn_lib.cli import main

    assert main(["localize", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing.pt" in err and "\n" not in err


def test_reduced_main_job_model_localises_well_above_chance(learned):
    # The session's reduced main-job run (tests/conftest.py): a 1/16-width model, 640 steps.
    rows = localization_scores(learned.model, load_dataset("synthetic", "test", limit=500))
    chance = rows[-1]
    assert chance.method == "uniform" and 0.05 < chance.pointing_game < 0.15
    attention = [r for r in rows if r.method == "attention"]
    best = max(attention, key=lambda r: r.pointing_game)
    assert best.pointing_game >= 3 * chance.pointing_game, format_rows(rows)
    assert best.mass_in_mask >= 2 * chance.mass_in_mask, format_rows(rows)


def test_main_job_weights_localise_far_above_chance():
    # The shipped 'synthetic' weights are the main job's model (tests/test_weights.py checks
    # that they were trained with today's cpu preset and default model): its best level must
    # point at the object in >= 80 % of test images, with chance at ~10 %.
    model = attn_lib.build_model("vgg-att3-concat-pc", weights="synthetic")
    rows = localization_scores(model, load_dataset("synthetic", "test", limit=500))
    chance = rows[-1].pointing_game
    attention = [r for r in rows if r.method == "attention"]
    best = max(attention, key=lambda r: r.pointing_game)
    assert best.pointing_game >= 0.8 and best.pointing_game >= 5 * chance, format_rows(rows)
    assert best.level == 2, format_rows(rows)  # conv10, as the README's table says
    assert attention[0].accuracy >= 0.95, format_rows(rows)


# --- the command line's error paths and the checkpoint's own statistics ----------------------

CKPT_MEAN, CKPT_STD = (0.2, 0.6, 0.3), (0.5, 0.15, 0.4)


def _checkpoint(path, name="vgg-att2-concat-pc", *, dataset="synthetic", num_classes=8,
                mean=CKPT_MEAN, std=CKPT_STD, image_size=32, seed=0):
    """A checkpoint of a fresh narrow model with the data statistics given; returns the model."""
    from attn_lib.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = attn_lib.build_model(name, num_classes=num_classes, width=0.0625).eval()
    save_checkpoint(path, {
        "model_name": name, "model_options": dict(model.options),
        "state_dict": model.state_dict(), "epoch": 1, "history": [],
        "data": {"dataset": dataset, "classes": [str(i) for i in range(num_classes)],
                 "mean": tuple(mean), "std": tuple(std), "image_size": image_size},
    })
    return model


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_cli_normalises_with_the_checkpoints_statistics(tmp_path, capsys):
    import dataclasses

    from attn_lib.cli import main

    model = _checkpoint(tmp_path / "m.pt", "vgg-att3-concat-dp")
    data = load_dataset("synthetic", "test", limit=16)
    theirs = localization_scores(model, dataclasses.replace(data, mean=CKPT_MEAN, std=CKPT_STD))
    own = localization_scores(model, data)
    # the statistics matter for these maps, so the test can tell which ones were used
    assert max(abs(a.mass_in_mask - b.mass_in_mask) for a, b in zip(own, theirs)) > 1e-3
    assert main(["localize", "--checkpoint", str(tmp_path / "m.pt"), "--limit", "16",
                 "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == len(theirs)
    for record, row in zip(records, theirs):
        assert (record["method"], record["level"]) == (row.method, row.level)
        for key in ("mass_in_mask", "pointing_game", "jaccard", "jaccard_topk", "jaccard_auc"):
            assert record[key] == pytest.approx(getattr(row, key), abs=1e-6, nan_ok=True), (
                row, key)


def _folder_dataset(root) -> None:
    """A folder data set (no masks): two classes, two 32x32 PNGs each, in both splits."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for k in range(2):
                pixels = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=g)
                Image.fromarray(pixels.numpy()).save(root / split / cls / f"{k}.png")


def test_cli_refuses_a_dataset_without_masks(tmp_path, capsys):
    from attn_lib.cli import main

    _folder_dataset(tmp_path / "images")
    _checkpoint(tmp_path / "m.pt", dataset="folder", num_classes=2)
    assert main(["localize", "--checkpoint", str(tmp_path / "m.pt"), "--dataset", "folder",
                 "--data-dir", str(tmp_path / "images")]) == 2
    err = _one_line_error(capsys)
    assert "'folder' has no object masks" in err and "synthetic" in err


def test_cli_refuses_an_image_size_mismatch(tmp_path, capsys):
    from attn_lib.cli import main

    _checkpoint(tmp_path / "m.pt", image_size=64)
    assert main(["localize", "--checkpoint", str(tmp_path / "m.pt"), "--limit", "8"]) == 2
    err = _one_line_error(capsys)
    assert "trained on 64x64 images" in err and "has 32x32" in err


@pytest.mark.parametrize("dataset, mean", [("cifar10", CKPT_MEAN), ("synthetic", (0.1, 0.1, 0.1))])
def test_cli_refuses_a_baseline_trained_on_other_data(tmp_path, capsys, dataset, mean):
    from attn_lib.cli import main

    _checkpoint(tmp_path / "m.pt")
    _checkpoint(tmp_path / "base.pt", "vgg", dataset=dataset, mean=mean)
    assert main(["localize", "--checkpoint", str(tmp_path / "m.pt"), "--baseline",
                 str(tmp_path / "base.pt"), "--limit", "8"]) == 2
    err = _one_line_error(capsys)
    assert "--baseline" in err and "same dataset" in err and "base.pt" in err


def test_cli_accepts_a_baseline_trained_on_the_same_data(tmp_path, capsys):
    from attn_lib.cli import main

    _checkpoint(tmp_path / "m.pt")
    _checkpoint(tmp_path / "base.pt", "vgg")
    assert main(["localize", "--checkpoint", str(tmp_path / "m.pt"), "--baseline",
                 str(tmp_path / "base.pt"), "--limit", "8", "--format", "csv"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split(",")[:2] for r in rows[4:7]] == [["gradcam", "vgg"]] * 3


@pytest.mark.parametrize("option, value, message", [
    ("--limit", "-1", "--limit must be >= 0"),
    ("--batch-size", "0", "--batch-size must be positive"),
])
def test_cli_refuses_bad_numbers(tmp_path, capsys, option, value, message):
    from attn_lib.cli import main

    _checkpoint(tmp_path / "m.pt")
    assert main(["localize", "--checkpoint", str(tmp_path / "m.pt"), option, value]) == 2
    assert message in _one_line_error(capsys)
