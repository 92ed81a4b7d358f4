"""The GPU command (benchmarks/gpu_run.py), dry-run on the CPU: its budget and skip logic, and
every step's output under $OUT within what a GPU machine returns."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]


gpu_run = load_script("gpu_run", "benchmarks")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _unit(name: str, estimate: float, clock: FakeClock, ran: list, takes: float | None = None,
          existing: str | None = None, error: bool = False):
    def run(session) -> None:
        ran.append(name)
        clock.now += estimate if takes is None else takes
        if error:
            raise RuntimeError("out of memory")

    return gpu_run.Unit("study", name, estimate, run, existing)


def test_units_that_would_not_fit_are_skipped_and_reported(tmp_path) -> None:
    clock, ran = FakeClock(), []
    session = gpu_run.Session(out=tmp_path, budget_s=100, clock=clock, work=tmp_path / "w")
    units = [_unit("a", 30, clock, ran, takes=40),    # runs longer than estimated: 60 s left
             _unit("b", 70, clock, ran),              # would not fit in 60 s
             _unit("c", 20, clock, ran, error=True),  # fails after 20 s: 40 s left
             _unit("d", 40, clock, ran),              # fits exactly
             _unit("e", 1, clock, ran)]               # nothing left
    rows = gpu_run.execute(session, units)
    assert ran == ["a", "c", "d"]
    assert [r["status"] for r in rows] == ["done", "skipped", "failed", "done", "skipped"]
    assert rows[1]["reason"] == "would not fit: needs ~70 s, 60 s left"
    assert rows[4]["reason"] == "would not fit: needs ~1 s, 0 s left"
    assert rows[2]["error"] == "RuntimeError: out of memory" and rows[0]["seconds"] == 40
    saved = json.loads((tmp_path / gpu_run.SUMMARY).read_text())
    assert saved["units"] == rows and saved["budget_s"] == 100


def test_units_whose_result_is_in_the_repository_are_skipped(tmp_path, monkeypatch) -> None:
    from attn_lib.models import weights as W
    from attn_lib.study.records import save_record
    from attn_lib.study.runner import EVALUATION_VERSION
    from attn_lib.study.scales import get_scale

    repo = tmp_path / "repo"
    session = gpu_run.Session(out=tmp_path / "out", repo=repo, dry_run=True,
                              work=tmp_path / "w")
    # Nothing there yet: every unit is to run.
    fresh = [u for step in gpu_run.STEPS.values() for u in step(session)]
    assert fresh and all(u.existing is None for u in fresh)

    notebook = repo / gpu_run.NOTEBOOK_RESULT
    notebook.parent.mkdir(parents=True)
    notebook.write_text("{}")
    (repo / "benchmarks").mkdir()
    (repo / gpu_run.TUNING_TABLE).write_text(
        "| try | recipe |\n|---|---|\n| `fast` | preset |\n"
        f"| `{gpu_run.SPEED_TRIES[0][0]}` | lr 0.2 |\n")
    smoke = get_scale("smoke")
    save_record(repo / "results/synthetic-smoke",
                {"model": "vgg", "seed": 0, "evaluation_version": EVALUATION_VERSION,
                 "test_images": smoke.limit_test, "train_settings": dict(smoke.train, epochs=1)},
                {"device_name": "NVIDIA H200", "torch": "2.11", "date": "2026-12-04 10:00 UTC"})
    shipped = [{"model": "vgg-att3-concat-pc", "weights": gpu_run.WEIGHTS_NAME}]
    monkeypatch.setattr(W, "list_weights", lambda model=None: shipped)
    units = {u.step: u for step in gpu_run.STEPS.values() for u in step(session)}
    assert units["notebook"].existing == gpu_run.NOTEBOOK_RESULT
    assert units["speed"].existing == gpu_run.TUNING_TABLE
    assert units["study"].existing == "results/synthetic-smoke/records"
    assert "cifar10-gpu" in units["weights"].existing
    ran: list[str] = []
    for unit in units.values():
        unit.run = lambda s, label=unit.label: ran.append(label)
    rows = gpu_run.execute(gpu_run.Session(out=tmp_path, clock=FakeClock(), work=tmp_path / "w"),
                           list(units.values()))
    assert ran == [] and {r["status"] for r in rows} == {"skipped"}
    assert all(r["reason"].startswith("result already in") for r in rows)


def test_a_record_made_with_other_settings_does_not_count(tmp_path) -> None:
    from attn_lib.study.records import load_record, save_record

    settings = {"preset": "fast", "tta": False, "compile": True}
    record = {"model": "vgg", "seed": 1, "evaluation_version": 1, "test_images": 10_000,
              "train_settings": {"preset": "fast", "tta": False}}  # trained eager
    save_record(tmp_path, record, {"device_name": "GPU", "torch": "2", "date": "2026"})
    assert load_record(tmp_path, "vgg", 1, settings, 10_000, 1) is not None  # compile: speed
    assert load_record(tmp_path, "vgg", 1, dict(settings, epochs=10), 10_000, 1) is None
    assert load_record(tmp_path, "vgg", 1, settings, 2_000, 1) is None
    assert load_record(tmp_path, "vgg", 1, settings, 10_000, 2) is None
    assert load_record(tmp_path, "vgg", 0, settings, 10_000, 1) is None


def test_check_out_names_what_would_not_come_back(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "gpu_run.json").write_text("{}")
    (out / "a" / "b").mkdir(parents=True)
    (out / "a" / "b" / "ok.json").write_text("{}")  # two folders deep: fine
    assert gpu_run.check_out(out) == []
    (out / "a" / "b" / "c").mkdir()
    (out / "a" / "b" / "c" / "deep.json").write_text("{}")
    with open(out / "big.tar", "wb") as f:
        f.truncate(gpu_run.MAX_FILE_BYTES + 1)
    (out / "odd name.json").write_text("{}")
    for i in range(5):
        (out / f"f{i}.json").write_text("{}")
    problems = gpu_run.check_out(out)
    assert any("10 files, at most 8" in p for p in problems)
    assert any(p.startswith("big.tar: 16.0 MiB, over 16 MiB") for p in problems)
    assert any(p.startswith("a/b/c/deep.json: more than 2 folders deep") for p in problems)
    assert any(p.startswith("odd name.json: a name") for p in problems)


def test_add_to_tar_adds_and_replaces(tmp_path) -> None:
    path = tmp_path / "x.tar"
    gpu_run.add_to_tar(path, {"a.json": b"1", "b.pt": b"2"})
    gpu_run.add_to_tar(path, {"a.json": b"3", "c.log": b"4"})
    with tarfile.open(path) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar} == {
            "a.json": b"3", "b.pt": b"2", "c.log": b"4"}
    assert not list(tmp_path.glob("*.tmp"))


def test_budget_must_be_positive(capsys) -> None:
    with pytest.raises(SystemExit):
        gpu_run.parse_args(["--budget", "0"])
    assert "--budget must be a positive number of seconds" in capsys.readouterr().err


def test_without_data_the_command_says_where_to_put_it(tmp_path, capsys) -> None:
    assert gpu_run.main(["--out", str(tmp_path / "out"), "--data-dir",
                         str(tmp_path / "none")]) == 2
    assert "no CIFAR-10 image tree" in capsys.readouterr().err


def test_dry_run_of_every_step_returns_what_a_gpu_machine_would(tmp_path) -> None:
    # The command as a GPU machine runs it, every step tiny on the CPU: a notebook executed
    # with the settings the real one reads, a width-1/16 model trained and stored in float16,
    # one study run through reproduce, one recipe try of bench_train.py.
    probe = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os\nprint(os.environ['ATTN_LIB_PRECISION'], os.environ['ATTN_LIB_SMOKE'])")])
    nbformat.write(probe, tmp_path / "probe.ipynb")
    out = tmp_path / "out"
    env = {"OMP_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code = gpu_run.main(["--dry-run", "--out", str(out), "--notebook",
                             str(tmp_path / "probe.ipynb")])
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    summary = json.loads((out / gpu_run.SUMMARY).read_text())
    assert code == 0, summary
    assert [(u["step"], u["status"]) for u in summary["units"]] == [
        ("notebook", "done"), ("weights", "done"), ("study", "done"), ("speed", "done")]
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_run.json", "notebook03.ipynb", "speed.tar", "study.tar", "weights.tar"]
    assert gpu_run.check_out(out) == []
    executed = nbformat.read(out / "notebook03.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "fp16 1\n"

    with tarfile.open(out / "weights.tar") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar}
    assert sorted(files) == ["vgg-att3-concat-pc.json", "vgg-att3-concat-pc.pt"]
    facts = json.loads(files["vgg-att3-concat-pc.json"])
    assert facts["options"]["width"] == 0.0625 and 0 <= facts["test_acc"] <= 1
    assert facts["selection"].startswith("final weights")
    state = torch.load(__import__("io").BytesIO(files["vgg-att3-concat-pc.pt"]),
                       weights_only=True)
    assert {v.dtype for v in state.values()} == {torch.float16, torch.int64}
    assert not any(k.startswith("_orig_mod") for k in state)

    with tarfile.open(out / "study.tar") as tar:
        (member,) = tar.getmembers()
        record = json.loads(tar.extractfile(member).read())
    assert member.name == "vgg-seed0.json" and record["environment"]["device"] == "cpu"
    assert [f["epsilon_255"] for f in record["fgsm"]] == [1, 2, 4, 8, 64]  # 64: PGD's ~0 check

    with tarfile.open(out / "speed.tar") as tar:
        names = sorted(m.name for m in tar)
        label = gpu_run.SPEED_TRIES[0][0]
        bench = json.loads(tar.extractfile(f"{label}.json").read())
    assert names == [f"{label}.json", f"{label}.log"]
    assert bench["sections"] == ["time-to-target"] and bench["time_to_target"]["recipe"][
        "lr"] == 0.2


def test_speed_estimates_follow_the_sections_a_try_runs() -> None:
    full = gpu_run.speed_estimate([])
    assert full == gpu_run.SPEED_ESTIMATE_S + gpu_run.SPEED_THROUGHPUT_S
    assert gpu_run.speed_estimate(["--no-throughput"]) == gpu_run.SPEED_ESTIMATE_S
    assert gpu_run.speed_estimate(["--no-time-to-target", "--compile-mode", "max-autotune"]) \
        == gpu_run.SPEED_THROUGHPUT_S + gpu_run.SPEED_AUTOTUNE_S
    bench = load_script("bench_train", "benchmarks")
    for _, argv in gpu_run.SPEED_TRIES:  # every try's arguments are bench_train.py's
        bench.parse_args(argv)
