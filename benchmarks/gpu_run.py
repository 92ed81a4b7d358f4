"""The GPU command: what a learner sees first, then the study, then the speed record.

    python benchmarks/gpu_run.py --budget 540        # on a CUDA machine (gpu_run.sh wraps it)
    python benchmarks/gpu_run.py --dry-run           # every step, tiny, on the CPU

GPU time comes in pieces (a fresh machine, ~10 minutes a command, only ``$OUT`` comes back), so
the command works down a list of units in priority order and, before each, asks two questions:
is its result in the repository already (then it is skipped, so the next machine continues
where the last one stopped), and does its time estimate fit in what is left of ``--budget``
(else it is skipped and reported). Each unit writes its result under ``$OUT`` as soon as it
finishes, so a command cut short loses only the unit it was in:

1. ``notebook``: notebook 03 as a learner runs it, real mode, fp16 autocast forced (Colab's T4
   has no bf16), data from ``.data/`` -> ``notebook03.ipynb``;
2. ``weights``: ``vgg``, ``vgg-noatt``, ``vgg-att3-concat-pc``, ``vgg-att3-concat-dp`` at width
   1/4, final weights (never chosen on the test set) as float16 with their facts ->
   ``weights.tar`` (shipped by ``tools/merge_gpu_results.py`` as ``cifar10-gpu``);
3. ``study``: ``reproduce --scale gpu`` one run at a time, seed-major -> ``study.tar``
   (the runs' records; the checkpoints never leave the machine);
4. ``speed``: recipe tries of ``benchmarks/bench_train.py`` not yet in ``TUNING.md`` ->
   ``speed.tar``.

``gpu_run.json`` (rewritten after every unit) says what ran, what was skipped and why, and the
seconds each unit took. Everything under ``$OUT`` stays within what the machine returns:
at most :data:`MAX_FILES` files of :data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH` folders deep.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: What comes back from the GPU machine: files, bytes per file, folder depth.
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
MAX_DEPTH = 2
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
#: A 10-minute command less a minute for the machine's own start-up and the data extraction.
DEFAULT_BUDGET_S = 540
SUMMARY = "gpu_run.json"
NOTEBOOK = "notebooks/03_train_on_colab.ipynb"
#: Where the merge tool puts each step's result in the repository (the skip test looks there).
NOTEBOOK_RESULT = "results/notebook03-gpu/03_train_on_colab.ipynb"
STUDY_RESULTS = "results/cifar10-gpu"
TUNING_TABLE = "benchmarks/TUNING.md"

#: The learner-facing models, at a width whose four float16 files stay <= 10 MB together.
WEIGHTS_MODELS = ("vgg", "vgg-noatt", "vgg-att3-concat-pc", "vgg-att3-concat-dp")
WEIGHTS_NAME = "cifar10-gpu"
WEIGHTS_RECIPE = dict(preset="fast", width=0.25, epochs=40, compile=True, seed=0)
#: The paper's five models and the attention backbone without attention.
STUDY_MODELS = ("vgg", "vgg-noatt", "vgg-att2-concat-pc", "vgg-att3-concat-pc",
                "vgg-att3-concat-dp", "vgg-att3-indep-pc")
STUDY_SEEDS = (0, 1, 2)
#: The study evaluates on the whole CIFAR-10 test split.
CIFAR10_TEST_IMAGES = 10_000
#: Recipe tries of the speed record, in order: (label, bench_train.py arguments). The fast
#: preset fits the training set (100 %) and collapsed to 12.7 % test accuracy at epoch 3 at
#: lr 0.4 (results/bench-h200): a lower peak, a longer warm-up, EMA and more smoothing first.
SPEED_TRIES = (
    ("lr0.2-ema0.999", ["--lr", "0.2", "--ema-decay", "0.999"]),
    ("throughput-max-autotune", ["--no-time-to-target", "--compile-mode", "max-autotune"]),
    ("lr0.2-warmup0.25-ls0.2", ["--no-throughput", "--lr", "0.2", "--warmup", "0.25",
                                "--label-smoothing", "0.2"]),
    ("bs1024-lr0.4-ema0.999", ["--no-throughput", "--batch-size", "1024", "--ema-decay",
                               "0.999"]),
    ("60ep-lr0.2-ema0.999", ["--no-throughput", "--epochs", "60", "--lr", "0.2",
                             "--ema-decay", "0.999"]),
)

# Seconds each unit is expected to take on one H100/H200, from the H200 runs of 2026-11-28
# (results/bench-h200, results/cifar10-gpu) where one exists, else a stated guess; the margin
# covers compilation and the evaluation.
#: Notebook 03: two 10-epoch full-width runs (eager, ~13,000 images/s for the attention model,
#: ~66,000 for vgg) with their evaluations, the kernel's start and the JPEG decoding.
NOTEBOOK_ESTIMATE_S = 180
#: A width-1/4 run of 40 epochs, compiled (not yet measured: a guess from the full-width
#: figures, 1/16 of the operations), and its evaluation.
WEIGHTS_ESTIMATE_S = 90
#: A full-width study run, compiled: vgg took 61 s eager and vgg-att3-concat-pc 229 s eager
#: (190 s training) with the evaluation; compiled training is ~1.4x faster, compilation adds.
STUDY_ESTIMATE_S = {"vgg": 90}
STUDY_DEFAULT_ESTIMATE_S = 240
#: A bench_train.py try: 50 epochs took 161 s of wall time (137 s training); the throughput
#: sections (eager, compiled, reference loop) add about a minute.
SPEED_ESTIMATE_S = 200
SPEED_THROUGHPUT_S = 80
#: max-autotune benchmarks kernel candidates while compiling: minutes (a guess, not measured).
SPEED_AUTOTUNE_S = 150
#: Dry run (CPU, tiny): a few seconds per unit.
DRY_ESTIMATE_S = 5


@dataclass
class Unit:
    """One piece of work: skipped when ``existing`` says its result is in the repository."""

    step: str
    label: str
    estimate_s: float
    run: Callable[[Session], None]
    existing: str | None = None  #: where its result already is (repository path)


@dataclass
class Session:
    """One command's settings, clock and report."""

    out: Path
    repo: Path = REPO
    budget_s: float = DEFAULT_BUDGET_S
    dry_run: bool = False
    data_dir: Path | None = None
    notebook: Path | None = None
    #: scratch space on the machine (run folders, checkpoints): never under ``out``
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gpu-run-")))
    clock: Callable[[], float] = time.monotonic
    started: float = 0.0
    units: list[dict[str, Any]] = field(default_factory=list)

    def left(self) -> float:
        return self.budget_s - (self.clock() - self.started)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, metavar="SECONDS",
                   help="stop starting units whose estimate does not fit in what is left")
    p.add_argument("--out", type=Path, default=None, help="default: $OUT, else runs/gpu-run")
    p.add_argument("--data-dir", type=Path, default=REPO / ".data",
                   help="CIFAR-10 as an image tree (train/, test/)")
    p.add_argument("--steps", nargs="+", choices=("notebook", "weights", "study", "speed"),
                   default=("notebook", "weights", "study", "speed"), help="steps to consider")
    p.add_argument("--notebook", type=Path, default=REPO / NOTEBOOK,
                   help="the notebook of the notebook step")
    p.add_argument("--dry-run", action="store_true",
                   help="every step tiny on the CPU, synthetic data (checks the command)")
    args = p.parse_args(argv)
    if args.budget <= 0:
        p.error(f"--budget must be a positive number of seconds, got {args.budget:g}")
    return args


