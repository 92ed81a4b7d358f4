"""Data: synthetic generation, augmentation, loaders, folder loading and its cache, errors."""

from __future__ import annotations

import contextlib
import http.server
import os
import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from attn_lib.data import (
    DATASETS,
    SYNTHETIC_CLASSES,
    ArrayDataset,
    DatasetNotFoundError,
    DeviceLoader,
    denormalize,
    load_dataset,
    load_folder,
    make_synthetic,
    normalize,
    random_crop_flip,
    torch_dataloader,
)
from attn_lib.data import datasets as datasets_module
from attn_lib.data import folder as folder_module


@pytest.fixture(scope="module")
def synthetic() -> ArrayDataset:
    return make_synthetic(800, seed=0)


# --- synthetic ---------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_seeded() -> None:
    a, b = make_synthetic(40, seed=3), make_synthetic(40, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, make_synthetic(40, seed=4).images)


def test_synthetic_smaller_set_is_a_prefix() -> None:
    # Chunks have their own seeds, so a --limit run sees the first images of the full set.
    small, large = make_synthetic(30, seed=1), make_synthetic(300, seed=1)
    assert torch.equal(small.images, large.images[:30])
    assert torch.equal(small.labels, large.labels[:30])


def test_synthetic_splits_differ() -> None:
    train = load_dataset("synthetic", "train", limit=50)
    test = load_dataset("synthetic", "test", limit=50)
    assert len(train) == len(test) == 50
    assert not torch.equal(train.images, test.images)
    other_seed = load_dataset("synthetic", "train", limit=50, seed=1)
    assert not torch.equal(train.images, other_seed.images)
    large = load_dataset("synthetic", "test", limit=8, image_size=64)
    assert large.images.shape == (8, 3, 64, 64) and large.masks.shape == (8, 64, 64)


def test_synthetic_shapes_labels_and_balance(synthetic: ArrayDataset) -> None:
    ds = synthetic
    assert ds.images.shape == (800, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and ds.masks.dtype == torch.bool
    assert ds.masks.shape == (800, 32, 32)
    assert ds.classes == SYNTHETIC_CLASSES and ds.image_size == 32
    counts = torch.bincount(ds.labels, minlength=len(ds.classes))
    assert counts.tolist() == [100] * len(ds.classes)  # exactly balanced for multiples of 8


def test_synthetic_masks_small_and_inside(synthetic: ArrayDataset) -> None:
    area = synthetic.masks.float().mean(dim=(1, 2))
    assert area.min() > 0.04 and area.max() < 0.16  # design: 6-13 % of the image
    # The object never touches the border: the outermost ring of pixels is free of mask.
    border = synthetic.masks.clone()
    border[:, 1:-1, 1:-1] = False
    assert not border.any()
    # No pixel is on the object in many images: pointing at a fixed place scores low.
    assert synthetic.masks.float().mean(dim=0).max() < 0.32


def test_synthetic_object_stands_out(synthetic: ArrayDataset) -> None:
    x = synthetic.images.float() / 255
    masks = synthetic.masks.unsqueeze(1).float()
    # The object's interior (mask eroded by 1 px) against a band just outside the object.
    interior = -F.max_pool2d(-masks, 3, 1, 1)
    band = F.max_pool2d(masks, 5, 1, 2) - masks
    solid = torch.tensor([c not in ("ring", "frame") for c in synthetic.classes])[synthetic.labels]
    inside = (x * interior).sum((2, 3)) / interior.sum((2, 3))
    around = (x * band).sum((2, 3)) / band.sum((2, 3))
    contrast = (inside - around).abs().amax(dim=1)
    assert (contrast[solid] > 0.1).float().mean() > 0.9
    # Inside a solid object the colour is flat (only sensor noise), unlike the clutter.
    spread = ((x - inside[..., None, None]) ** 2 * interior).sum((2, 3)) / interior.sum((2, 3))
    assert spread[solid].sqrt().median() < 0.05


def test_synthetic_mean_std_match_the_data(synthetic: ArrayDataset) -> None:
    x = synthetic.images.float().div(255).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(x.mean(1), torch.tensor(synthetic.mean), atol=0.02)
    assert torch.allclose(x.std(1), torch.tensor(synthetic.std), atol=0.02)


# --- normalisation, subsets --------------------------------------------------------------------


def test_normalize_denormalize_roundtrip(synthetic: ArrayDataset) -> None:
    x = synthetic.images[:4]
    z = normalize(x, synthetic.mean, synthetic.std)
    assert z.dtype == torch.float32 and z.shape == x.shape
    assert torch.allclose(denormalize(z, synthetic.mean, synthetic.std) * 255, x.float(),
                          atol=1e-3)


def test_subset_is_seeded_and_nested(synthetic: ArrayDataset) -> None:
    a, b = synthetic.subset(50), synthetic.subset(100)
    assert len(a) == 50 and a.masks.shape == (50, 32, 32)
    # Equal rows of a appear in b: smaller draws are nested in larger ones.
    flat_a, flat_b = a.images.flatten(1), b.images.flatten(1)
    assert all((flat_b == row).all(dim=1).any() for row in flat_a)
    assert torch.equal(synthetic.subset([3, 1]).labels, synthetic.labels[[3, 1]])


def test_array_dataset_rejects_bad_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.int64), ["a"],
                     (0.5,) * 3, (0.5,) * 3)


