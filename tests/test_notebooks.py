"""The notebooks in notebooks/: paired, clean, linked to the right release, and executable.

* every ``.ipynb`` has a percent-format ``.py`` twin (``jupytext.toml``) with the same cells;
* committed notebooks carry no widget state; 03 carries no outputs or those of a real GPU run,
  05 those of its real mode on a CPU (it trains for minutes on CIFAR-10), and a notebook that
  carries outputs (01, 02, 04: ``make notebooks``; 05) carries those of one clean top-to-bottom
  run;
* each first cell has the title, the Colab badge (pyproject.toml's ``Repository`` URL), the
  paper's link and its equations; each setup cell installs the release of pyproject.toml's
  ``version`` on Colab and stops when pip fails;
* each notebook has exercises, an appendix of solutions and a summary; each solution's prose is
  in a ``<details>`` block and its code cell hidden (Colab's form view, JupyterLab's
  ``source_hidden``), in the .ipynb and in what jupytext builds from the .py;
* notebooks read no environment variable but 03's data folder and precision and 05's data
  folder (smoke mode only through ``attn_lib.smoke_mode()``);
* 01, 02 and 04 run top to bottom in their real mode (shipped weights and sample images, no
  training: 04 runs with ``attn_lib.train`` disabled and must not create a runs folder); 03 runs
  in smoke mode (``ATTN_LIB_SMOKE=1``), and 04 then finds and uses its runs (the hand-off),
  again without training; 05 runs in smoke mode (offline synthetic data instead of
  CIFAR-10). Each runs in a temporary folder, so no ``runs/`` lands in the repository.

To fix a pair that drifted: ``.venv/bin/jupytext --sync notebooks/NAME.py`` (or ``.ipynb``).
To regenerate the committed outputs of 01, 02 and 04: ``make notebooks`` (this file's ``main``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
#: The sequence, in reading order.
NOTEBOOKS = ("01_build_vgg", "02_add_attention", "03_train_on_colab", "04_plot_attention_maps",
             "05_attention_on_your_own_cnn")
#: Notebooks whose real mode is fast on a CPU and needs no download: executed that way by the
#: tests (and `make notebooks`) and committed with the outputs of such a run.
REAL_MODE = ("01_build_vgg", "02_add_attention", "04_plot_attention_maps")
#: Notebooks that train on CIFAR-10: the tests run them in smoke mode (offline, seconds).
SMOKE_MODE = ("03_train_on_colab", "05_attention_on_your_own_cnn")
#: Of those, the ones committed with the outputs of their real mode on a CPU (minutes), made by
#: ``ATTN_LIB_DATA_DIR=<CIFAR-10 folder> python tests/test_notebooks.py NAME``; 03 ships
#: without outputs or with those of a real GPU run.
CPU_REAL_RUN = ("05_attention_on_your_own_cnn",)
#: The notebook that must never train (it uses notebook 03's runs or the shipped weights).
NO_TRAINING = "04_plot_attention_maps"
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^\s)\"'>\]]+")
PAPER_LINK = "https://arxiv.org/abs/1804.02391"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: What a saved widget view shows instead (a widget needs a live kernel).
WIDGET_PLACEHOLDER = "Interactive widget: run this cell in Jupyter or Colab to use it."
#: Seconds one notebook may take. Each takes 10-35 s on two idle CPU cores (2026-11-28), all
#: five runs about two minutes; a busy machine can be ten times slower, so the limit only
#: catches what would take hours: a full-width model trained on the CPU, or smoke mode ignored.
SECONDS_PER_NOTEBOOK = 600
#: Replaces attn_lib.train in the kernel of a notebook that must not train.
TRAINING_GUARD = """\
import attn_lib, attn_lib.training, attn_lib.training.loop
def _training_is_not_allowed(*args, **kwargs):
    raise AssertionError("this notebook must not train: it uses notebook 03's runs or the "
                         "shipped weights")
