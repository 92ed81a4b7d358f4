"""The study: FGSM by hand, the g-shuffle probe, Jaccard; the runner's files, skips, resume."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import attn_lib
from attn_lib.data import ArrayDataset, load_dataset, normalize
from attn_lib.maps.localize import jaccard_index
from attn_lib.study import (
    fgsm_accuracy,
    fgsm_perturb,
    global_shuffle_effect,
    pgd_accuracy,
    pgd_perturb,
    reproduce,
)
from attn_lib.study.robustness import derangement, shuffled_global
from attn_lib.study.runner import EVALUATION_FILE, run_name

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


class _Linear(nn.Module):
    """logits = W x_normalised + b, on 3x2x2 images: gradients by hand are easy."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.linspace(-1, 1, 24).view(2, 12) * torch.tensor(
                [1.0, -2.0])[:, None])
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _hand_gradient(model: _Linear, pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    z = model.fc(((pixels - mean) / std).flatten(1))
    probs = z.softmax(1)
    onehot = torch.nn.functional.one_hot(labels, 2).float()
    # d CE / d x = W^T (p - onehot) / std, averaged over the batch (sign is unaffected by 1/N)
    grad_normalised = (probs - onehot) @ model.fc.weight
    return grad_normalised.view_as(pixels) / std / len(labels)


def test_fgsm_is_epsilon_times_the_sign_of_the_input_gradient_clipped() -> None:
    model = _Linear().train()
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(4, 3, 2, 2, generator=generator)
    pixels[0, 0, 0, 0], pixels[1, 2, 1, 1] = 0.999, 0.001  # will be clipped
    labels = torch.tensor([0, 1, 1, 0])
    eps = 4 / 255
    adversarial = fgsm_perturb(model, pixels, labels, eps, MEAN, STD)
    sign = _hand_gradient(model, pixels, labels).sign()
    assert (sign != 0).all()
    torch.testing.assert_close(adversarial, (pixels + eps * sign).clamp(0, 1))
    moved = (adversarial - pixels).abs()
    assert torch.all(moved <= eps + 1e-7)
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert model.training  # mode restored


def test_fgsm_accuracy_counts_correct_adversarial_predictions() -> None:
    model = _Linear()
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (10, 3, 2, 2), generator=generator, dtype=torch.uint8)
    with torch.no_grad():
        x = (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(
            STD).view(1, 3, 1, 1)
        labels = model(x).argmax(1)  # every clean prediction is right
    labels[:3] = 1 - labels[:3]  # three are wrong
    ds = ArrayDataset(images, labels, ["a", "b"], MEAN, STD)
    result = fgsm_accuracy(model, ds, [0.0, 8 / 255, 0.5], batch_size=3)
    assert result[0.0] == pytest.approx(0.7)
    expected = []
    for eps in (8 / 255, 0.5):
        adversarial = fgsm_perturb(model, images, labels, eps, MEAN, STD)
        with torch.no_grad():
            x = (adversarial - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(
                STD).view(1, 3, 1, 1)
            expected.append(float((model(x).argmax(1) == labels).float().mean()))
    assert [result[8 / 255], result[0.5]] == pytest.approx(expected)
    assert result[0.5] < 0.7  # a large step does hurt this model
    with pytest.raises(ValueError, match="pixels in \\[0, 1\\]"):
        fgsm_perturb(model, torch.randn(2, 3, 2, 2) * 3, labels[:2], 0.1, MEAN, STD)
    with pytest.raises(ValueError, match="epsilons"):
        fgsm_accuracy(model, ds, [2.0])


def test_pgd_is_projected_sign_steps_from_a_random_start_clipped() -> None:
    model = _Linear().train()
    pixels = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    pixels[0, 0, 0, 0], pixels[1, 2, 1, 1] = 0.999, 0.001  # will be clipped
    labels = torch.tensor([0, 1, 1, 0])
    eps, alpha, steps = 8 / 255, 3 / 255, 4
    adversarial = pgd_perturb(model, pixels, labels, eps, MEAN, STD, steps=steps,
                              step_size=alpha, generator=torch.Generator().manual_seed(5))
    # By hand: the same uniform start, then each step a sign step, projected and clipped.
    start = torch.rand(pixels.shape, generator=torch.Generator().manual_seed(5)) * 2 - 1
    x = (pixels + eps * start).clamp(0, 1)
    for _ in range(steps):
        x = x + alpha * _hand_gradient(model, x, labels).sign()
        x = torch.minimum(torch.maximum(x, pixels - eps), pixels + eps).clamp(0, 1)
        assert torch.all((x - pixels).abs() <= eps + 1e-7)
    torch.testing.assert_close(adversarial, x)
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert (adversarial - pixels).abs().max() > eps - 1e-6  # it does use the budget
    assert model.training  # mode restored
    # Another seed starts elsewhere: the start is random, not the clean image.
    other = pgd_perturb(model, pixels, labels, eps, MEAN, STD, steps=1, step_size=alpha,
                        generator=torch.Generator().manual_seed(6))
    first = pgd_perturb(model, pixels, labels, eps, MEAN, STD, steps=1, step_size=alpha,
                        generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(other, first)
    with pytest.raises(ValueError, match="steps"):
        pgd_perturb(model, pixels, labels, eps, MEAN, STD, steps=0)


def test_pgd_default_step_is_2_5_epsilon_over_steps() -> None:
    model = _Linear()
    pixels = torch.full((2, 3, 2, 2), 0.5)
    labels = torch.tensor([0, 1])
    eps = 4 / 255
    default = pgd_perturb(model, pixels, labels, eps, MEAN, STD, steps=10,
                          generator=torch.Generator().manual_seed(0))
    explicit = pgd_perturb(model, pixels, labels, eps, MEAN, STD, steps=10, step_size=eps / 4,
                           generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(default, explicit)


def test_pgd_accuracy_on_a_linear_two_class_model_equals_fgsm() -> None:
    # For two classes and a linear model the loss gradient's sign is the same everywhere, so
    # FGSM's corner is the best the ball offers and PGD's 2.5-epsilon walk ends exactly there.
    model = _Linear()
    images = torch.randint(0, 256, (30, 3, 2, 2), generator=torch.Generator().manual_seed(2),
                           dtype=torch.uint8)
    with torch.no_grad():
        x = (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(
            STD).view(1, 3, 1, 1)
        labels = model(x).argmax(1)
    ds = ArrayDataset(images, labels, ["a", "b"], MEAN, STD)
    epsilons = [0.0, 8 / 255, 32 / 255]
    pgd = pgd_accuracy(model, ds, epsilons, batch_size=7)
    fgsm = fgsm_accuracy(model, ds, epsilons, batch_size=7)
    assert pgd == pytest.approx(fgsm)
    assert pgd[0.0] == 1.0 and pgd[32 / 255] < pgd[8 / 255] < 1.0
    assert pgd_accuracy(model, ds, epsilons, batch_size=7) == pgd  # seeded: repeatable


def test_pgd_accuracy_counts_the_attack_pgd_perturb_makes_with_its_steps_and_seed() -> None:
    # The accuracy is that of pgd_perturb's images, batch by batch and budget by budget, with
    # the steps asked for and the random starts drawn in that order from the seed.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    images = torch.randint(0, 256, (200, 3, 2, 2), generator=torch.Generator().manual_seed(3),
                           dtype=torch.uint8)
    with torch.no_grad():  # labels the model gets right, so the attack has work to do
        labels = model(normalize(images.float() / 255, MEAN, STD)).argmax(1)
    ds = ArrayDataset(images, labels, ["a", "b", "c"], MEAN, STD)
    epsilons = (2 / 255, 8 / 255)
    generator = torch.Generator().manual_seed(5)
    correct = dict.fromkeys(epsilons, 0)
    for start in range(0, 200, 64):
        pixels, y = images[start:start + 64].float() / 255, labels[start:start + 64]
        for eps in epsilons:
            adversarial = pgd_perturb(model, pixels, y, eps, MEAN, STD, steps=3,
                                      generator=generator)
            with torch.no_grad():
                logits = model(normalize(adversarial, MEAN, STD))
            correct[eps] += int((logits.argmax(1) == y).sum())
    expected = {eps: correct[eps] / 200 for eps in epsilons}
    assert 0 < expected[8 / 255] < expected[2 / 255] < 1
    assert pgd_accuracy(model, ds, epsilons, steps=3, batch_size=64, seed=5) == expected


def test_derangement_moves_every_index() -> None:
    generator = torch.Generator().manual_seed(0)
    for n in (2, 3, 7, 50):
        p = derangement(n, generator)
        assert sorted(p.tolist()) == list(range(n))
        assert (p != torch.arange(n)).all()


@pytest.fixture(scope="module")
def varied_set() -> ArrayDataset:
    return load_dataset("synthetic", "test", limit=40)


def _calibrated(name: str, ds: ArrayDataset) -> nn.Module:
    """A random model whose batch-norm statistics come from the data, so that its eval-mode
    predictions differ from image to image (untrained statistics make them all alike)."""
    from attn_lib.data import normalize

    model = attn_lib.build_model(name, num_classes=8, width=0.125).train()
    with torch.no_grad():
        for _ in range(3):
            model(normalize(ds.images, ds.mean, ds.std))
        # A large g, as training makes it: dp's maps become peaked (pc's cannot change at all).
        model.backbone.global_fc[1].weight.mul_(30)
    return model


def test_shuffling_g_changes_nothing_for_pc_but_changes_dp(varied_set: ArrayDataset) -> None:
    torch.manual_seed(0)
    pc = _calibrated("vgg-att3-concat-pc", varied_set)
    dp = _calibrated("vgg-att3-concat-dp", varied_set)
    pc_effect = global_shuffle_effect(pc, varied_set, batch_size=20)
    dp_effect = global_shuffle_effect(dp, varied_set, batch_size=20)
    assert pc_effect["delta_acc"] == 0.0 and pc_effect["changed_predictions"] == 0.0
    assert pc_effect["max_attention_change"] < 1e-6
    assert dp_effect["max_attention_change"] > 1e-3
    assert dp_effect["changed_predictions"] > 0


def test_shuffled_global_feeds_other_images_g_to_the_estimators() -> None:
    torch.manual_seed(0)
    model = attn_lib.build_model("vgg-att2-concat-dp", width=0.125).eval()
    x = torch.randn(3, 3, 32, 32)
    seen = []
    handle = model.estimators[0].register_forward_hook(lambda m, inp, out: seen.append(inp[1]))
    g = model.backbone(x).global_
    with torch.no_grad(), shuffled_global(model, torch.tensor([2, 0, 1])):
        model(x)
    handle.remove()
    torch.testing.assert_close(seen[-1], g[[2, 0, 1]])
    with pytest.raises(ValueError, match="no attention"):
        with shuffled_global(attn_lib.build_model("vgg", width=0.125), torch.tensor([1, 0])):
            pass


def test_jaccard_on_hand_made_masks() -> None:
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True  # a 2x2 object: 4 of 16 pixels
    maps = torch.zeros(3, 1, 4, 4)
    maps[0, 0, :2, :2] = 1.0  # exactly the object
    maps[1, 0] = 0.3  # constant: all "object", area 4/16
    maps[2, 0, :2, :4] = 1.0  # the object and as much beside it: 4 / 8
    maps[2, 0, 3, 3] = 0.4  # below half the peak: not object
    scores = jaccard_index(maps, masks)
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.25, 0.5]))


SMOKE = dict(scale="smoke", models=["vgg", "vgg-att3-concat-pc"], seeds=[0], epochs=1,
             progress=False, device="cpu")


def test_study_writes_its_results_then_skips_and_resumes(tmp_path, monkeypatch) -> None:
    out, runs = tmp_path / "results", tmp_path / "runs"
    result = reproduce(out_dir=out, runs_dir=runs, note="A note for the reader.", **SMOKE)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["RESULTS.md", "accuracy.png", "attention.png", "records", "results.json",
                     "robustness.png"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["study"]["models"] == ["vgg", "vgg-att3-concat-pc"]
    assert saved["environment"]["torch"] == torch.__version__
    run = {r["model"]: r for r in saved["runs"]}
    assert run["vgg"]["parameters"] == sum(
        p.numel() for p in attn_lib.build_model("vgg", 8, width=0.0625).parameters())
    for attack in ("fgsm", "pgd"):  # the study's budgets and the large sanity budget
        assert [f["epsilon_255"] for f in run["vgg"][attack]] == [1, 2, 4, 8, 64]
    assert run["vgg"]["attack"]["images"] == saved["study"]["attack_images"] == 16
    assert run["vgg"]["attack"]["pgd_steps"] == 10
    assert set(saved["summary"]["vgg"]["checks"]) >= {"falls_with_epsilon", "pgd_at_most_fgsm",
                                                      "large_epsilon_near_zero"}
    assert saved["robustness_verdict"] in (out / "RESULTS.md").read_text()
    assert "g_shuffle" not in run["vgg"] and run["vgg-att3-concat-pc"]["g_shuffle"][
        "delta_acc"] == 0.0
    assert {row["method"] for row in run["vgg"]["localization"]} == {"gradcam", "chance",
                                                                      "uniform"}
    assert {row["method"] for row in run["vgg-att3-concat-pc"]["localization"]} == {
        "attention", "contribution", "chance", "uniform"}
    assert result.results["summary"]["vgg"]["seeds"] == [0]
    text = (out / "RESULTS.md").read_text()
    assert "| `vgg-att3-concat-pc` |" in text and "FGSM ε=8/255" in text
    assert "PGD ε=8/255" in text and "PGD 64/255" in text and "## Robustness" in text
    assert "| Jaccard top-k |" in text and "| chance |" in text
    assert "A note for the reader." in text and saved["study"]["runs_dir"] == "runs"
    assert f"{100 * run['vgg']['test_acc']:.2f}" in text

    # A rerun trains nothing: every run is evaluated already.
    monkeypatch.setattr("attn_lib.study.runner.train", _refuse)
    reproduce(out_dir=out, runs_dir=runs, **SMOKE)

    # A run whose evaluation is missing (killed after training) is evaluated, not retrained.
    (runs / run_name("vgg", 0) / EVALUATION_FILE).unlink()
    (out / "records" / f"{run_name('vgg', 0)}.json").unlink()  # (or its record is taken)
    calls = []
    monkeypatch.setattr("attn_lib.study.runner.train", _spy(calls))
    reproduce(out_dir=out, runs_dir=runs, **SMOKE)
    assert calls == [("vgg", True)]
    assert (runs / run_name("vgg", 0) / EVALUATION_FILE).is_file()

    # An evaluation of an older version is recomputed, again without training anything new.
    path = runs / run_name("vgg-att3-concat-pc", 0) / EVALUATION_FILE
    old = json.loads(path.read_text())
    old["evaluation_version"] -= 1
    path.write_text(json.dumps(old))
    record = out / "records" / f"{run_name('vgg-att3-concat-pc', 0)}.json"
    record.write_text(json.dumps(dict(json.loads(record.read_text()),
                                      evaluation_version=old["evaluation_version"])))
    calls.clear()
    reproduce(out_dir=out, runs_dir=runs, **SMOKE)
    assert calls == [("vgg-att3-concat-pc", True)]
    new = json.loads(path.read_text())
    assert new["evaluation_version"] == old["evaluation_version"] + 1
    assert new["epochs"] == old["epochs"] and new["history"] == old["history"]


def test_study_resumes_a_run_killed_mid_training(tmp_path, monkeypatch) -> None:
    import attn_lib.training.epoch as epoch

    real_append = epoch.append_metrics
    calls = []

    def die_in_the_second_run(run_dir, row):
        real_append(run_dir, row)
        calls.append(row["epoch"])
        if len(calls) == 3:  # vgg's epochs 1 and 2, then epoch 1 of the dp run
            raise KeyboardInterrupt  # as if killed after that epoch was checkpointed

    settings = dict(SMOKE, models=["vgg", "vgg-att3-concat-dp"], epochs=2)
    out = tmp_path / "out"
    monkeypatch.setattr(epoch, "append_metrics", die_in_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        reproduce(out_dir=out, runs_dir=tmp_path / "runs", **settings)
    # The finished run's numbers were written before the second run started.
    partial = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in partial["runs"]] == ["vgg"]
    monkeypatch.setattr(epoch, "append_metrics", real_append)
    result = reproduce(out_dir=out, runs_dir=tmp_path / "runs", **settings)
    assert [r["model"] for r in result.results["runs"]] == ["vgg", "vgg-att3-concat-dp"]
    assert [row["epoch"] for row in result.results["runs"][1]["history"]] == [1, 2]


def test_study_refuses_bad_plans(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        reproduce(scale="smoke", models=["vgg-att9"], out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown scale"):
        reproduce(scale="huge", out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="seeds"):
        reproduce(scale="smoke", seeds=[-1], out_dir=tmp_path, progress=False)


def _refuse(*args, **kwargs):
    raise AssertionError("a finished run was trained again")


def _spy(calls):
    from attn_lib.training import train

    def spy(model, *args, **kwargs):
        calls.append((model, kwargs["resume"]))
        return train(model, *args, **kwargs)

    return spy


def test_gpu_scale_dry_run_on_the_cpu(tmp_path, monkeypatch) -> None:
    # The gpu scale exactly as it is (fast preset, torch.compile) but tiny: a narrow model on a
    # few synthetic images, compiled with torch.compile's "eager" backend so the tracing is
    # checked without the minutes of CPU code generation. What a GPU run would hit first
    # (settings the train() call refuses, a compile error, the report) fails here instead.
    import dataclasses
    import functools

    from attn_lib.study import scales

    gpu = scales.SCALES["gpu"]
    tiny = dict(gpu.train, width=0.0625, limit_train=128, batch_size=32)
    monkeypatch.setitem(scales.SCALES, "gpu", dataclasses.replace(gpu, train=tiny, limit_test=32))
    compiled = []
    eager_compile = functools.partial(torch.compile, backend="eager")
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(m) or eager_compile(m))
    result = reproduce("synthetic", "gpu", models=["vgg-att2-concat-pc"], seeds=[0], epochs=1,
                       out_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
                       progress=False, figures=False, device="cpu")
    (run,) = result.results["runs"]
    assert run["train_settings"]["compile"] is True and run["recipe"]["name"] == "fast"
    assert run["epochs"] == 1 and (tmp_path / "results" / "RESULTS.md").exists()
    assert len(compiled) == 1  # the model was compiled for training


def _attacked_run(model: str, clean: float, fgsm: list[float], pgd: list[float]) -> dict:
    rows = lambda accs: [{"epsilon": e / 255, "epsilon_255": e, "acc": a}  # noqa: E731
                         for e, a in zip((2, 8, 64), accs)]
    return {"model": model, "attack": {"clean_acc": clean}, "fgsm": rows(fgsm), "pgd": rows(pgd)}


def test_attack_checks_catch_each_failure() -> None:
    from attn_lib.study.report import attack_checks

    good = _attacked_run("m", 0.8, [0.5, 0.3, 0.1], [0.4, 0.1, 0.0])
    assert attack_checks([good]) == {
        "falls_with_epsilon": True, "pgd_at_most_fgsm": True, "large_epsilon_255": 64,
        "large_epsilon_pgd_acc": 0.0, "large_epsilon_near_zero": True}
    rises = _attacked_run("m", 0.8, [0.5, 0.3, 0.1], [0.4, 0.45, 0.0])  # PGD rises at 8/255
    above_clean = _attacked_run("m", 0.8, [0.85, 0.3, 0.1], [0.4, 0.1, 0.0])
    pgd_above = _attacked_run("m", 0.8, [0.5, 0.3, 0.1], [0.4, 0.35, 0.0])
    stuck = _attacked_run("m", 0.8, [0.5, 0.3, 0.2], [0.4, 0.1, 0.05])
    assert not attack_checks([good, rises])["falls_with_epsilon"]
    overshoot = _attacked_run("m", 0.8, [0.5, 0.3, 0.35], [0.4, 0.1, 0.0])  # FGSM at 64/255
    assert attack_checks([overshoot])["falls_with_epsilon"]
    pgd_rises_late = _attacked_run("m", 0.8, [0.5, 0.3, 0.35], [0.4, 0.1, 0.2])
    assert not attack_checks([pgd_rises_late])["falls_with_epsilon"]
    assert not attack_checks([above_clean])["falls_with_epsilon"]
    assert attack_checks([pgd_above])["falls_with_epsilon"]
    assert not attack_checks([good, pgd_above])["pgd_at_most_fgsm"]
    checks = attack_checks([stuck, good])
    assert checks["large_epsilon_pgd_acc"] == 0.05 and not checks["large_epsilon_near_zero"]


def test_robustness_verdict_needs_every_seed_above_every_other() -> None:
    from attn_lib.study.report import robustness_verdict

    def runs(a_pgd8: list[float], b_pgd8: list[float], c_pgd8: list[float]) -> list[dict]:
        return [_attacked_run(m, 0.8, [0.5, 0.3, 0.1], [0.4, acc, 0.0])
                for m, accs in (("a", a_pgd8), ("b", b_pgd8), ("c", c_pgd8)) for acc in accs]

    clear = robustness_verdict(runs([0.20, 0.22], [0.10, 0.12], [0.05, 0.06]), [8])
    assert "ε = 8/255: `a` (next best `b`)" in clear and "No model" not in clear
    assert "leaves no run above 22.0 %" in clear
    # a's mean leads, but one seed of b is above a seed of a: no verdict.
    overlap = robustness_verdict(runs([0.20, 0.30], [0.21, 0.10], [0.05, 0.06]), [8])
    assert overlap.startswith("No model is measurably more robust")
    # b's seeds are below a's, but c (third by mean) has a seed above one of a's.
    third = robustness_verdict(runs([0.20, 0.22], [0.10, 0.12], [0.21, 0.0]), [8])
    assert third.startswith("No model is measurably more robust")
    one_seed = robustness_verdict(runs([0.3], [0.1], [0.0]), [8])
    assert one_seed.startswith("With one seed")
    # Two budgets: a verdict at one, none at the other, and both said.
    both = robustness_verdict(runs([0.20, 0.22], [0.10, 0.12], [0.05, 0.06]), [2, 8])
    assert "ε = 8/255: `a`" in both and "At ε = 2/255 the best model's seeds overlap" in both


def test_readme_summary_is_computed_from_the_runs() -> None:
    from attn_lib.study.report import readme_summary, robustness_verdict, summarize

    def run(model: str, seed: int, acc: float, pgd2: float, shuffle: float | None) -> dict:
        r = _attacked_run(model, acc, [0.5, 0.3, 0.1], [pgd2, 0.1, 0.0])
        r.update(seed=seed, parameters=100, test_acc=acc, test_acc_tta=acc, train_time_s=1.0)
        r["attack"]["images"] = 500
        if shuffle is not None:
            r["g_shuffle"] = {"delta_acc": shuffle, "max_attention_change": 0.0}
        return r

    runs = [run("vgg", 0, 0.60, 0.20, None), run("vgg", 1, 0.62, 0.22, None),
            run("vgg-noatt", 0, 0.70, 0.30, None), run("vgg-noatt", 1, 0.74, 0.32, None),
            run("vgg-att3-concat-dp", 0, 0.73, 0.25, 0.01),
            run("vgg-att3-concat-dp", 1, 0.73, 0.27, 0.03)]
    results = {"study": {"large_epsilon": 64 / 255}, "summary": summarize(runs),
               "robustness_verdict": robustness_verdict(runs, [2, 8])}
    text = readme_summary(results)
    assert readme_summary(json.loads(json.dumps(results))) == text, "the same from results.json"
    lines = text.splitlines()
    assert lines[0] == ("| model | parameters | test acc (%) | FGSM / PGD ε = 2/255 | "
                        "FGSM / PGD ε = 8/255 | Δ acc, g shuffled (pp) |"), "64/255 left out"
    assert lines[2] == "| `vgg` | 100 | 61.00 ± 1.41 | 50.0 / 21.0 | 30.0 / 10.0 | – |"
    assert lines[4] == ("| `vgg-att3-concat-dp` | 100 | 73.00 ± 0.00 | 50.0 / 26.0 | "
                        "30.0 / 10.0 | +2.00 ± 1.41 |")
    assert ("`vgg-noatt` − `vgg`: +11.00; `vgg-att3-concat-dp` − `vgg-noatt`: +1.00."
            in text), "the gaps, and none for a model that is not in the study"
    assert "Attacks on 500 test images" in text and results["robustness_verdict"] in text


class _Recorder(nn.Module):
    """Wraps a model and keeps every batch of normalised images it is given."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x)


def _pixels_of(x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation without clamping (unlike attn_lib.data.denormalize), so that an
    attack that leaves [0, 1] shows it."""
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3)).eval()


def test_fgsm_clips_at_both_ends_and_leaves_pixels_the_loss_ignores() -> None:
    model = _Linear()
    with torch.no_grad():
        model.fc.weight[:, 5] = 0.0  # no class reads pixel 5: its gradient is exactly zero
    labels = torch.tensor([0, 1])
    sign = _hand_gradient(model, torch.full((2, 3, 2, 2), 0.5), labels).sign()
    pixels = torch.where(sign > 0, 0.999, 0.001)  # every pixel is pushed past its end
    pixels.view(2, -1)[:, 5] = 0.5
    expected = torch.where(sign > 0, 1.0, 0.0)
    expected.view(2, -1)[:, 5] = 0.5
    assert (sign.view(2, -1)[:, 5] == 0).all() and (sign < 0).any() and (sign > 0).any()
    torch.testing.assert_close(fgsm_perturb(model, pixels, labels, 4 / 255, MEAN, STD),
                               expected, rtol=0, atol=0)
    # uint8 pixels are grey levels / 255
    grey = torch.tensor([0, 255, 128, 3], dtype=torch.uint8).repeat(6).view(2, 3, 2, 2)
    torch.testing.assert_close(fgsm_perturb(model, grey, labels, 0.0, MEAN, STD),
                               grey.float() / 255)


def test_fgsm_accuracy_attacks_with_the_images_fgsm_perturb_makes() -> None:
    recorder = _Recorder(_Linear())
    with torch.no_grad():
        recorder.model.fc.weight[:, 5] = 0.0
    images = torch.tensor([0, 255, 1, 254], dtype=torch.uint8).repeat(21).view(7, 3, 2, 2)
    images.view(7, -1)[:, 5] = 128  # the pixel no class reads sits mid-range: it must not move
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    ds = ArrayDataset(images, labels, ["a", "b"], MEAN, STD)
    epsilons = (2 / 255, 1.0)  # 1 is allowed: the whole pixel range
    result = fgsm_accuracy(recorder, ds, epsilons, batch_size=3)
    # per batch: the gradient pass, then one pass per budget
    attacked = [x for i, x in enumerate(recorder.seen) if i % 3]
    expected = [fgsm_perturb(recorder.model, images[s:s + 3], labels[s:s + 3], eps, MEAN, STD)
                for s in range(0, 7, 3) for eps in epsilons]
    assert len(attacked) == len(expected) == 6
    for got, want in zip(attacked, expected):
        torch.testing.assert_close(_pixels_of(got), want)
    hits = {eps: 0 for eps in epsilons}
    for index, x in enumerate(attacked):
        hits[epsilons[index % 2]] += int((recorder.model(x).argmax(1) == labels[
            3 * (index // 2):3 * (index // 2) + 3]).sum())
    assert result == {eps: hits[eps] / 7 for eps in epsilons}


def test_pgd_accuracy_attacks_with_its_steps_and_its_default_seed() -> None:
    recorder = _Recorder(_mlp())
    images = torch.randint(0, 256, (5, 3, 2, 2), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1])
    ds = ArrayDataset(images, labels, ["a", "b", "c"], MEAN, STD)
    pgd_accuracy(recorder, ds, (8 / 255,), steps=2, batch_size=5)  # seed: the default, 0
    # per batch and budget: a gradient pass per step, then the pass that counts
    assert len(recorder.seen) == 3
    expected = pgd_perturb(recorder.model, images, labels, 8 / 255, MEAN, STD, steps=2,
                           generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_pixels_of(recorder.seen[-1]), expected)


def test_pgd_default_step_on_a_curved_loss() -> None:
    # On a nonlinear model the path depends on the step size, not only the corner it reaches.
    model, labels = _mlp(), torch.tensor([0, 1, 2])
    pixels = torch.rand(3, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    eps = 8 / 255
    runs = {size: pgd_perturb(model, pixels, labels, eps, MEAN, STD, steps=3, step_size=size,
                              generator=torch.Generator().manual_seed(0))
            for size in (None, 2.5 * eps / 3, 2.5 * eps * 3 if 2.5 * eps * 3 <= 1 else 1.0)}
    default, explicit, other = runs.values()
    torch.testing.assert_close(default, explicit)
    assert not torch.allclose(default, other)


def test_attacks_refuse_bad_pixels_budgets_steps_and_step_sizes() -> None:
    model, labels = _Linear(), torch.tensor([0, 1])
    pixels = torch.full((2, 3, 2, 2), 0.5)
    for images in (torch.rand(3, 2, 2), [[0.5]]):
        with pytest.raises(ValueError, match=r"^images must be a batch \(N, C, H, W\) of "
                                             r"pixels in \[0, 1\] or uint8$"):
            fgsm_perturb(model, images, labels, 0.1, MEAN, STD)
    with pytest.raises(ValueError, match="^images must be uint8 or float pixels in"):
        fgsm_perturb(model, torch.ones(2, 3, 2, 2, dtype=torch.int64), labels, 0.1, MEAN, STD)
    for bad in (-0.5, 1.5):  # one end out of range is enough
        images = pixels.clone()
        images[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match=r"^float images .* \(not normalised\): the "
                                             r"attacks perturb and clip in pixel space$"):
            fgsm_perturb(model, images, labels, 0.1, MEAN, STD)
    for steps in (True, 2.0, 0):
        with pytest.raises(ValueError, match="^steps must be a positive integer"):
            pgd_perturb(model, pixels, labels, 0.1, MEAN, STD, steps=steps)
    for size in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"^step_size must be in \(0, 1\] pixel units"):
            pgd_perturb(model, pixels, labels, 0.1, MEAN, STD, step_size=size)
    assert pgd_perturb(model, pixels, labels, 0.1, MEAN, STD, steps=1, step_size=1.0).shape == (
        2, 3, 2, 2)


def test_attack_progress_bars_name_the_attack_and_count_batches(capsys) -> None:
    images = torch.zeros(7, 3, 2, 2, dtype=torch.uint8)
    ds = ArrayDataset(images, torch.zeros(7, dtype=torch.long), ["a", "b"], MEAN, STD)
    fgsm_accuracy(_Linear(), ds, (0.0,), batch_size=3)
    pgd_accuracy(_Linear(), ds, (0.0,), steps=1, batch_size=3)
    assert capsys.readouterr().err == "", "no progress bar unless asked"
    for attack, name in ((fgsm_accuracy, "FGSM"), (pgd_accuracy, "PGD")):
        attack(_Linear(), ds, (0.0,), batch_size=3, progress=True)
        err = capsys.readouterr().err
        assert f"{name}:   0%" in err and "0/3" in err, err  # named, 3 batches of 7 images
        assert err.endswith(" \r"), "the bar is cleared when the attack is done (leave=False)"


def test_pgd_starts_inside_the_pixel_box_and_leaves_pixels_the_loss_ignores() -> None:
    recorder = _Recorder(_Linear())
    with torch.no_grad():
        recorder.model.fc.weight[:, 5] = 0.0  # no class reads pixel 5: its gradient is zero
    pixels = torch.tensor([0.0, 1.0, 0.002, 0.998]).repeat(6).view(2, 3, 2, 2)
    labels, eps = torch.tensor([0, 1]), 16 / 255
    adversarial = pgd_perturb(recorder, pixels, labels, eps, MEAN, STD, steps=2,
                              generator=torch.Generator().manual_seed(3))
    noise = torch.rand(pixels.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    start = (pixels + eps * noise).clamp(0, 1)
    torch.testing.assert_close(_pixels_of(recorder.seen[0]), start)  # the first gradient's input
    assert (start != pixels + eps * noise).any(), "the start was clipped at some pixel"
    torch.testing.assert_close(adversarial.view(2, -1)[:, 5], start.view(2, -1)[:, 5])


def test_attacks_need_images_and_positive_batches() -> None:
    model = _Linear()
    images = torch.randint(0, 256, (4, 3, 2, 2), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(4))
    ds = ArrayDataset(images, torch.tensor([0, 1, 1, 0]), ["a", "b"], MEAN, STD)
    assert fgsm_accuracy(model, ds, (4 / 255,), batch_size=1) == fgsm_accuracy(
        model, ds, (4 / 255,), batch_size=3)
    one = ArrayDataset(images[:1], torch.tensor([0]), ["a", "b"], MEAN, STD)
    assert set(pgd_accuracy(model, one, (0.0,)).values()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="^batch_size must be positive, got 0$"):
        fgsm_accuracy(model, ds, batch_size=0)
    empty = ArrayDataset(images[:0], torch.tensor([], dtype=torch.long), ["a", "b"], MEAN, STD)
    with pytest.raises(ValueError, match="^the dataset is empty$"):
        pgd_accuracy(model, empty)


def test_derangement_is_seeded_and_needs_two_images() -> None:
    first = derangement(50, torch.Generator().manual_seed(7))
    assert torch.equal(first, derangement(50, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, derangement(50, torch.Generator().manual_seed(8)))
    with pytest.raises(ValueError, match="^shuffling g needs at least two images per batch$"):
        derangement(1, torch.Generator())