# --- augmentation ------------------------------------------------------------------------------


def _find_transform(original: torch.Tensor, output: torch.Tensor, pad: int
                    ) -> tuple[int, int, bool]:
    padded = F.pad(original, (pad, pad, pad, pad))
    h, w = original.shape[-2:]
    for flip in (False, True):
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                crop = padded[:, dy:dy + h, dx:dx + w]
                if torch.equal(crop.flip(-1) if flip else crop, output):
                    return dy - pad, dx - pad, flip
    raise AssertionError("output is not a shifted (and flipped) copy of the input")


def test_random_crop_flip_is_a_shift_and_flip() -> None:
    images = torch.randint(0, 256, (24, 3, 12, 12), dtype=torch.uint8)
    out = random_crop_flip(images, torch.Generator().manual_seed(0), pad=4)
    assert out.shape == images.shape and out.dtype == images.dtype
    found = [_find_transform(i, o, 4) for i, o in zip(images, out)]
    assert any(dy or dx for dy, dx, _ in found), "nothing was shifted"
    assert any(f for *_, f in found) and not all(f for *_, f in found)
    # Shifted-in pixels are the zero padding (as torchvision's RandomCrop(padding=4)).
    dy, dx, flip = found[0]
    expected = torch.roll(F.pad(images[0], (4,) * 4), (-dy, -dx), (1, 2))[:, 4:-4, 4:-4]
    assert torch.equal(out[0], expected.flip(-1) if flip else expected)
    same = random_crop_flip(images, torch.Generator().manual_seed(0), pad=4)
    assert torch.equal(out, same)


def test_random_crop_flip_without_padding_only_flips() -> None:
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(images, torch.Generator().manual_seed(1), pad=0)
    flipped = (out == images.flip(-1)).flatten(1).all(dim=1)
    kept = (out == images).flatten(1).all(dim=1)
    assert (flipped | kept).all() and flipped.any() and kept.any()
    assert torch.equal(out[flipped], torch.flip(images[flipped], dims=[3]))


# --- loaders -----------------------------------------------------------------------------------


