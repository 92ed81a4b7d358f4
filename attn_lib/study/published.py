"""The committed study results (``results/<name>/results.json``), for notebooks and scripts.

A clone of the repository has them on disk; an installed package (Colab) does not, so they are
read from the repository on GitHub at the installed release's tag instead. Nothing here
computes a number: it only finds the file the study wrote.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

#: The GitHub repository whose tagged releases hold the committed results.
REPOSITORY = "attn-lib/attn-lib"
#: The folder of the clone that holds the study folders (``results/cifar10-cpu`` ...).
RESULTS_DIR = Path(__file__).resolve().parents[2] / "results"


def results_url(name: str, version: str) -> str:
    """Where release ``version``'s ``results/<name>/results.json`` lies on GitHub."""
    return (f"https://raw.githubusercontent.com/{REPOSITORY}/v{version}/results/{name}/"
            "results.json")


def study_results(name: str = "cifar10-cpu", version: str | None = None,
                  timeout: float = 20.0) -> dict[str, Any] | None:
    """``results/<name>/results.json`` of this clone, else of release ``version`` (default:
    the installed one) on GitHub; ``None``, with the reason printed, when neither is readable
    (no clone and no internet)."""
    local = RESULTS_DIR / name / "results.json"
    if local.is_file():
        return json.loads(local.read_text(encoding="utf-8"))
    if version is None:
        from .._version import __version__ as version
    url = results_url(name, version)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as error:
        print(f"could not read {url} ({error}); the study's numbers are left out")
        return None
