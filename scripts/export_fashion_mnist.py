"""Export clean Fashion-MNIST images (Debian's dataset-fashion-mnist) as an image folder.

    <out>/<class>/fmnist-<split>-<index>.png     one subfolder per class
    <out>.parquet is not written: the folder is the source (labelaudit reads folders directly)

Used for held-out test sets (``--split test``: all 10,000 test images) and for clean training
subsets that ``labelaudit inject-noise`` / ``benchmark`` add noise to.

Usage: python scripts/export_fashion_mnist.py --split test --out /tmp/fmnist-test
       python scripts/export_fashion_mnist.py --split train --per-class 1000 --seed 0 --out /tmp/fmnist-10k
Requires: apt-get install dataset-fashion-mnist
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from make_sample_data import CLASS_NAMES, DATASET_DIR, read_idx
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--per-class", type=int, default=None, help="images per class [default: all]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    if not DATASET_DIR.exists():
        raise SystemExit(f"{DATASET_DIR} not found: run `apt-get install dataset-fashion-mnist` first")
    prefix = "train" if args.split == "train" else "t10k"
    images = read_idx(DATASET_DIR / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(DATASET_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    if args.per_class is None:
        chosen = np.arange(len(labels))
    else:
        rng = np.random.default_rng(args.seed)
        chosen = np.sort(
            np.concatenate(
                [
                    rng.choice(np.flatnonzero(labels == k), size=args.per_class, replace=False)
                    for k in range(10)
                ]
            )
        )
    if args.out.exists():
        shutil.rmtree(args.out)
    for index in chosen:
        target = args.out / CLASS_NAMES[labels[index]] / f"fmnist-{args.split}-{index:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index], mode="L").save(target, optimize=True)
    print(f"wrote {len(chosen)} clean {args.split} images to {args.out}")


if __name__ == "__main__":
    main()