# --- the steps ------------------------------------------------------------------------------


def notebook_units(s: Session) -> list[Unit]:
    done = NOTEBOOK_RESULT if (s.repo / NOTEBOOK_RESULT).is_file() else None
    estimate = DRY_ESTIMATE_S if s.dry_run else NOTEBOOK_ESTIMATE_S
    label = "notebook 03, smoke mode (dry run)" if s.dry_run else "notebook 03, real mode, fp16"
    return [Unit("notebook", label, estimate, run_notebook, done)]


def notebook_environment(s: Session) -> dict[str, str]:
    """What the kernel sees: the data folder and fp16 autocast (the T4 of Colab has no bf16);
    a dry run adds smoke mode (tiny, synthetic)."""
    env = dict(os.environ, ATTN_LIB_PRECISION="fp16",
               PYTHONPATH=os.pathsep.join(filter(None, (str(s.repo),
                                                        os.environ.get("PYTHONPATH")))),
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    if s.data_dir is not None:
        env["ATTN_LIB_DATA_DIR"] = str(s.data_dir)
    env.pop("ATTN_LIB_SMOKE", None)
    if s.dry_run:
        env["ATTN_LIB_SMOKE"] = "1"
    return env


def run_notebook(s: Session) -> None:
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as exc:
        raise RuntimeError(f"{exc.name} is missing: pip install nbclient nbformat ipykernel "
                           "(offline: put their wheels in .whl/, see docs/GPU.md)") from None
    source = s.notebook or s.repo / NOTEBOOK
    notebook = nbformat.read(source, as_version=4)
    for cell in notebook.cells:  # start from a clean copy
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    with tempfile.TemporaryDirectory() as work:  # the notebook's runs/ stay on the machine
        client = NotebookClient(notebook, timeout=1800, startup_timeout=300,
                                kernel_name="python3", resources={"metadata": {"path": work}})
        try:
            client.execute(env=notebook_environment(s))
        finally:  # a failed notebook comes back too, with the error in its cell
            nbformat.write(notebook, s.out / "notebook03.ipynb")


def weights_units(s: Session) -> list[Unit]:
    from attn_lib.models.weights import list_weights

    shipped = {e["model"] for e in list_weights() if e["weights"] == WEIGHTS_NAME}
    models = ("vgg-att3-concat-pc",) if s.dry_run else WEIGHTS_MODELS
    estimate = DRY_ESTIMATE_S if s.dry_run else WEIGHTS_ESTIMATE_S
    return [Unit("weights", m, estimate, lambda s, m=m: train_weights(s, m),
                 f"attn_lib/models/pretrained ({m} {WEIGHTS_NAME})" if m in shipped else None)
            for m in models]


def train_weights(s: Session, model: str) -> None:
    """Train one model with the weights recipe; add its final float16 state dict and facts to
    weights.tar (the merge tool ships them; the sample-image accuracy is measured there)."""
    import torch

    import attn_lib
    from attn_lib._device import resolve_device
    from attn_lib.checkpoint import LAST, load_checkpoint, model_from_checkpoint
    from attn_lib.data import load_dataset
    from attn_lib.models.weights import state_dict_bytes

    kw = dict(WEIGHTS_RECIPE)
    dataset, data_dir, device = "cifar10", s.data_dir, None
    if s.dry_run:
        dataset, data_dir, device = "synthetic", None, "cpu"
        kw.update(width=0.0625, epochs=1, limit_train=64, limit_test=32, batch_size=32,
                  compile=False)
    run_dir = s.work / f"weights-{model}"
    shutil.rmtree(run_dir, ignore_errors=True)
    result = attn_lib.train(model, dataset, data_dir=data_dir, out_dir=run_dir,
                            progress=not s.dry_run, save_attention=False, device=device, **kw)
    config = json.loads((result.run_dir / "config.json").read_text())
    # The final weights (never the best epoch: that would choose on the test set), rebuilt
    # from last.pt as a plain module (not the compiled wrapper), with the data statistics.
    ckpt = load_checkpoint(result.run_dir / LAST)
    trained, data = model_from_checkpoint(ckpt, result.run_dir / LAST), ckpt["data"]
    test_set = load_dataset(dataset, "test", data_dir=data_dir, limit=kw.get("limit_test"))
    metrics = attn_lib.evaluate(trained.to(resolve_device(device)), test_set, tta=True)
    facts = {"model": model, "options": trained.options, "dataset": dataset,
             "classes": list(data["classes"]), "mean": [float(m) for m in data["mean"]],
             "std": [float(v) for v in data["std"]], "image_size": int(data["image_size"]),
             "test_acc": metrics["acc"], "test_acc_tta": metrics["acc_tta"],
             "epochs": len(result.history), "seed": kw["seed"], "recipe": config["recipe"],
             "selection": "final weights (not chosen on the test set)",
             "command": "python benchmarks/gpu_run.py (weights step): attn_lib.train("
                        + ", ".join([repr(model), repr(dataset)]
                                    + [f"{k}={v!r}" for k, v in kw.items()]) + ")",
             "hardware": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "data": f"{dataset} ({metrics['n']} test images)"}
    add_to_tar(s.out / "weights.tar", {
        f"{model}.pt": state_dict_bytes(trained, torch.float16),
        f"{model}.json": (json.dumps(facts, indent=1) + "\n").encode()})


def study_plan(s: Session) -> dict[str, Any]:
    """The study's scale, data and runs (the dry run: the smoke scale, one epoch)."""
    if s.dry_run:
        return dict(scale="smoke", dataset="synthetic", models=("vgg",), seeds=(0,), epochs=1,
                    results="results/synthetic-smoke")
    return dict(scale="gpu", dataset="cifar10", models=STUDY_MODELS, seeds=STUDY_SEEDS,
                epochs=None, results=STUDY_RESULTS)


def study_units(s: Session) -> list[Unit]:
    from attn_lib.study.records import load_record
    from attn_lib.study.runner import EVALUATION_VERSION
    from attn_lib.study.scales import get_scale

    plan = study_plan(s)
    scale = get_scale(plan["scale"])
    train_kw = dict(scale.train, **({"epochs": plan["epochs"]} if plan["epochs"] else {}))
    test_images = scale.limit_test or CIFAR10_TEST_IMAGES
    units = []
    for seed in plan["seeds"]:  # seed-major, as reproduce: every model's seed 0 first
        for model in plan["models"]:
            done = load_record(s.repo / plan["results"], model, seed, train_kw, test_images,
                               EVALUATION_VERSION)
            estimate = DRY_ESTIMATE_S if s.dry_run else STUDY_ESTIMATE_S.get(
                model, STUDY_DEFAULT_ESTIMATE_S)
            units.append(Unit("study", f"{model} seed {seed}", estimate,
                              lambda s, m=model, sd=seed: study_run(s, m, sd),
                              f"{plan['results']}/records" if done else None))
    return units


def study_run(s: Session, model: str, seed: int) -> None:
    """One run of the study through ``reproduce`` (so its record is exactly what reproduce
    writes); the record goes into study.tar."""
    from attn_lib.study import reproduce
    from attn_lib.study.records import record_path

    plan = study_plan(s)
    result = reproduce(plan["dataset"], plan["scale"], models=[model], seeds=[seed],
                       data_dir=None if s.dry_run else s.data_dir,
                       out_dir=s.work / "study-results", runs_dir=s.work / "study-runs",
                       epochs=plan["epochs"], progress=not s.dry_run,
                       figures=False, device="cpu" if s.dry_run else None)
    path = record_path(result.out_dir, model, seed)
    add_to_tar(s.out / "study.tar", {path.name: path.read_bytes()})


def tried_labels(repo: Path) -> set[str]:
    """The labels of the tries listed in the tuning table."""
    path = repo / TUNING_TABLE
    if not path.is_file():
        return set()
    cells = [line.split("|")[1].strip() for line in path.read_text().splitlines()
             if line.startswith("|")]
    return {c.strip("`") for c in cells if c.startswith("`")}  # the header is not a label


def speed_units(s: Session) -> list[Unit]:
    tried = tried_labels(s.repo)
    units = []
    # The dry run: the first try without the throughput sections (tests/test_benchmark.py
    # dry-runs those).
    tries = [(SPEED_TRIES[0][0], [*SPEED_TRIES[0][1], "--no-throughput"])] if s.dry_run \
        else SPEED_TRIES
    for label, argv in tries:
        estimate = DRY_ESTIMATE_S if s.dry_run else speed_estimate(argv)
        units.append(Unit("speed", label, estimate,
                          lambda s, label=label, argv=argv: speed_try(s, label, argv),
                          TUNING_TABLE if label in tried else None))
    return units


def speed_estimate(argv: list[str]) -> float:
    """Seconds of one bench_train.py try, from the sections it runs."""
    return ((0 if "--no-time-to-target" in argv else SPEED_ESTIMATE_S)
            + (0 if "--no-throughput" in argv else SPEED_THROUGHPUT_S)
            + (SPEED_AUTOTUNE_S if "max-autotune" in argv else 0))


def speed_try(s: Session, label: str, argv: list[str]) -> None:
    """One recipe try of bench_train.py; its JSON and printed log go into speed.tar."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_train",
                                                  s.repo / "benchmarks" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with tempfile.TemporaryDirectory() as work:
        record = Path(work) / f"{label}.json"
        log = io.StringIO()
        extra = (["--dry-run", "--epochs", "1"] if s.dry_run
                 else ["--data-dir", str(s.data_dir)])
        try:
            with contextlib.redirect_stdout(log):
                code = bench.main([*argv, *extra, "--json", str(record)])
        finally:  # a try cut short still returns the sections it measured
            files = {f"{label}.log": log.getvalue().encode()}
            if record.is_file():
                files[f"{label}.json"] = record.read_bytes()
            add_to_tar(s.out / "speed.tar", files)
        print(log.getvalue(), end="")
        if code:
            raise RuntimeError(f"bench_train.py exited with {code}")


STEPS: dict[str, Callable[[Session], list[Unit]]] = {
    "notebook": notebook_units, "weights": weights_units, "study": study_units,
    "speed": speed_units}


# --- running and packing ----------------------------------------------------------------------


def machine() -> str:
    """The GPU (or CPU) and torch version, for the records."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (cuda), torch {torch.__version__}"
    return f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}"


