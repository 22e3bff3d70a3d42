"""Build the asymmetric-noise Fashion-MNIST set used in docs/methods.md.

Takes a set written by make_sample_data.py (its truth.csv gives every image's true class) and
refiles images with the papers' Fashion-MNIST asymmetric map: with probability RATE, Ankle-boot
-> Sneaker, Sneaker -> Sandal, Pullover -> Shirt, Coat <-> Dress; other classes never flip.

Usage (the docs' set):
    python scripts/make_sample_data.py --seed 1 --out /tmp/fm_val
    python scripts/make_asymmetric_variant.py /tmp/fm_val /tmp/fm_asymm40 --rate 0.4

Superseded by `labelaudit inject-noise` once that exists (issue 7).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

FASHION_MNIST_MAP = {
    "Ankle-boot": "Sneaker",
    "Sneaker": "Sandal",
    "Pullover": "Shirt",
    "Coat": "Dress",
    "Dress": "Coat",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="a folder written by make_sample_data.py")
    parser.add_argument("out", type=Path)
    parser.add_argument("--rate", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    truth = pd.read_csv(args.source / "truth.csv")
    rng = np.random.default_rng(args.seed)
    if args.out.exists():
        shutil.rmtree(args.out)
    rows = []
    for row in truth.itertuples():
        true = row.true_label
        given = FASHION_MNIST_MAP[true] if true in FASHION_MNIST_MAP and rng.random() < args.rate else true
        sample_id = f"{given}/{Path(row.sample_id).name}"
        target = args.out / "images" / sample_id
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.source / row.path, target)
        rows.append(
            {
                "sample_id": sample_id,
                "path": f"images/{sample_id}",
                "given_label": given,
                "true_label": true,
                "is_noisy": given != true,
            }
        )
    result = pd.DataFrame(rows)
    result.to_csv(args.out / "truth.csv", index=False)
    print(f"wrote {len(result)} images to {args.out}; real noise rate {result['is_noisy'].mean():.1%}")


if __name__ == "__main__":
    main()
