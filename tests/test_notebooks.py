"""The notebooks in notebooks/: paired, clean, linked to the right repository, and executable.

* every ``.ipynb`` has a percent-format ``.py`` twin (``jupytext.toml``) with the same cells;
* committed notebooks carry no outputs and no widget state (GitHub cannot render stale state);
* the Colab badge and the ``%pip`` install cell use pyproject.toml's ``Repository`` URL, and every
  Colab link (notebooks and README) points at a notebook that exists;
* each notebook runs top to bottom in a fresh kernel in smoke mode (``ATTN_LIB_SMOKE=1``), in a
  temporary copy so its ``runs/`` outputs never land in the repository.

To fix a pair that drifted: ``.venv/bin/jupytext --sync notebooks/NAME.ipynb`` (or ``NAME.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
#: The sequence, in reading order.
NOTEBOOKS = ("01_build_vgg", "02_add_attention", "03_train_on_colab", "04_plot_attention_maps")
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^\s)\"'>\]]+")
#: Seconds one notebook may take in smoke mode: no single notebook may use up the 5-minute budget
#: that all four share on two CPU cores. A notebook that ignored smoke mode would train a
#: full-width model on the CPU and take hours, so this catches that even on a busy machine, where
#: the smoke runs themselves can take several times longer than on an idle one.
SMOKE_SECONDS_PER_NOTEBOOK = 300


def repository_url() -> str:
    """``[project.urls] Repository`` of pyproject.toml, without a trailing slash or ``.git``."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        match = re.search(r'^Repository\s*=\s*"([^"]+)"', text, re.MULTILINE)
        assert match, "pyproject.toml has no [project.urls] Repository"
        url = match.group(1)
    else:
        url = tomllib.loads(text)["project"]["urls"]["Repository"]
    return url.rstrip("/").removesuffix(".git")


def github_path() -> str:
    """``OWNER/REPO`` of the repository URL."""
    url = repository_url()
    prefix = "https://github.com/"
    assert url.startswith(prefix), f"the Repository URL {url!r} is not a GitHub URL"
    return url[len(prefix):]


def colab_url(name: str) -> str:
    return f"https://colab.research.google.com/github/{github_path()}/blob/main/notebooks/{name}.ipynb"


def install_line() -> str:
    return f'%pip install -q "attn-lib @ git+{repository_url()}"'


def read_ipynb(name: str):
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def cells(notebook) -> list[tuple[str, str]]:
    """(cell type, source) of every cell, trailing whitespace ignored."""
    return [(cell.cell_type, cell.source.rstrip()) for cell in notebook.cells]


def test_the_sequence_is_complete_and_every_notebook_is_paired():
    ipynb = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    scripts = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.py"))
    assert ipynb == sorted(NOTEBOOKS), f"notebooks/ should hold exactly {NOTEBOOKS}, has {ipynb}"
    assert scripts == ipynb, "every notebook needs its percent-format .py twin and vice versa"
    config = (ROOT / "jupytext.toml").read_text(encoding="utf-8")
    assert re.search(r'^formats\s*=\s*"ipynb,py:percent"', config, re.MULTILINE)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_and_script_have_the_same_cells(name):
    notebook = read_ipynb(name)
    script = jupytext.read(NOTEBOOK_DIR / f"{name}.py", fmt="py:percent")
    fix = f"run `.venv/bin/jupytext --sync notebooks/{name}.ipynb` (or .py, the one you edited)"
    assert len(notebook.cells) == len(script.cells), f"{name}: the pair has different cells; {fix}"
    for index, (a, b) in enumerate(zip(cells(notebook), cells(script))):
        assert a == b, f"{name}: cell {index} differs between .ipynb and .py; {fix}"


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
        if cell.cell_type == "code":
            # Policy (notebooks/README.md): committed notebooks carry no outputs.
            assert not cell.outputs and cell.execution_count is None, (
                f"{name}: cell {index} has outputs; clear them before committing"
            )
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_title_badge_and_install_cell(name):
    notebook = read_ipynb(name)
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), (
        f"{name}: the first cell must be markdown starting with the title"
    )
    badge = f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({colab_url(name)})"
    assert badge in first.source, f"{name}: the first cell must hold the badge {badge}"
    setup = next(cell for cell in notebook.cells if cell.cell_type == "code")
    lines = setup.source.splitlines()
    install = [i for i, line in enumerate(lines) if line.strip() == install_line()]
    assert install, f"{name}: the first code cell must install with {install_line()}"
    guard = lines[install[0] - 1].strip()
    guarded = guard == 'if "google.colab" in sys.modules:' or (
        guard == "if IN_COLAB:" and 'IN_COLAB = "google.colab" in sys.modules' in setup.source
    )
    assert guarded and lines[install[0]].startswith("    "), (
        f"{name}: the install line must sit in an `if \"google.colab\" in sys.modules` block"
    )


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


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_reads_settings_through_attn_lib(name):
    source = "\n".join(cell.source for cell in read_ipynb(name).cells if cell.cell_type == "code")
    for forbidden in ("os.environ", "getenv"):
        assert forbidden not in source, f"{name}: use attn_lib.smoke_mode(), not {forbidden}"
    assert "attn_lib.smoke_mode()" in source


def execute(name: str, workdir: Path) -> float:
    """Run a copy of notebook ``name`` in ``workdir`` in smoke mode; return the seconds taken."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    copy = workdir / f"{name}.ipynb"
    shutil.copy(NOTEBOOK_DIR / f"{name}.ipynb", copy)
    notebook = nbformat.read(copy, as_version=4)
    env = dict(os.environ)
    # The kernel is a child process: it sees these. matplotlib's inline backend renders figures
    # to PNG outputs without a display, as a notebook front end would.
    env.update(ATTN_LIB_SMOKE="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    # One OpenMP thread per kernel (unless the caller chose): the smoke models are tiny, and on a
    # busy machine two spinning OpenMP threads made their training 3-6x slower (the four
    # notebooks took about 6 minutes instead of 1.5 at a load average of 9 on two cores).
    env.setdefault("OMP_NUM_THREADS", "1")
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    try:
        client.execute(env=env)
    except CellExecutionError as error:  # the message holds the cell and the traceback
        pytest.fail(f"{name} failed in smoke mode:\n{error}", pytrace=False)
    finally:
        nbformat.write(notebook, copy)  # executed copy, for inspection after a failure
    return time.perf_counter() - start


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom_in_smoke_mode(name, tmp_path):
    seconds = execute(name, tmp_path)
    print(f"{name}: executed in smoke mode in {seconds:.1f} s")
    notebook = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), f"{name}: not every cell ran"
    setup_text = "".join(o.get("text", "") for o in code[0].outputs if o.output_type == "stream")
    assert "smoke mode: True" in setup_text, f"{name}: the kernel did not see ATTN_LIB_SMOKE=1"
    for cell in code:
        for output in cell.outputs:
            assert output.output_type != "error", f"{name}: a cell raised"
    assert not list((NOTEBOOK_DIR).glob("runs")), "a notebook wrote runs/ into the repository"
    assert seconds < SMOKE_SECONDS_PER_NOTEBOOK, (
        f"{name} took {seconds:.0f} s in smoke mode; the four notebooks together must stay "
        "under 5 minutes on two CPU cores"
    )