def add_to_tar(path: Path, files: dict[str, bytes]) -> None:
    """Add (or replace) files in an uncompressed tar, atomically: a command killed while
    writing leaves the previous archive."""
    members: dict[str, bytes] = {}
    if path.is_file():
        with tarfile.open(path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    members.update(files)
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)


def check_out(out: Path) -> list[str]:
    """What would not come back from ``out``: too many files, too large, too deep, odd names."""
    problems = []
    files = [p for p in out.rglob("*") if p.is_file() or p.is_symlink()]
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files, at most {MAX_FILES} come back")
    for p in files:
        rel = p.relative_to(out)
        if p.is_symlink():
            problems.append(f"{rel}: a link")
        elif p.stat().st_size > MAX_FILE_BYTES:
            problems.append(f"{rel}: {p.stat().st_size / 2**20:.1f} MiB, over "
                            f"{MAX_FILE_BYTES // 2**20} MiB")
        if len(rel.parts) - 1 > MAX_DEPTH:
            problems.append(f"{rel}: more than {MAX_DEPTH} folders deep")
        if not all(SAFE_NAME.match(part) for part in rel.parts):
            problems.append(f"{rel}: a name with characters other than letters, digits, ._-")
    return problems


def save_summary(s: Session) -> None:
    summary = {"machine": machine(), "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "budget_s": s.budget_s, "dry_run": s.dry_run, "units": s.units}
    tmp = s.out / f".{SUMMARY}.tmp"
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, s.out / SUMMARY)