attn_lib.train = attn_lib.training.train = attn_lib.training.loop.train = \\
    _training_is_not_allowed"""


def pyproject_value(key: str) -> str:
    """A string of pyproject.toml: ``version`` of ``[project]`` or ``Repository`` of
    ``[project.urls]``."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11: both keys are unique in the file
        match = re.search(rf'^{key}\s*=\s*"([^"]+)"', text, re.MULTILINE)
        assert match, f"pyproject.toml has no {key}"
        return match.group(1)
    project = tomllib.loads(text)["project"]
    return project["version"] if key == "version" else project["urls"][key]


def repository_url() -> str:
    """``[project.urls] Repository`` of pyproject.toml, without a trailing slash or ``.git``."""
    return pyproject_value("Repository").rstrip("/").removesuffix(".git")


def github_path() -> str:
    """``OWNER/REPO`` of the repository URL."""
    url = repository_url()
    prefix = "https://github.com/"
    assert url.startswith(prefix), f"the Repository URL {url!r} is not a GitHub URL"
    return url[len(prefix):]


def colab_url(name: str) -> str:
    return f"https://colab.research.google.com/github/{github_path()}/blob/main/notebooks/{name}.ipynb"


def read_ipynb(name: str):
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def cells(notebook) -> list[tuple[str, str]]:
    """(cell type, source) of every cell, trailing whitespace ignored."""
    return [(cell.cell_type, cell.source.rstrip()) for cell in notebook.cells]


def setup_source(name: str) -> str:
    return code_cells(read_ipynb(name))[0].source


def constant(source: str, name: str) -> str:
    match = re.search(rf'^{name} = "([^"]+)"$', source, re.MULTILINE)
    assert match, f"the setup cell must set {name} = \"...\" on a line of its own"
    return match.group(1)


# --- structure ------------------------------------------------------------------------------


def test_the_sequence_is_complete_and_every_notebook_is_paired():
    ipynb = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    scripts = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.py"))
    assert ipynb == sorted(NOTEBOOKS), f"notebooks/ should hold exactly {NOTEBOOKS}, has {ipynb}"
    assert scripts == ipynb, "every notebook needs its percent-format .py twin and vice versa"
    config = (ROOT / "jupytext.toml").read_text(encoding="utf-8")
    assert re.search(r'^formats\s*=\s*"ipynb,py:percent"', config, re.MULTILINE)
    assert sorted(REAL_MODE + SMOKE_MODE) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_and_script_have_the_same_cells(name):
    notebook = read_ipynb(name)
    script = jupytext.read(NOTEBOOK_DIR / f"{name}.py", fmt="py:percent")
    fix = f"run `.venv/bin/jupytext --sync notebooks/{name}.py` (or .ipynb, the one you edited)"
    assert len(notebook.cells) == len(script.cells), f"{name}: the pair has different cells; {fix}"
    for index, (a, b) in enumerate(zip(cells(notebook), cells(script))):
        assert a == b, f"{name}: cell {index} differs between .ipynb and .py; {fix}"


