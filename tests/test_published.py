"""Finding the committed study results: the clone's copy first, GitHub's at the release tag
otherwise, and a clear None when neither can be read."""

from __future__ import annotations

import io
import json
import urllib.request

from attn_lib.study import published


def test_the_clone_copy_is_read_from_disk(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the clone's copy must be used without the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    results = published.study_results("cifar10-cpu")
    expected = json.loads((published.RESULTS_DIR / "cifar10-cpu" / "results.json").read_text())
    assert results == expected and "summary" in results


def test_without_a_clone_the_release_on_github_is_read(monkeypatch, tmp_path):
    monkeypatch.setattr(published, "RESULTS_DIR", tmp_path)
    asked = []

    def fake_urlopen(url, timeout):
        asked.append(url)
        return io.BytesIO(b'{"summary": {}}')

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    assert published.study_results("cifar10-cpu", version="9.8.7") == {"summary": {}}
    assert asked == ["https://raw.githubusercontent.com/attn-lib/attn-lib/v9.8.7/results/"
                     "cifar10-cpu/results.json"]


def test_unreachable_results_give_none_and_say_why(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(published, "RESULTS_DIR", tmp_path)

    def offline(url, timeout):
        raise OSError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert published.study_results("cifar10-cpu", version="0.1.0") is None
    assert "no route to host" in capsys.readouterr().out


def test_the_repository_is_pyproject_s():
    import re
    from pathlib import Path

    text = (Path(published.__file__).resolve().parents[2] / "pyproject.toml").read_text()
    url = re.search(r'^Repository\s*=\s*"([^"]+)"', text, re.MULTILINE).group(1)
    assert url.rstrip("/").removesuffix(".git") == f"https://github.com/{published.REPOSITORY}"
