"""Decoding real image files of every awkward kind into the cache, and cache reuse."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from conftest import make_folder_dataset, save_image
from PIL import Image

from labelaudit import ConfigError, DatasetError, load_images, load_source
from labelaudit.data import images as images_module


def _reasons(store) -> dict[str, str]:
    return dict(zip(store.table.skipped["sample_id"], store.table.skipped["reason"]))


def _png_bytes(array, mode) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (never decoded, so no real pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_bad_files_are_skipped_with_reasons(tmp_path):
    root = make_folder_dataset(tmp_path / "data", per_class=3)
    rng = np.random.default_rng(0)
    good_png = _png_bytes(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    (root / "cat" / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    (root / "dog" / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    corrupt = bytearray(good_png)
    corrupt[100:400] = bytes(300)  # damage the compressed pixel data, keep the header
    (root / "dog" / "corrupt.png").write_bytes(bytes(corrupt))
    (root / "cat" / "text.png").write_text("hello, I am not a picture")
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "dog" / "huge.png").write_bytes(_huge_png_header(20_000, 20_000))

    store = load_images(load_source(root))
    assert len(store) == 6  # the six good images survive
    assert _reasons(store) == {
        "cat/truncated.png": "truncated",
        "dog/truncated.jpg": "truncated",
        "dog/corrupt.png": "corrupt",
        "cat/text.png": "not_an_image",
        "cat/empty.jpg": "empty",
        "dog/huge.png": "too_large",
    }
    assert store.table.skipped["detail"].map(len).gt(0).all()


def test_max_pixels_setting(tmp_path):
    root = make_folder_dataset(tmp_path / "data")
    save_image(root / "cat" / "big.png", size=(40, 40))
    store = load_images(load_source(root), max_pixels=1000)
    assert _reasons(store) == {"cat/big.png": "too_large"}


def test_grayscale_dataset_is_single_channel_and_exact(tmp_path):
    root = tmp_path / "data"
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    save_image(root / "a" / "ramp.png", pixels)
    save_image(root / "b" / "flipped.png", pixels[::-1].copy())
    store = load_images(load_source(root), image_size=16)
    assert store.channels == 1 and store.pixels.shape[1:] == (16, 16, 1)
    np.testing.assert_array_equal(store.images()[0, :, :, 0], pixels)
    np.testing.assert_array_equal(store.images()[1, :, :, 0], pixels[::-1])


def test_one_color_image_makes_the_dataset_rgb(tmp_path):
    root = make_folder_dataset(tmp_path / "data")
    save_image(root / "dog" / "color.png", mode="RGB")
    store = load_images(load_source(root), image_size=8)
    assert store.channels == 3 and store.images().shape == (7, 8, 8, 3)


def test_rgba_and_palette_transparency_composited_over_white(tmp_path):
    root = tmp_path / "data"
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)  # left: opaque red; right: fully transparent black
    save_image(root / "a" / "rgba.png", rgba, mode="RGBA")
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 255] + [0, 255, 0] + [0] * 762)
    palette.paste(1, (0, 0, 4, 8))  # left: green (index 1); right: index 0, transparent
    (root / "b").mkdir()
    palette.save(root / "b" / "palette.png", transparency=0)
    store = load_images(load_source(root), image_size=8)
    red, pal = store.images()
    assert (red[:, :4] == (255, 0, 0)).all() and (red[:, 4:] == 255).all()
    assert (pal[:, :4] == (0, 255, 0)).all() and (pal[:, 4:] == 255).all()


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    root = tmp_path / "data"
    wide = np.full((8, 8), 65535, dtype=np.uint16)
    wide[:, :4] = 257 * 100
    Image.fromarray(wide).save((root / "a").mkdir(parents=True) or root / "a" / "deep.png")
    save_image(root / "b" / "plain.png", size=(8, 8))
    store = load_images(load_source(root), image_size=8)
    deep = store.images()[store.table.samples["sample_id"].tolist().index("a/deep.png")]
    assert store.channels == 1
    assert (deep[:, :4, 0] == 100).all() and (deep[:, 4:, 0] == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    root = tmp_path / "data"
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:10] = 255  # top half white, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    (root / "a").mkdir(parents=True)
    Image.fromarray(wide).save(root / "a" / "rotated.jpg", exif=exif, quality=95)
    save_image(root / "b" / "plain.png", mode="RGB")
    store = load_images(load_source(root), image_size=20)
    shown = store.images()[0].mean(axis=2)
    # Displayed upright the white half is on the right; unrotated it would be on top.
    assert shown[:, 12:].mean() > 200 and shown[:, :8].mean() < 50


def test_large_photo_and_non_ascii_names(tmp_path):
    root = tmp_path / "données"
    gradient = np.tile(np.linspace(0, 255, 3000, dtype=np.uint8), (2000, 1))
    (root / "猫").mkdir(parents=True)
    Image.fromarray(np.stack([gradient] * 3, axis=2)).save(root / "猫" / "photo_été.jpg", quality=90)
    save_image(root / "chien" / "ñandú.png", mode="RGB")
    table = load_source(root)
    assert "猫/photo_été.jpg" in table.samples["sample_id"].tolist()
    store = load_images(table, image_size=32)
    assert len(store) == 2 and store.table.skipped.empty
    photo = store.images()[table.samples["sample_id"].tolist().index("猫/photo_été.jpg")]
    assert photo[:, :8].mean() < photo[:, -8:].mean()  # the gradient survives the resize


def test_cache_is_reused_and_invalidated_by_a_changed_file(tmp_path, isolated_cache):
    root = make_folder_dataset(tmp_path / "data")
    first = load_images(load_source(root), image_size=8)
    assert not first.reused
    second = load_images(load_source(root), image_size=8)
    assert second.reused and second.cache_dir == first.cache_dir
    np.testing.assert_array_equal(first.images(), second.images())

    changed = root / "cat" / "cat_0.png"
    save_image(changed, seed=99)
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse-grained filesystems
    third = load_images(load_source(root), image_size=8)
    assert not third.reused and third.cache_dir != first.cache_dir
    assert not np.array_equal(third.images()[0], first.images()[0])
    assert not any(isolated_cache.rglob("*.tmp*")), "no temporary files left behind"


def test_cache_never_inside_the_input(tmp_path):
    root = make_folder_dataset(tmp_path / "data")
    with pytest.raises(
        ConfigError,
        match=r"is inside the input folder .*pass --cache-dir \(or LABELAUDIT_CACHE_DIR\) elsewhere",
    ):
        load_images(load_source(root), cache_dir=root / ".cache")


def test_a_class_whose_images_all_fail_is_an_error(tmp_path):
    root = make_folder_dataset(tmp_path / "data")
    save_image(root / "bird" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"class 'bird' has no usable images"):
        load_images(load_source(root))


def test_worker_pool_matches_in_process_decode(tmp_path, monkeypatch):
    root = make_folder_dataset(tmp_path / "data", per_class=20, mode="RGB")
    (root / "cat" / "bad.png").write_text("nope")
    table = load_source(root)
    single = load_images(table, image_size=8, workers=1, cache_dir=tmp_path / "c1")
    monkeypatch.setattr(images_module, "_POOL_MIN_FILES", 0)
    seen = []
    pooled = load_images(
        table, image_size=8, workers=2, cache_dir=tmp_path / "c2", progress=lambda *a: seen.append(a)
    )
    np.testing.assert_array_equal(single.images(), pooled.images())
    assert _reasons(pooled) == {"cat/bad.png": "not_an_image"}
    assert seen[-1] == ("decode", 40, 40)


def test_auto_image_size_is_median_shorter_side_clamped(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        save_image(root / "a" / f"{i}.png", size=(30, 24), seed=i)
        save_image(root / "b" / f"{i}.png", size=(200, 100), seed=10 + i)
    save_image(root / "b" / "tall.png", size=(24, 40))
    assert load_images(load_source(root)).image_size == 24


def test_changing_max_pixels_keeps_rows_aligned(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        save_image(root / "a" / f"{i}.png", np.full((8, 8), 10 * i, np.uint8))
        save_image(root / "b" / f"{i}.png", np.full((8, 8), 100 + 10 * i, np.uint8))
    save_image(root / "a" / "0big.png", np.full((20, 20), 250, np.uint8))
    table = load_source(root)
    everything = load_images(table, image_size=8)
    small_only = load_images(table, image_size=8, max_pixels=100)
    assert len(everything) == 7 and len(small_only) == 6
    ids = small_only.table.samples["sample_id"].tolist()
    assert "a/0big.png" not in ids
    for sample_id, image in zip(ids, small_only.images()):
        expected = everything.images()[everything.table.samples["sample_id"].tolist().index(sample_id)]
        np.testing.assert_array_equal(image, expected)


def test_manifest_output_beside_the_manifest_is_fine_but_not_among_images(tmp_path):
    import pandas as pd

    for i in range(4):
        save_image(tmp_path / "imgs" / f"{i}.png", seed=i)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [f"imgs/{i}.png" for i in range(4)], "label": list("abab")}).to_csv(
        manifest, index=False
    )
    table = load_source(manifest)
    table.check_outside_input(tmp_path / "labelaudit-runs", "output folder", "--out")  # no error
    with pytest.raises(ConfigError, match=r"output folder .* is inside the input folder .*imgs'"):
        table.check_outside_input(tmp_path / "imgs" / "run", "output folder", "--out")