def check_outputs_of_one_clean_run(name: str, notebook) -> None:
    """Outputs, if any, of one top-to-bottom run: counts 1..n in order, no errors, no widgets."""
    code = code_cells(notebook)
    counts = [cell.execution_count for cell in code]
    if all(count is None for count in counts):
        assert not any(cell.outputs for cell in code), f"{name}: outputs without execution"
        return
    assert counts == list(range(1, len(code) + 1)), (
        f"{name}: execution counts {counts} are not one clean top-to-bottom run; regenerate the "
        "outputs with `make notebooks`"
    )
    for index, cell in enumerate(code):
        for output in cell.outputs:
            assert output.output_type != "error", f"{name}: code cell {index} holds an error"
            assert WIDGET_VIEW not in output.get("data", {}), (
                f"{name}: code cell {index} holds a widget view, which cannot render without "
                "its kernel; `make notebooks` replaces it"
            )
            text = output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
            assert "Traceback" not in text, f"{name}: code cell {index} printed a traceback"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean(name):
    notebook = read_ipynb(name)
    nbformat.validate(notebook)
    assert "widgets" not in notebook.metadata, (
        f"{name}.ipynb carries widget state (metadata.widgets), which GitHub cannot render; "
        "strip it (see notebooks/README.md)"
    )
    for index, cell in enumerate(notebook.cells):
        assert "widgets" not in cell.get("metadata", {}), f"{name}: cell {index} has widget state"
    text = "".join(printed(cell) for cell in code_cells(notebook))
    assert "smoke mode: True" not in text, (
        f"{name}: committed with the outputs of a smoke run; commit those of its real mode"
    )
    if name in SMOKE_MODE and name not in CPU_REAL_RUN:  # outputs of a real GPU run, or none
        assert "hardware CPU" not in text, (
            f"{name}: committed with the outputs of a CPU run; clear them, or commit the "
            "outputs of a real GPU run"
        )
    if name in CPU_REAL_RUN:
        assert "smoke mode: False" in text, (
            f"{name}: commit the outputs of its real mode (ATTN_LIB_DATA_DIR=<CIFAR-10 folder> "
            f"python tests/test_notebooks.py {name})"
        )
    check_outputs_of_one_clean_run(name, notebook)
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"


def test_the_clean_run_check_catches_reordered_counts_and_errors():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell("2")]
    for cell, count in zip(notebook.cells, (2, 1)):  # run bottom to top
        cell.execution_count = count
    with pytest.raises(AssertionError, match="one clean top-to-bottom run"):
        check_outputs_of_one_clean_run("x", notebook)
    for cell, count in zip(notebook.cells, (1, 2)):
        cell.execution_count = count
    check_outputs_of_one_clean_run("x", notebook)
    notebook.cells[1].outputs = [nbformat.v4.new_output("error", ename="E", evalue="",
                                                        traceback=[])]
    with pytest.raises(AssertionError, match="holds an error"):
        check_outputs_of_one_clean_run("x", notebook)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_cell_has_title_badge_paper_and_equations(name):
    first = read_ipynb(name).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), (
        f"{name}: the first cell must be markdown starting with the title"
    )
    badge = f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({colab_url(name)})"
    assert badge in first.source, f"{name}: the first cell must hold the badge {badge}"
    assert PAPER_LINK in first.source, f"{name}: the first cell must link the paper"
    equations = re.findall(r"\$\$(.+?)\$\$", first.source, re.DOTALL)
    assert equations, f"{name}: the first cell must show the equations in LaTeX ($$ ... $$)"
    for piece in (r"\langle u,\ l_i + g \rangle", r"\langle l_i,\ g \rangle", r"\exp(c_i)",
                  r"g_a = \sum"):
        assert piece in equations[0], f"{name}: the equations lack {piece}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_setup_cell_installs_the_release_of_pyproject(name):
    import attn_lib

    source = setup_source(name)
    version = pyproject_value("version")
    assert constant(source, "ATTN_LIB_VERSION") == version == attn_lib.__version__, (
        f"{name}: ATTN_LIB_VERSION, pyproject.toml's version and attn_lib.__version__ differ"
    )
    assert constant(source, "REPOSITORY") == repository_url()
    assert 'spec = f"attn-lib @ git+{REPOSITORY}@v{ATTN_LIB_VERSION}"' in source
    assert "IN_COLAB = \"google.colab\" in sys.modules" in source


