"""Build the near-duplicate and outlier benchmark of docs/benchmarks.md (issue 18).

Writes an image folder of N Fashion-MNIST training images (one subfolder per class) with:

- ``--pairs`` planted near-duplicates: a copy of a random image shifted by one pixel (random
  direction) and re-saved as JPEG quality 70, named ``copy-<source index>.jpg``; half of them
  are filed under a different (random) class: a duplicate conflict;
- ``--digits`` handwritten digits (OpenCV's MNIST digits, 20 px, centred on a 28 px black frame
  as MNIST does) filed under random Fashion-MNIST classes: images of no class.

and beside it ``truth.csv`` (sample_id, true_label: a copy's true class is its source's; a digit's
is the class it was filed under, so it does not count as a label flip) and ``planted.csv``
(sample_id, kind = near_duplicate | outlier, source = the original's sample_id, conflict).

Usage (the docs' set):
    apt-get install dataset-fashion-mnist && apt-get download opencv-doc
    python scripts/make_duplicates_benchmark.py --deb opencv-doc_*.deb --out /tmp/dup10k
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pandas as pd
from export_opencv_digits import DIGIT, read_sheet
from make_sample_data import CLASS_NAMES, DATASET_DIR, read_idx
from PIL import Image


def shifted_jpeg(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """``pixels`` moved one pixel up, down, left or right (wrapping), encoded as JPEG quality 70."""
    moved = np.roll(pixels, int(rng.choice([-1, 1])), axis=int(rng.integers(2)))
    buffer = io.BytesIO()
    Image.fromarray(moved, mode="L").save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--images", type=int, default=10_000, help="Fashion-MNIST training images (the first N)"
    )
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--digits", type=int, default=100)
    parser.add_argument(
        "--sheet", type=Path, default=None, help="OpenCV digits.png [default: installed opencv-doc]"
    )
    parser.add_argument("--deb", type=Path, default=None, help="an opencv-doc .deb to read digits.png from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty; pass a new folder")
    rng = np.random.default_rng(args.seed)
    images = read_idx(DATASET_DIR / "train-images-idx3-ubyte.gz")[: args.images]
    labels = read_idx(DATASET_DIR / "train-labels-idx1-ubyte.gz")[: args.images]
    root = args.out / "images"
    truth, planted = [], []

    def save(image: Image.Image, label: int, name: str, true_label: int) -> str:
        sample_id = f"{CLASS_NAMES[label]}/{name}"
        (root / CLASS_NAMES[label]).mkdir(parents=True, exist_ok=True)
        image.save(root / sample_id)
        truth.append({"sample_id": sample_id, "true_label": CLASS_NAMES[true_label]})
        return sample_id

    for index, (pixels, label) in enumerate(zip(images, labels)):
        save(Image.fromarray(pixels, mode="L"), int(label), f"fmnist-{index:05d}.png", int(label))
    sources = rng.choice(args.images, size=args.pairs, replace=False)
    for n, index in enumerate(sources):
        label = int(labels[index])
        conflict = n % 2 == 1
        filed = int(rng.choice([k for k in range(10) if k != label])) if conflict else label
        sample_id = f"{CLASS_NAMES[filed]}/copy-{index:05d}.jpg"
        (root / CLASS_NAMES[filed]).mkdir(parents=True, exist_ok=True)
        (root / sample_id).write_bytes(shifted_jpeg(images[index], rng))
        truth.append({"sample_id": sample_id, "true_label": CLASS_NAMES[label]})
        planted.append(
            {
                "sample_id": sample_id,
                "kind": "near_duplicate",
                "source": f"{CLASS_NAMES[label]}/fmnist-{index:05d}.png",
                "conflict": conflict,
            }
        )
    sheet = read_sheet(args.sheet, args.deb)
    tiles = sheet.reshape(50, DIGIT, 100, DIGIT).transpose(0, 2, 1, 3).reshape(5000, DIGIT, DIGIT)
    for index in rng.choice(len(tiles), size=args.digits, replace=False):
        frame = np.zeros((28, 28), dtype=np.uint8)
        frame[4:24, 4:24] = tiles[index]
        filed = int(rng.integers(10))
        sample_id = save(Image.fromarray(frame, mode="L"), filed, f"digit-{index:04d}.png", filed)
        planted.append({"sample_id": sample_id, "kind": "outlier", "source": "", "conflict": False})
    pd.DataFrame(truth).to_csv(args.out / "truth.csv", index=False)
    pd.DataFrame(planted).to_csv(args.out / "planted.csv", index=False)
    print(
        f"wrote {len(truth)} images ({args.pairs} planted near-duplicates, {args.digits} digits) under {root}"
    )


if __name__ == "__main__":
    main()
