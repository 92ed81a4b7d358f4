"""More data: unreadable images in a folder dataset, SVHN, CUB-200-2011, a CIFAR-100 study."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attn_lib
from attn_lib.cli import main
from attn_lib.data import (
    CUB_IMAGE_SIZE,
    SVHN_STATS,
    DatasetNotFoundError,
    UnreadableImageError,
    load_dataset,
    load_folder,
    load_svhn,
)
from attn_lib.data import folder as folder_module
from attn_lib.data.cub import box_masks

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


def test_svhn_downloads_a_missing_file(tmp_path: Path, svhn_files, monkeypatch) -> None:
    # The Colab path, offline: the missing test file is fetched (from a server on this machine,
    # with its md5 checked for real) into data_dir/svhn, then read; the present one is not.
    import http.server
    import threading

    from torchvision.datasets import SVHN

    served = (tmp_path / "svhn" / "test_32x32.mat").read_bytes()
    (tmp_path / "svhn" / "test_32x32.mat").unlink()
    requests = []

    class MatFile(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(served)))
            self.end_headers()
            self.wfile.write(served)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MatFile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for part in ("train", "test"):
            _url, name, md5 = SVHN.split_list[part]
            url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
            monkeypatch.setitem(SVHN.split_list, part, [url, name, md5])
        test = load_dataset("svhn", "test", data_dir=tmp_path)  # download=None: missing
        train = load_dataset("svhn", "train", data_dir=tmp_path)  # present: no request
    finally:
        server.shutdown()
        server.server_close()
    assert set(requests) == {"/test_32x32.mat"}  # torchvision may ask twice (redirects)
    assert torch.equal(test.images, torch.from_numpy(svhn_files["test"][0]))
    assert torch.equal(train.images, torch.from_numpy(svhn_files["train"][0]))


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


# --- CUB-200-2011: a tiny tree in the official archive's layout --------------------------------

RED = (255, 0, 0)
#: (class folder, file, width, height, is_train, box x, y, w, h); image id = position + 1.
CUB_IMAGES = [
    ("001.Black_footed_Albatross", "a_1.jpg", 200, 100, 1, 0, 0, 100, 50),  # top-left quarter
    ("001.Black_footed_Albatross", "a_2.jpg", 60, 90, 0, 15, 30, 30, 45),
    ("002.Laysan_Albatross", "b_1.jpg", 90, 60, 1, 45, 15, 45, 30),
    ("002.Laysan_Albatross", "b_2.jpg", 80, 80, 1, 20, 20, 40, 40),
    ("003.Sooty_Albatross", "c_1.jpg", 100, 200, 0, 50, 150, 50, 50),  # bottom-right corner
    ("003.Sooty_Albatross", "c_2.png", 64, 48, 1, 0, 24, 64, 24),
]


def _write_cub(root: Path) -> Path:
    """``root/CUB_200_2011`` with :data:`CUB_IMAGES`: grey photographs with a red box."""
    cub = root / "CUB_200_2011"
    lines: dict[str, list[str]] = {name: [] for name in (
        "images.txt", "train_test_split.txt", "image_class_labels.txt", "bounding_boxes.txt")}
    classes = sorted({c for c, *_ in CUB_IMAGES})
    for image_id, (cls, name, w, h, train, x, y, bw, bh) in enumerate(CUB_IMAGES, 1):
        pixels = np.full((h, w, 3), 128, dtype=np.uint8)
        pixels[y:y + bh, x:x + bw] = RED
        (cub / "images" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(cub / "images" / cls / name, quality=95)
        lines["images.txt"].append(f"{image_id} {cls}/{name}")
        lines["train_test_split.txt"].append(f"{image_id} {train}")
        lines["image_class_labels.txt"].append(f"{image_id} {classes.index(cls) + 1}")
        lines["bounding_boxes.txt"].append(f"{image_id} {x}.0 {y}.0 {bw}.0 {bh}.0")
    lines["classes.txt"] = [f"{i} {c}" for i, c in enumerate(classes, 1)]
    for name, rows in lines.items():
        # Lines out of order: files are matched by image id, not by line number.
        (cub / name).write_text("\n".join(reversed(rows)) + "\n")
    return cub


@pytest.fixture()
def cub_dir(tmp_path: Path, no_home_cache) -> Path:
    _write_cub(tmp_path / "data")
    return tmp_path / "data"


def test_cub_labels_splits_and_classes(cub_dir: Path) -> None:
    train = load_dataset("cub200", "train", data_dir=cub_dir)
    test = load_dataset("cub200", "test", data_dir=cub_dir / "CUB_200_2011")
    assert train.images.shape == (4, 3, 96, 96) and test.images.shape == (2, 3, 96, 96)
    assert train.image_size == CUB_IMAGE_SIZE == 96 and train.images.dtype == torch.uint8
    assert train.classes == ["001.Black_footed_Albatross", "002.Laysan_Albatross",
                             "003.Sooty_Albatross"] == test.classes
    assert train.labels.tolist() == [0, 1, 1, 2] and test.labels.tolist() == [0, 2]
    assert train.masks.shape == (4, 96, 96) and test.masks.dtype == torch.bool
    assert train.name == "cub200"


def test_cub_box_lands_where_the_bird_is_after_resizing(cub_dir: Path) -> None:
    small = load_dataset("cub200", "train", data_dir=cub_dir, image_size=32)
    # A 200x100 photograph, box (0, 0, 100, 50): the top-left quarter of the square.
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[:16, :16] = True
    assert torch.equal(small.masks[0], expected)
    # A 100x200 photograph (test), box (50, 150, 50, 50): the bottom-right corner, 16 x 8.
    test = load_dataset("cub200", "test", data_dir=cub_dir, image_size=32)
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[24:, 16:] = True
    assert torch.equal(test.masks[1], expected)
    # Images and masks agree in every photograph: the red box is inside the mask, grey outside
    # (a band of 2 px at the box's edge is left out, where resizing blends the colours).
    for ds in (small, test, load_dataset("cub200", "train", data_dir=cub_dir)):
        red = (ds.images[:, 0].int() - ds.images[:, 1].int()) > 60
        eroded = -torch.nn.functional.max_pool2d(-ds.masks[:, None].float(), 5, 1, 2)[:, 0]
        grown = torch.nn.functional.max_pool2d(ds.masks[:, None].float(), 5, 1, 2)[:, 0]
        assert red[eroded.bool()].all() and not red[~grown.bool()].any()


def test_box_masks_scale_with_each_image() -> None:
    boxes = torch.tensor([[0.0, 0.0, 100.0, 50.0], [10.5, 5.5, 0.2, 0.2]])
    sizes = torch.tensor([[100, 200], [100, 100]])  # (height, width)
    masks = box_masks(boxes, sizes, 64)
    assert masks[0, :32, :32].all() and masks[0].sum() == 32 * 32
    # A box between pixel centres still marks the pixel of its centre: (10.6, 5.6) * 0.64.
    assert masks[1].sum() == 1 and masks[1, 3, 6]


def test_cub_train_statistics_and_cache(cub_dir: Path, monkeypatch) -> None:
    train = load_dataset("cub200", "train", data_dir=cub_dir)
    test = load_dataset("cub200", "test", data_dir=cub_dir)
    x = train.images.double().div(255).transpose(0, 1).reshape(3, -1)
    assert np.allclose(test.mean, x.mean(1).numpy(), atol=1e-6)  # the train split's, for both
    assert np.allclose(test.std, x.std(1, unbiased=False).numpy(), atol=1e-6)
    assert train.mean == test.mean and train.std == test.std
    cached = list((cub_dir / "CUB_200_2011" / folder_module.CACHE_DIRNAME).glob("cub200-*.pt"))
    assert len(cached) == 2

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    with monkeypatch.context() as patch:
        patch.setattr(folder_module, "decode_images_and_sizes", no_decoding)
        again = load_dataset("cub200", "test", data_dir=cub_dir)
    assert torch.equal(again.images, test.images) and torch.equal(again.masks, test.masks)
    # Another size is another entry, decoded afresh.
    assert load_dataset("cub200", "test", data_dir=cub_dir, image_size=64).image_size == 64


def test_missing_cub_says_where_to_get_it_and_the_layout(tmp_path: Path, no_home_cache) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cub200", "train", data_dir=tmp_path)
    message = str(info.value)
    assert f"no CUB_200_2011 folder in {tmp_path}" in message
    assert "https://www.vision.caltech.edu/datasets/cub_200_2011/" in message
    assert "10.22002/D1.20098" in message and "--data-dir" in message
    assert "images/<class>/<file>.jpg" in message and "bounding_boxes.txt" in message
    cub = _write_cub(tmp_path)
    (cub / "bounding_boxes.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="lacks bounding_boxes.txt"):
        load_dataset("cub200", "test", data_dir=tmp_path)


def test_cub_with_a_missing_image_or_bad_annotations(tmp_path: Path, no_home_cache) -> None:
    cub = _write_cub(tmp_path)
    (cub / "images" / "002.Laysan_Albatross" / "b_2.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="b_2.jpg"):
        load_dataset("cub200", "train", data_dir=tmp_path)
    cub = _write_cub(tmp_path / "other")
    (cub / "bounding_boxes.txt").write_text("1 0 0 10\n")
    with pytest.raises(ValueError, match=r"bounding_boxes.txt:1: malformed line"):
        load_dataset("cub200", "train", data_dir=tmp_path / "other")
    (cub / "bounding_boxes.txt").write_text("1 0 0 10 10\n")
    with pytest.raises(ValueError, match=r"no line for image id\(s\) 2, 3"):
        load_dataset("cub200", "train", data_dir=tmp_path / "other")
    _write_cub(tmp_path / "third")
    bad = tmp_path / "third" / "CUB_200_2011" / "images" / "003.Sooty_Albatross" / "c_1.jpg"
    bad.write_bytes(b"not a photograph")
    with pytest.raises(UnreadableImageError, match="c_1.jpg"):
        load_dataset("cub200", "test", data_dir=tmp_path / "third")


def test_localize_on_cub_photographs_through_the_cli(cub_dir: Path, tmp_path: Path,
                                                      capsys) -> None:
    # A few steps of a tiny attention model on the photographs; then the CLI scores where its
    # maps point against the boxes (the scores of so short a run mean nothing: the wiring is
    # what is checked).
    run = tmp_path / "run"
    attn_lib.train("vgg-att3-concat-pc", "cub200", data_dir=cub_dir, out_dir=run,
                   preset="smoke", epochs=1, batch_size=2, progress=False)
    capsys.readouterr()
    assert main(["localize", "--checkpoint", str(run), "--data-dir", str(cub_dir),
                 "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["method"] for row in rows} == {"attention", "contribution", "chance", "uniform"}
    uniform = next(row for row in rows if row["method"] == "uniform")
    test = load_dataset("cub200", "test", data_dir=cub_dir)
    assert uniform["images"] == 2
    assert uniform["mass_in_mask"] == pytest.approx(test.masks.float().mean().item())


# --- the study on CIFAR-100 ----------------------------------------------------------------------


def _write_cifar100(root: Path, train: int, test: int) -> None:
    """``cifar-100-python`` as torchvision reads it: pickled dicts of flat R, G, B rows."""
    import pickle

    from torchvision.datasets import CIFAR100

    folder = root / CIFAR100.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for (name, _md5), count in zip(CIFAR100.train_list + CIFAR100.test_list, (train, test)):
        rows = {"data": rng.integers(0, 256, (count, 3072), np.uint8),
                "fine_labels": [i % 100 for i in range(count)]}
        (folder / name).write_bytes(pickle.dumps(rows))
    meta = {CIFAR100.meta["key"]: [f"class{i}" for i in range(100)]}
    (folder / CIFAR100.meta["filename"]).write_bytes(pickle.dumps(meta))


def test_reproduce_runs_on_cifar100(tmp_path: Path, monkeypatch) -> None:
    from torchvision.datasets import cifar

    from attn_lib.study.scales import REFERENCES

    # torchvision checks the md5 of the real archive's files; these are stand-ins.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    _write_cifar100(tmp_path / "data", train=64, test=16)
    model = "vgg-att3-concat-pc"
    result = attn_lib.reproduce(
        dataset="cifar100", scale="smoke", models=[model], seeds=[0], epochs=1,
        data_dir=tmp_path / "data", out_dir=tmp_path / "out", runs_dir=tmp_path / "runs",
        progress=False, figures=False)
    study = result.results["study"]
    assert study["dataset"] == "cifar100" and study["test_images"] == 16
    net = attn_lib.build_model(model, 100, width=0.0625)  # a 100-way classifier
    assert result.results["summary"][model]["parameters"] == sum(
        p.numel() for p in net.parameters())
    # The paper's CIFAR-100 number is printed beside the measured one.
    assert result.results["references"][model] == REFERENCES["cifar100"][model]
    text = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "| `vgg-att3-concat-pc` | 77.03 | paper, Table 1 (top-1 error 22.97%)" in text


def test_cli_reports_a_missing_optional_package_in_one_line(monkeypatch, tmp_path, capsys):
    """scipy (SVHN's .mat reader) missing: one error line naming the install, no traceback."""
    import builtins

    from attn_lib.cli import main

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name == "scipy" or name.startswith("scipy."):
            raise ModuleNotFoundError("No module named 'scipy'", name="scipy")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    code = main(["train", "--dataset", "svhn", "--data-dir", str(tmp_path), "--out",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "pip install scipy" in err and len(err.splitlines()) == 1


def test_localize_reads_cub_from_the_folder_the_checkpoint_was_trained_on(
        cub_dir: Path, tmp_path: Path, capsys) -> None:
    # Trained with --data-dir; localize without it must find the same folder (as evaluate does)
    # and score the attention against CUB's box masks.
    run = tmp_path / "run"
    assert main(["train", "--model", "vgg-att2-concat-pc", "--dataset", "cub200", "--data-dir",
                 str(cub_dir), "--preset", "smoke", "--epochs", "1", "--device", "cpu",
                 "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["localize", "--checkpoint", str(run), "--device", "cpu",
                 "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert rows and all(r["images"] == len(load_dataset("cub200", "test", data_dir=cub_dir))
                        for r in rows)