def run_setup_as_on_colab(name: str, monkeypatch, returncode: int) -> list[list[str]]:
    """Execute the setup cell as Colab would, with pip answering ``returncode``; return the
    commands it ran."""
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, returncode, "pip says hello", "pip error")

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", fake_run)
    # Plain Python but for IPython's line magics (%matplotlib inline), which need a kernel.
    source = re.sub(r"^%.*$", "", setup_source(name), flags=re.MULTILINE)
    assert not re.search(r"^\s*[%!]", source, re.MULTILINE), "only top-level magics, please"
    exec(compile(source, f"{name} setup cell", "exec"), {"__name__": "__main__"})
    return calls


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_setup_cell_stops_when_pip_fails(name, monkeypatch, capsys):
    with pytest.raises(RuntimeError, match="pip could not install"):
        run_setup_as_on_colab(name, monkeypatch, returncode=1)
    assert "pip error" in capsys.readouterr().out, "pip's message must be shown"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_setup_cell_installs_the_tagged_release_on_colab(name, monkeypatch):
    calls = run_setup_as_on_colab(name, monkeypatch, returncode=0)
    version = pyproject_value("version")
    expected = f"attn-lib @ git+{repository_url()}@v{version}"
    assert len(calls) == 1 and calls[0][1:4] == ["-m", "pip", "install"]
    assert calls[0][-1] == expected, f"{name}: installs {calls[0][-1]!r}, not {expected!r}"


def test_every_colab_link_points_at_an_existing_notebook():
    sources = {p.relative_to(ROOT): p.read_text(encoding="utf-8")
               for p in sorted(NOTEBOOK_DIR.glob("*.ipynb"))}
    for extra in ("README.md", "notebooks/README.md"):
        if (ROOT / extra).exists():
            sources[Path(extra)] = (ROOT / extra).read_text(encoding="utf-8")
    prefix = f"https://colab.research.google.com/github/{github_path()}/blob/main/"
    found = 0
    for where, text in sources.items():
        for url in COLAB_LINK.findall(text):
            found += 1
            assert url.startswith(prefix), f"{where}: {url} does not point at {repository_url()}"
            target = ROOT / url[len(prefix):]
            assert target.suffix == ".ipynb" and target.exists(), f"{where}: {url} has no notebook"
    assert found >= len(NOTEBOOKS)


#: The environment variables a notebook may read itself, by notebook: 03's data folder (for
#: Colab users who keep CIFAR on Drive, and a GPU machine without internet) and forced precision
#: (Colab's free T4 has no bf16). Smoke mode is read through attn_lib.smoke_mode() only.
NOTEBOOK_ENV_VARS = {"03_train_on_colab": ("ATTN_LIB_DATA_DIR", "ATTN_LIB_PRECISION"),
                     "05_attention_on_your_own_cnn": ("ATTN_LIB_DATA_DIR",)}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_reads_settings_through_attn_lib(name):
    source = "\n".join(cell.source for cell in code_cells(read_ipynb(name)))
    allowed = NOTEBOOK_ENV_VARS.get(name, ())
    reads = re.findall(r"os\.environ\.get\(\"([A-Z_]+)\"\)", source)
    assert sorted(set(reads)) == sorted(allowed), (
        f"{name} reads {reads} from the environment; allowed: {allowed}"
    )
    stripped = re.sub(r"os\.environ\.get\(\"[A-Z_]+\"\)", "", source)
    for forbidden in ("os.environ", "getenv", "ATTN_LIB_SMOKE"):
        assert forbidden not in stripped, f"{name}: use attn_lib.smoke_mode(), not {forbidden}"
    if name in SMOKE_MODE:
        assert "attn_lib.smoke_mode()" in source
    else:  # the real mode is the only mode
        assert "smoke_mode" not in source, f"{name}: runs in its real mode everywhere"


