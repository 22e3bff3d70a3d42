"""Build sample_data/fashion_mnist_noisy from Debian's dataset-fashion-mnist package.

Takes a class-balanced random subset of the Fashion-MNIST training set, moves a known fraction
of the images into a wrong class folder (symmetric-exclusive noise: the new class is uniform
over the other nine), and writes

    images/<class>/fmnist-train-<index>.png    the noisy dataset as an image folder
    manifest.parquet                           the same as a manifest (sample_id, path, label)
    truth.csv                                  sample_id, path, given_label, true_label, is_noisy

Usage: python scripts/make_sample_data.py [--per-class 500] [--noise 0.2] [--seed 0]
Requires: apt-get install dataset-fashion-mnist
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

DATASET_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = [
    "T-shirt-top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle-boot",
]
OUT_DIR = Path(__file__).resolve().parent.parent / "sample_data" / "fashion_mnist_noisy"


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) into a numpy array."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--noise", type=float, default=0.2, help="fraction of images moved to a wrong class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()

    if not DATASET_DIR.exists():
        raise SystemExit(f"{DATASET_DIR} not found: run `apt-get install dataset-fashion-mnist` first")
    images = read_idx(DATASET_DIR / "train-images-idx3-ubyte.gz")
    labels = read_idx(DATASET_DIR / "train-labels-idx1-ubyte.gz")

    rng = np.random.default_rng(args.seed)
    chosen = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(labels == k), size=args.per_class, replace=False) for k in range(10)]
        )
    )
    true = labels[chosen].astype(np.int64)
    n_noisy = int(round(args.noise * len(chosen)))
    noisy = np.zeros(len(chosen), dtype=bool)
    noisy[rng.choice(len(chosen), size=n_noisy, replace=False)] = True
    given = true.copy()
    given[noisy] = (true[noisy] + rng.integers(1, 10, size=n_noisy)) % 10  # never the true class

    if args.out.exists():
        shutil.rmtree(args.out)
    rows = []
    for index, t, g in zip(chosen, true, given):
        sample_id = f"{CLASS_NAMES[g]}/fmnist-train-{index:05d}.png"
        target = args.out / "images" / sample_id
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index], mode="L").save(target, optimize=True)
        rows.append(
            {
                "sample_id": sample_id,
                "path": f"images/{sample_id}",
                "given_label": CLASS_NAMES[g],
                "true_label": CLASS_NAMES[t],
                "is_noisy": bool(t != g),
            }
        )
    truth = pd.DataFrame(rows)
    truth[["sample_id", "path", "given_label"]].rename(columns={"given_label": "label"}).to_parquet(
        args.out / "manifest.parquet", index=False
    )
    truth.to_csv(args.out / "truth.csv", index=False)
    print(f"wrote {len(truth)} images to {args.out}, {truth['is_noisy'].mean():.1%} in a wrong class folder")


if __name__ == "__main__":
    main()