def _epoch(loader: DeviceLoader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def test_device_loader_batches_are_normalised(synthetic: ArrayDataset) -> None:
    ds = synthetic.subset(100)
    loader = DeviceLoader(ds, batch_size=32, train=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 4 and batches[-1][0].shape[0] == 4
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.allclose(x, normalize(ds.images[:32], ds.mean, ds.std), atol=1e-5)
    assert torch.equal(y, ds.labels[:32])
    train = DeviceLoader(ds, batch_size=32, train=True, channels_last=True)
    assert len(train) == len(list(train)) == 3  # the ragged last batch is dropped
    x, _ = next(iter(train))
    assert x.shape == (32, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    assert abs(x.mean().item()) < 0.5 and 0.5 < x.std().item() < 1.5


def test_device_loader_epochs_are_reproducible(synthetic: ArrayDataset) -> None:
    ds = synthetic.subset(96)
    loader = DeviceLoader(ds, batch_size=32, train=True, seed=5)
    first, again = _epoch(loader, 3), _epoch(loader, 3)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    other = _epoch(loader, 4)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in other]))
    # A resumed run (fresh loader, set_epoch(2)) sees what an uninterrupted run sees in epoch 2.
    uninterrupted = DeviceLoader(ds, batch_size=32, train=True, seed=5)
    passes = [list(uninterrupted) for _ in range(3)]
    resumed = _epoch(DeviceLoader(ds, batch_size=32, train=True, seed=5), 2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(passes[2], resumed))
    assert not torch.equal(passes[0][0][0], passes[1][0][0])  # epochs advance by themselves


def test_device_loader_augmentation_modes(synthetic: ArrayDataset) -> None:
    ds = synthetic.subset(64)
    plain = torch.cat([x for x, _ in DeviceLoader(ds, batch_size=64, train=True, seed=1,
                                                  augment="none")])
    # same seed, same epoch: the same shuffled order in every mode
    flipped_only = next(iter(DeviceLoader(ds, batch_size=64, train=True, seed=1, augment="flip")))
    x = flipped_only[0]
    mirrored = torch.flip(plain, dims=[3])
    same = (x == plain).flatten(1).all(1)
    flipped = (x == mirrored).flatten(1).all(1)
    # flip only: every image is either untouched or exactly mirrored (no shift), both occur
    assert (same | flipped).all() and same.any() and flipped.any()
    cropped = next(iter(DeviceLoader(ds, batch_size=64, train=True, seed=1, augment=True)))[0]
    assert not ((cropped == plain).flatten(1).all(1)
                | (cropped == mirrored).flatten(1).all(1)).all()  # crops shift some images
    with pytest.raises(ValueError, match="crop-flip, flip, none"):
        DeviceLoader(ds, batch_size=8, train=True, augment="rotate")


def test_torch_dataloader_matches_reference_normalisation(synthetic: ArrayDataset) -> None:
    ds = synthetic.subset(40)
    x, y = next(iter(torch_dataloader(ds, batch_size=16, train=False, num_workers=0)))
    assert torch.allclose(x, normalize(ds.images[:16], ds.mean, ds.std), atol=1e-6)
    assert torch.equal(y, ds.labels[:16])
    train = torch_dataloader(ds, batch_size=16, train=True, num_workers=0)
    assert len(train) == 2 and next(iter(train))[0].shape == (16, 3, 32, 32)


# --- folder ------------------------------------------------------------------------------------