def test_the_notebook_that_must_not_train_never_calls_train():
    source = "\n".join(cell.source for cell in code_cells(read_ipynb(NO_TRAINING)))
    assert not re.search(r"\btrain\(", source), f"{NO_TRAINING} must not train"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_exercises_solutions_and_summary(name):
    markdown = [cell.source for cell in read_ipynb(name).cells if cell.cell_type == "markdown"]
    headings = [line for text in markdown for line in text.splitlines() if line.startswith("#")]
    exercises = next((t for t in markdown if t.startswith("## Exercises")), "")
    assert len(re.findall(r"^\d\. \*\*", exercises, re.MULTILINE)) >= 2, (
        f"{name}: an '## Exercises' cell with at least two numbered exercises"
    )
    assert "## What you learned" in headings, f"{name}: a '## What you learned' summary"
    assert "## Appendix: solutions" in headings, f"{name}: an '## Appendix: solutions'"
    assert headings.index("## Appendix: solutions") > headings.index("## Exercises")


#: Cell metadata that hides a solution's code until the reader asks for it: Colab shows a
#: ``cellView: form`` cell as its ``# @title`` line, JupyterLab collapses ``source_hidden``
#: input. GitHub's renderer honours neither (nor does nbconvert's HTML), so the prose of each
#: solution sits in a ``<details>`` block, which GitHub and Colab render collapsed.
HIDDEN_CODE = {"cellView": "form", "jupyter": {"source_hidden": True}}


def solution_cells(notebook) -> list:
    """The cells after the ``## Appendix: solutions`` heading."""
    start = next(i for i, cell in enumerate(notebook.cells)
                 if cell.cell_type == "markdown" and "## Appendix: solutions" in cell.source)
    return notebook.cells[start:]


def check_solutions_are_collapsed(name: str, notebook) -> None:
    cells_after = solution_cells(notebook)
    prose = [c for c in cells_after if c.cell_type == "markdown"]
    code = [c for c in cells_after if c.cell_type == "code"]
    blocks = [b for c in prose for b in re.findall(r"<details>(.*?)</details>", c.source,
                                                    re.DOTALL)]
    assert len(blocks) == len(code) >= 2, (
        f"{name}: each solution needs its prose in a <details> block and one code cell; found "
        f"{len(blocks)} <details> blocks and {len(code)} code cells"
    )
    for block in blocks:
        assert "<summary>" in block and "Solution" in block, f"{name}: {block[:60]!r}"
    for cell in code:
        for key, value in HIDDEN_CODE.items():
            assert cell.metadata.get(key) == value, (
                f"{name}: solution code cell {cell.source[:40]!r} lacks {key}={value}; the "
                "pairing filter (jupytext.toml's cell_metadata_filter) must keep it"
            )
        assert cell.source.startswith("# @title Solution"), f"{name}: a '# @title' first line"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_solutions_are_collapsed_in_the_notebook_and_its_script(name):
    check_solutions_are_collapsed(name, read_ipynb(name))
    # The .py is the source of truth: what jupytext builds from it must keep the metadata.
    check_solutions_are_collapsed(name, jupytext.read(NOTEBOOK_DIR / f"{name}.py",
                                                      fmt="py:percent"))


def test_the_collapse_check_catches_a_visible_solution():
    notebook = jupytext.read(NOTEBOOK_DIR / "02_add_attention.py", fmt="py:percent")
    code = [c for c in solution_cells(notebook) if c.cell_type == "code"]
    del code[0].metadata["cellView"]
    with pytest.raises(AssertionError, match="lacks cellView"):
        check_solutions_are_collapsed("x", notebook)
    notebook = jupytext.read(NOTEBOOK_DIR / "02_add_attention.py", fmt="py:percent")
    prose = [c for c in solution_cells(notebook) if c.cell_type == "markdown"]
    prose[1].source = prose[1].source.replace("<details>", "").replace("</details>", "")
    with pytest.raises(AssertionError, match="<details>"):
        check_solutions_are_collapsed("x", notebook)


# --- execution ------------------------------------------------------------------------------


