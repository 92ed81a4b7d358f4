"""More data: unreadable images in a folder dataset, SVHN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attn_lib.cli import main
from attn_lib.data import (
    SVHN_STATS,
    DatasetNotFoundError,
    UnreadableImageError,
    load_dataset,
    load_folder,
    load_svhn,
)
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


# --- SVHN: torchvision's class on .mat files in SVHN's own format ------------------------------


def _write_svhn_mat(folder: Path, part: str, count: int, seed: int) -> tuple[np.ndarray, list]:
    """``<part>_32x32.mat`` as SVHN ships it: X (32, 32, 3, N) uint8, y (N, 1) with 10 for 0."""
    scipy_io = pytest.importorskip("scipy.io", reason="svhn needs scipy (pip install scipy)")
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)  # N, C, H, W
    digits = [(seed + i) % 10 for i in range(count)]
    folder.mkdir(parents=True, exist_ok=True)
    scipy_io.savemat(folder / f"{part}_32x32.mat", {
        "X": images.transpose(2, 3, 1, 0),  # H, W, C, N
        "y": np.array([[d if d else 10] for d in digits], dtype=np.uint8),
    })
    return images, digits


@pytest.fixture()
def svhn_files(tmp_path: Path, monkeypatch) -> dict[str, tuple[np.ndarray, list]]:
    """Train, test and extra .mat files in tmp_path/svhn; torchvision's md5 of each file is
    set to the fabricated file's own, so its integrity check runs for real."""
    import hashlib

    from torchvision.datasets import SVHN

    parts = {}
    for seed, (part, count) in enumerate((("train", 7), ("test", 4), ("extra", 5))):
        parts[part] = _write_svhn_mat(tmp_path / "svhn", part, count, seed)
        url, name, _md5 = SVHN.split_list[part]
        md5 = hashlib.md5((tmp_path / "svhn" / name).read_bytes()).hexdigest()
        monkeypatch.setitem(SVHN.split_list, part, [url, name, md5])
    return parts


def test_svhn_is_read_through_torchvision(tmp_path: Path, svhn_files) -> None:
    train = load_dataset("svhn", "train", data_dir=tmp_path)  # DIR holding svhn/
    test = load_dataset("svhn", "test", data_dir=tmp_path / "svhn", download=False)
    assert train.images.shape == (7, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.images.is_contiguous() and test.images.shape == (4, 3, 32, 32)
    assert torch.equal(train.images, torch.from_numpy(svhn_files["train"][0]))
    assert torch.equal(test.images, torch.from_numpy(svhn_files["test"][0]))
    # The files' label 10 is the digit 0.
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == svhn_files["train"][1]
    assert 0 in train.labels.tolist() and test.labels.tolist() == svhn_files["test"][1]
    assert train.classes == [str(d) for d in range(10)]
    assert (train.mean, train.std) == SVHN_STATS and train.masks is None
    assert train.name == "svhn"


def test_svhn_extra_adds_the_extra_images_to_train_only(tmp_path: Path, svhn_files) -> None:
    train = load_dataset("svhn-extra", "train", data_dir=tmp_path)
    expected = np.concatenate([svhn_files["train"][0], svhn_files["extra"][0]])
    assert torch.equal(train.images, torch.from_numpy(expected))
    assert train.labels.tolist() == svhn_files["train"][1] + svhn_files["extra"][1]
    test = load_svhn("test", tmp_path / "svhn", extra=True)
    assert torch.equal(test.images, torch.from_numpy(svhn_files["test"][0]))
    assert len(load_dataset("svhn-extra", "train", data_dir=tmp_path, limit=5)) == 5


def test_svhn_with_a_damaged_file_explains_how_to_get_it(tmp_path: Path, svhn_files) -> None:
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(b"half a download")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("svhn", "test", data_dir=tmp_path, download=False)
    assert "test_32x32.mat" in str(info.value) and "corrupted" in str(info.value)


def test_missing_svhn_explains_how_to_get_it(tmp_path: Path) -> None:
    pytest.importorskip("scipy.io", reason="svhn needs scipy (pip install scipy)")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("svhn", "train", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "svhn" / "train_32x32.mat") in message
    assert "download=False" in message and "--data-dir" in message
    assert "http://ufldl.stanford.edu/housenumbers/train_32x32.mat" in message
    assert "synthetic" in message
    with pytest.raises(DatasetNotFoundError, match="extra_32x32.mat"):
        load_dataset("svhn-extra", "train", data_dir=tmp_path, download=False)
    with pytest.raises(ValueError, match="32x32"):
        load_dataset("svhn", "train", data_dir=tmp_path, image_size=64)


def test_svhn_without_scipy_names_the_install(tmp_path: Path, monkeypatch) -> None:
    import sys

    # None in sys.modules makes the import fail, as it does where scipy is not installed.
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(ModuleNotFoundError, match="pip install scipy") as info:
        load_dataset("svhn", "train", data_dir=tmp_path, download=False)
    assert info.value.name == "scipy"