def _write_tree(root: Path, sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """train/{cat,dog}: 3 PNGs each, test/{cat,dog}: 1 each; returns the pixels by path."""
    rng = np.random.default_rng(0)
    pixels = {}
    for split, count in (("train", 3), ("test", 1)):
        for name in ("cat", "dog"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                side = (sizes or {}).get(f"{split}/{name}/{i}", 32)
                array = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(array).save(folder / f"{i}.png")
                pixels[f"{split}/{name}/{i}"] = array
    return pixels


def test_folder_loads_images_labels_and_train_stats(tmp_path: Path) -> None:
    pixels = _write_tree(tmp_path)
    train = load_dataset("folder", "train", data_dir=tmp_path)
    assert train.images.shape == (6, 3, 32, 32) and train.classes == ["cat", "dog"]
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(train.images[3].permute(1, 2, 0).numpy(), pixels["train/dog/0"])
    test = load_dataset("folder", "test", data_dir=tmp_path)
    assert test.labels.tolist() == [0, 1]
    assert len(load_dataset("folder", "train", data_dir=tmp_path, limit=4)) == 4
    stats = np.stack(list(pixels[k] for k in pixels if k.startswith("train"))) / 255
    assert np.allclose(test.mean, stats.mean(axis=(0, 1, 2)), atol=1e-6)  # train's statistics
    assert np.allclose(test.std, stats.std(axis=(0, 1, 2)), atol=1e-6)


def test_folder_cache_is_reused_and_invalidated(tmp_path: Path, monkeypatch) -> None:
    _write_tree(tmp_path)
    first = load_folder(tmp_path, "train")
    cached = list((tmp_path / folder_module.CACHE_DIRNAME).glob("train-*.pt"))
    assert len(cached) == 1 and not list(cached[0].parent.glob("*.tmp"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    with monkeypatch.context() as patch:
        patch.setattr(folder_module, "decode_images", no_decoding)
        assert torch.equal(load_folder(tmp_path, "train").images, first.images)
    # Replacing an image changes the key: the next load decodes it again.
    new = np.full((32, 32, 3), 7, dtype=np.uint8)
    Image.fromarray(new).save(tmp_path / "train" / "cat" / "0.png")
    os.utime(tmp_path / "train" / "cat" / "0.png", ns=(1, 1))
    assert (load_folder(tmp_path, "train").images[0] == 7).all()


def test_folder_sizes_must_match_or_be_resized(tmp_path: Path) -> None:
    _write_tree(tmp_path, sizes={"train/dog/2": 40})
    with pytest.raises(ValueError, match="image_size"):
        load_folder(tmp_path, "train", cache=False)
    resized = load_folder(tmp_path, "train", image_size=32, cache=False)
    assert resized.images.shape == (6, 3, 32, 32)


def test_missing_folder_says_where_and_what(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("folder", "train", data_dir=missing)
    assert str(missing) in str(info.value) and "train/<class>" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    (tmp_path / "flat" / "cat").mkdir(parents=True)  # classes without train/test
    with pytest.raises(DatasetNotFoundError, match="no train/ folder"):
        load_folder(tmp_path / "flat")


# --- CIFAR and the dispatcher ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_cifar_explains_how_to_get_it(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, "test", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path) in message and "download=False" in message and "--data-dir" in message


def test_cifar_arrays_are_converted_to_nchw(tmp_path: Path, monkeypatch) -> None:
    # No CIFAR files offline: stand in for torchvision's dataset object (NHWC numpy + targets).
    class FakeCifar:
        data = np.arange(2 * 32 * 32 * 3, dtype=np.uint8).reshape(2, 32, 32, 3)
        targets = [3, 1]
        classes = [f"c{i}" for i in range(10)]

    monkeypatch.setattr(datasets_module, "_torchvision_cifar", lambda *args: FakeCifar())
    ds = load_dataset("cifar10", "train", data_dir=tmp_path, download=False)
    assert ds.images.shape == (2, 3, 32, 32) and ds.images.is_contiguous()
    assert torch.equal(ds.images[1, 2], torch.from_numpy(FakeCifar.data[1, :, :, 2]))
    assert ds.labels.tolist() == [3, 1] and ds.mean == (0.4914, 0.4822, 0.4465)


def _write_cifar_python_files(root: Path, cls: type, counts: dict[str, int]) -> np.ndarray:
    """Files in CIFAR's own python format (pickled dicts of flat uint8 rows, R, G, B planes)."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    label_key = "labels" if cls.__name__ == "CIFAR10" else "fine_labels"
    num_classes = 10 if cls.__name__ == "CIFAR10" else 100
    rows = []
    for names, count in ((cls.train_list, counts["train"]), (cls.test_list, counts["test"])):
        for file_name, _md5 in names:
            data = np.random.default_rng(len(rows)).integers(0, 256, (count, 3072), np.uint8)
            labels = [(len(rows) + i) % num_classes for i in range(count)]
            with open(folder / file_name, "wb") as f:
                pickle.dump({"data": data, label_key: labels}, f)
            rows.append(data)
    meta = {cls.meta["key"]: [f"class{i}" for i in range(num_classes)]}
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump(meta, f)
    return np.concatenate(rows)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_is_read_through_torchvision(tmp_path: Path, monkeypatch, name: str) -> None:
    # The real torchvision classes on files in CIFAR's format; only their md5 check (of the
    # real archives' files) is bypassed, and the network is never touched.
    from torchvision.datasets import CIFAR10, CIFAR100, cifar

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    rows = _write_cifar_python_files(tmp_path, cls, {"train": 2, "test": 3})
    train = load_dataset(name, "train", data_dir=tmp_path)  # download=None: files present
    test = load_dataset(name, "test", data_dir=tmp_path / cls.base_folder, download=False)
    n_train = 2 * len(cls.train_list)
    assert train.images.shape == (n_train, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    # Flat row = 1024 red, 1024 green, 1024 blue values, each plane row-major.
    expected = torch.from_numpy(rows[:n_train].reshape(n_train, 3, 32, 32))
    assert torch.equal(train.images, expected)
    assert torch.equal(test.images, torch.from_numpy(rows[n_train:].reshape(3, 3, 32, 32)))
    assert train.labels.dtype == torch.int64 and train.labels[:2].tolist() == [0, 1]
    assert train.classes[:2] == ["class0", "class1"]
    assert len(train.classes) == (10 if name == "cifar10" else 100)
    assert (train.mean, train.std) == datasets_module.CIFAR_STATS[name]


@contextlib.contextmanager
def _http_server(handler: type) -> Iterator[str]:
    """A local HTTP server in a thread; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_cifar_downloads_when_missing(tmp_path: Path, monkeypatch) -> None:
    # The Colab path, offline: torchvision downloads and extracts the archive (served from
    # this machine) into data_dir, then it is read like any CIFAR folder.
    import hashlib
    import tarfile

    from torchvision.datasets import CIFAR10, cifar

    staging = tmp_path / "staging"
    rows = _write_cifar_python_files(staging, CIFAR10, {"train": 2, "test": 3})
    archive = tmp_path / "served" / CIFAR10.filename
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / CIFAR10.base_folder, arcname=CIFAR10.base_folder)
    served = archive.read_bytes()

    class Archive(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            self.send_response(200)
            self.send_header("Content-Length", str(len(served)))
            self.end_headers()
            self.wfile.write(served)

        def log_message(self, *args):
            pass

    real_check = cifar.check_integrity
    # The archive's own md5 is checked for real; the files inside are stand-ins.
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(served).hexdigest())
    monkeypatch.setattr(cifar, "check_integrity",
                        lambda path, md5=None: Path(path).is_file() and
                        (not str(path).endswith(".tar.gz") or real_check(path, md5)))
    with _http_server(Archive) as base:
        monkeypatch.setattr(CIFAR10, "url", f"{base}/{CIFAR10.filename}")
        data_dir = tmp_path / "cache"
        ds = load_dataset("cifar10", "test", data_dir=data_dir)  # download=None: missing
    assert (data_dir / CIFAR10.base_folder / "test_batch").is_file()
    assert torch.equal(ds.images, torch.from_numpy(rows[-3:].reshape(3, 3, 32, 32)))


def test_stalled_cifar_download_fails_with_help(tmp_path: Path, monkeypatch) -> None:
    from torchvision.datasets import CIFAR10

    class Stall(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            time.sleep(3)  # longer than the download timeout below

        def log_message(self, *args):
            pass

    monkeypatch.setattr(datasets_module, "DOWNLOAD_TIMEOUT_S", 0.5)
    with _http_server(Stall) as base:
        monkeypatch.setattr(CIFAR10, "url", f"{base}/{CIFAR10.filename}")
        start = time.perf_counter()
        with pytest.raises(DatasetNotFoundError) as info:
            load_dataset("cifar10", "train", data_dir=tmp_path)
        assert time.perf_counter() - start < 3
    message = str(info.value)
    assert "downloading it failed" in message and str(tmp_path) in message
    assert "synthetic" in message


def test_dispatcher_rejects_unknown_names_and_splits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="accepted: synthetic, cifar10, cifar100, svhn, "
                                         "svhn-extra, cub200, folder"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="accepted: train, test"):
        load_dataset("synthetic", "validation")
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset("folder")
    with pytest.raises(ValueError, match="limit"):
        load_dataset("synthetic", limit=0)
    assert DATASETS == ("synthetic", "cifar10", "cifar100", "svhn", "svhn-extra", "cub200",
                        "folder")