def execute(name: str, workdir: Path, *, smoke: bool, guard: bool = False,
            timeout: int = 600) -> tuple[object, float]:
    """Run a copy of notebook ``name`` in ``workdir``; return the executed notebook and seconds.

    ``smoke`` sets ``ATTN_LIB_SMOKE=1`` for the kernel (and removes it otherwise); ``guard``
    runs :data:`TRAINING_GUARD` in the kernel first (that cell is not in the returned
    notebook). The kernel imports this checkout's attn_lib.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    for cell in code_cells(notebook):  # start from a clean copy even if outputs are committed
        cell.outputs, cell.execution_count = [], None
    if guard:
        notebook.cells.insert(0, nbformat.v4.new_code_cell(TRAINING_GUARD))
    env = dict(os.environ)
    env.pop("ATTN_LIB_SMOKE", None)
    if smoke:
        env["ATTN_LIB_SMOKE"] = "1"
    # The kernel is a child process: it sees these. matplotlib's inline backend renders figures
    # to PNG outputs without a display, as a notebook front end would.
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    # One OpenMP thread per kernel (unless the caller chose): the models are tiny, and on a
    # busy machine two spinning OpenMP threads made their training 3-6x slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    # A kernel can take more than nbclient's default minute to start on a busy machine.
    client = NotebookClient(notebook, timeout=timeout, startup_timeout=300,
                            kernel_name="python3", resources={"metadata": {"path": str(workdir)}},
                            record_timing=False, store_widget_state=False)
    start = time.perf_counter()
    try:
        client.execute(env=env)
    except CellExecutionError as error:  # the message holds the cell and the traceback
        nbformat.write(notebook, workdir / f"{name}.failed.ipynb")
        pytest.fail(f"{name} failed ({'smoke' if smoke else 'real'} mode):\n{error}",
                    pytrace=False)
    seconds = time.perf_counter() - start
    if guard:
        del notebook.cells[0]
    return notebook, seconds


def printed(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def check_executed(name: str, notebook, seconds: float, workdir: Path) -> None:
    code = code_cells(notebook)
    assert all(cell.execution_count for cell in code), f"{name}: not every cell ran"
    for index, cell in enumerate(code):
        for output in cell.outputs:
            assert output.output_type != "error", f"{name}: code cell {index} raised"
            data = output.get("data", {})
            # A figure displayed without the notebook's image formatter shows up as its repr.
            assert not (str(data.get("text/plain", "")).startswith(("<Figure", "Figure("))
                        and "image/png" not in data), (
                f"{name}: code cell {index} displayed a figure as text, not as an image"
            )
    assert not list(NOTEBOOK_DIR.glob("runs")), "a notebook wrote runs/ into the repository"
    assert seconds < SECONDS_PER_NOTEBOOK, (
        f"{name} took {seconds:.0f} s; each notebook must stay under {SECONDS_PER_NOTEBOOK} s "
        "on two CPU cores"
    )


def runs_snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", [n for n in REAL_MODE if n != NO_TRAINING])
def test_notebook_runs_top_to_bottom_in_real_mode(name, tmp_path):
    notebook, seconds = execute(name, tmp_path, smoke=False)
    print(f"{name}: executed in real mode in {seconds:.1f} s")
    check_executed(name, notebook, seconds, tmp_path)
    assert "smoke mode" not in printed(code_cells(notebook)[0])


def test_notebook_04_alone_uses_the_shipped_weights_and_trains_nothing(tmp_path):
    notebook, seconds = execute(NO_TRAINING, tmp_path, smoke=False, guard=True)
    print(f"{NO_TRAINING}: executed alone in {seconds:.1f} s")
    check_executed(NO_TRAINING, notebook, seconds, tmp_path)
    text = "".join(printed(cell) for cell in code_cells(notebook))
    assert "using the shipped weights" in text
    assert not (tmp_path / "runs").exists(), "notebook 04 alone must not create a runs folder"


@pytest.fixture(scope="module")
def notebook_03_runs(tmp_path_factory):
    """Notebook 03 executed once in smoke mode: (its folder, the executed notebook, seconds)."""
    workdir = tmp_path_factory.mktemp("notebook03")
    notebook, seconds = execute("03_train_on_colab", workdir, smoke=True)
    return workdir, notebook, seconds


def test_notebook_03_runs_top_to_bottom_in_smoke_mode(notebook_03_runs):
    workdir, notebook, seconds = notebook_03_runs
    print(f"03_train_on_colab: executed in smoke mode in {seconds:.1f} s")
    check_executed("03_train_on_colab", notebook, seconds, workdir)
    assert "smoke mode: True" in printed(code_cells(notebook)[0]), (
        "the kernel did not see ATTN_LIB_SMOKE=1"
    )
    folders = sorted(p.name for p in (workdir / "runs").iterdir())
    assert folders == ["vgg-att3-concat-pc-synthetic-smoke-2ep", "vgg-noatt-synthetic-smoke-2ep",
                       "vgg-synthetic-smoke-2ep"], (
        "the run folders must name model, data set, recipe and epoch budget"
    )


def test_notebook_04_uses_the_runs_of_notebook_03_and_trains_nothing(notebook_03_runs):
    workdir, _, _ = notebook_03_runs
    before = runs_snapshot(workdir / "runs")
    notebook, seconds = execute(NO_TRAINING, workdir, smoke=True, guard=True)
    print(f"{NO_TRAINING}: executed after 03 in {seconds:.1f} s")
    check_executed(NO_TRAINING, notebook, seconds, workdir)
    text = "".join(printed(cell) for cell in code_cells(notebook))
    assert "using notebook 03's runs" in text and "trained on synthetic" in text
    assert runs_snapshot(workdir / "runs") == before, "notebook 04 changed 03's run folders"


def test_notebook_05_runs_top_to_bottom_in_smoke_mode(tmp_path):
    name = "05_attention_on_your_own_cnn"
    notebook, seconds = execute(name, tmp_path, smoke=True)
    print(f"{name}: executed in smoke mode in {seconds:.1f} s")
    check_executed(name, notebook, seconds, tmp_path)
    assert "smoke mode: True" in printed(code_cells(notebook)[0])
    assert (tmp_path / "runs" / "resnet10-att2-synthetic" / "last.pt").is_file()


# --- make notebooks -------------------------------------------------------------------------


def replace_widget_views(notebook) -> int:
    """Replace every saved widget view by a line of text (a widget needs its kernel); return how
    many were replaced."""
    replaced = 0
    for cell in code_cells(notebook):
        for output in cell.outputs:
            if WIDGET_VIEW in output.get("data", {}):
                output["data"] = {"text/plain": WIDGET_PLACEHOLDER}
                replaced += 1
    return replaced


def main(names: list[str]) -> int:
    """Execute ``names`` (default: the real-mode notebooks) in their real mode in a temporary
    folder and write them back with their outputs (``make notebooks``). The notebooks of
    :data:`CPU_REAL_RUN` train for minutes on CIFAR-10: name them explicitly, with
    ``ATTN_LIB_DATA_DIR`` set or a connection for torchvision's download."""
    for name in names or REAL_MODE:
        if name not in REAL_MODE + CPU_REAL_RUN:
            print(f"{name} is not run in real mode here (it trains on a GPU); it ships without "
                  "outputs")
            return 1
        with tempfile.TemporaryDirectory() as folder:
            # a notebook that trains for minutes may take longer than a cell's usual limit
            notebook, seconds = execute(name, Path(folder), smoke=False,
                                        timeout=3600 if name in CPU_REAL_RUN else 600)
        check_executed(name, notebook, 0.0, Path(folder))
        widgets = replace_widget_views(notebook)
        notebook.metadata.pop("widgets", None)
        check_outputs_of_one_clean_run(name, notebook)
        nbformat.write(notebook, NOTEBOOK_DIR / f"{name}.ipynb")
        print(f"{name}: executed in {seconds:.0f} s, {widgets} widget view(s) replaced")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