def execute(s: Session, units: list[Unit]) -> list[dict[str, Any]]:
    """Run the units in order: skip those done in the repository and those whose estimate
    does not fit in what is left; a failed unit is reported and the next one starts."""
    s.started = s.clock()
    for unit in units:
        row = {"step": unit.step, "unit": unit.label, "estimate_s": unit.estimate_s}
        left = s.left()
        if unit.existing:
            row.update(status="skipped", reason=f"result already in {unit.existing}")
        elif unit.estimate_s > left:
            row.update(status="skipped", reason=f"would not fit: needs ~{unit.estimate_s:.0f}"
                                                f" s, {max(left, 0):.0f} s left")
        else:
            print(f"\n=== {unit.step}: {unit.label} (~{unit.estimate_s:.0f} s, "
                  f"{left:.0f} s left)", flush=True)
            start = s.clock()
            try:
                unit.run(s)
                row["status"] = "done"
            except Exception as exc:  # noqa: BLE001 -- one unit's failure must not stop the rest
                row.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000],
                           traceback=traceback.format_exc()[-4000:])
                print(row["traceback"], file=sys.stderr)
            row["seconds"] = round(s.clock() - start, 1)
        s.units.append(row)
        print(f"--- {unit.step}: {unit.label}: {row['status']}"
              + (f" ({row['reason']})" if "reason" in row else "")
              + (f" in {row['seconds']} s" if "seconds" in row else ""), flush=True)
        save_summary(s)
    return s.units


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path(os.environ.get("OUT") or REPO / "runs" / "gpu-run")
    out.mkdir(parents=True, exist_ok=True)
    s = Session(out=out.resolve(), budget_s=args.budget, dry_run=args.dry_run,
                data_dir=None if args.dry_run else args.data_dir.resolve(),
                notebook=args.notebook)
    if not args.dry_run and not (s.data_dir / "train").is_dir():
        print(f"error: no CIFAR-10 image tree in {s.data_dir} (train/<class>/*.jpg); extract "
              f"{s.data_dir / 'cifar10-jpeg75.tar.gz'} there (gpu_run.sh does)", file=sys.stderr)
        return 2
    units = [u for step in args.steps for u in STEPS[step](s)]
    execute(s, units)
    shutil.rmtree(s.work, ignore_errors=True)
    problems = check_out(out)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    counts = {k: sum(u["status"] == k for u in s.units) for k in ("done", "skipped", "failed")}
    print(f"\n{counts['done']} units done, {counts['skipped']} skipped, {counts['failed']} "
          f"failed; see {out / SUMMARY}")
    return 1 if counts["failed"] or problems else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
