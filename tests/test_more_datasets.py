"""More data: unreadable images in a folder dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attn_lib.cli import main
from attn_lib.data import UnreadableImageError, load_folder
from attn_lib.data import folder as folder_module

# --- folder: files that are not images ---------------------------------------------------------


def _write_jpeg_tree(root: Path) -> dict[str, np.ndarray]:
    """train/{cat,dog}: 2 JPEGs each, test/{cat,dog}: 1 each; returns the decoded pixels."""
    rng = np.random.default_rng(1)
    pixels = {}
    for split, count in (("train", 2), ("test", 1)):
        for name in ("cat", "dog"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                path = folder / f"{i}.jpg"
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
                with Image.open(path) as image:
                    pixels[f"{split}/{name}/{i}"] = np.asarray(image.convert("RGB"))
    return pixels


def _cached_files(root: Path) -> list[Path]:
    return list((root / folder_module.CACHE_DIRNAME).glob("*")) + list(
        (folder_module.default_cache_dir() / "folders").glob("*"))


def _spoil(path: Path, how: str) -> None:
    if how == "corrupt":
        path.write_bytes(b"this is not a JPEG " * 20)
    else:  # truncated: the first half of a real JPEG, as an interrupted copy leaves it
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])


@pytest.fixture()
def no_home_cache(tmp_path: Path, monkeypatch) -> None:
    # The fallback cache under the home folder must not be touched by the tests.
    monkeypatch.setattr(folder_module, "default_cache_dir", lambda: tmp_path / "home-cache")


@pytest.mark.parametrize("how", ["corrupt", "truncated"])
def test_unreadable_image_is_named_and_nothing_is_cached(tmp_path: Path, how: str,
                                                         no_home_cache) -> None:
    root = tmp_path / "data"
    pixels = _write_jpeg_tree(root)
    bad = root / "train" / "dog" / "1.jpg"
    good_bytes = bad.read_bytes()
    _spoil(bad, how)
    with pytest.raises(UnreadableImageError) as info:
        load_folder(root, "train")
    message = str(info.value)
    assert str(bad) in message and "Delete or replace" in message
    assert "1 file could not be read" in message
    assert "truncated" in message if how == "truncated" else "Unidentified" in message
    assert [p for p, _ in info.value.problems] == [str(bad)]
    assert isinstance(info.value, ValueError)  # the CLI reports ValueErrors as one line
    assert _cached_files(root) == []  # a failed load caches nothing, not even statistics
    # The fix the message names: the file replaced by a good copy. The next load decodes it.
    bad.write_bytes(good_bytes)
    train = load_folder(root, "train")
    assert np.array_equal(train.images[3].permute(1, 2, 0).numpy(), pixels["train/dog/1"])
    assert torch.equal(load_folder(root, "train").images, train.images)  # from the cache now


def test_every_unreadable_image_is_named_at_once(tmp_path: Path, no_home_cache) -> None:
    root = tmp_path / "data"
    _write_jpeg_tree(root)
    bad = [root / "train" / "cat" / "0.jpg", root / "test" / "dog" / "0.jpg"]
    _spoil(bad[0], "corrupt")
    _spoil(bad[1], "truncated")
    (root / "train" / "cat" / "empty.png").write_bytes(b"")
    with pytest.raises(UnreadableImageError) as info:
        load_folder(root, "test", mean=(0.5,) * 3, std=(0.2,) * 3)
    assert [p for p, _ in info.value.problems] == [str(bad[1])]
    with pytest.raises(UnreadableImageError) as info:
        load_folder(root, "train")
    assert sorted(p for p, _ in info.value.problems) == sorted(
        [str(bad[0]), str(root / "train" / "cat" / "empty.png")])
    assert "2 files could not be read" in str(info.value)


def test_many_unreadable_images_are_counted_not_all_listed() -> None:
    problems = [(f"/d/{i}.jpg", "OSError: image file is truncated") for i in range(8)]
    message = str(UnreadableImageError(problems))
    assert "8 files" in message and "/d/4.jpg" in message and "/d/5.jpg" not in message
    assert "and 3 more" in message


def test_cli_train_on_a_folder_with_a_corrupt_jpeg_is_one_line(tmp_path: Path, capsys,
                                                                no_home_cache) -> None:
    root = tmp_path / "data"
    _write_jpeg_tree(root)
    bad = root / "train" / "cat" / "1.jpg"
    _spoil(bad, "corrupt")
    code = main(["train", "--dataset", "folder", "--data-dir", str(root), "--quiet",
                 "--out", str(tmp_path / "run"), "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert str(bad) in err and "Delete or replace" in err
    assert not (tmp_path / "run").exists()  # the data fails before anything is written
