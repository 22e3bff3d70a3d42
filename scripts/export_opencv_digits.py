"""Export OpenCV's handwritten digits (5,000 images, 20x20, 500 per digit) as an image folder.

    <out>/<digit>/digit-<index>.png     one subfolder per class, index 0..4999 in sheet order

The sheet ``digits.png`` (2000 x 1000 px: 50 rows of 100 digits, five rows per digit 0..9)
ships offline in Debian's ``opencv-doc`` package, which is large (96 MB) and not needed
otherwise, so the script also reads the file straight out of a downloaded ``.deb``:

    apt-get download opencv-doc
    python scripts/export_opencv_digits.py --deb opencv-doc_*.deb --out /tmp/digits

Used as the second dataset of the benchmarks (docs/benchmarks.md); the images are MNIST digits
rescaled by OpenCV's authors.
"""

from __future__ import annotations

import argparse
import io
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

SHEET = "usr/share/doc/opencv-doc/examples/data/digits.png"
DIGIT = 20  # pixels per side


def read_sheet(installed: Path | None, deb: Path | None) -> np.ndarray:
    """The digits sheet as a ``(1000, 2000)`` uint8 array, from the installed file or a .deb."""
    if deb is not None:
        data = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True
        ).stdout
        member = subprocess.run(
            ["tar", "-xO", f"./{SHEET}"], input=data, check=True, capture_output=True
        ).stdout
        return np.array(Image.open(io.BytesIO(member)).convert("L"))
    path = installed or Path("/") / SHEET
    if not path.is_file():
        raise SystemExit(
            f"{path} not found: apt-get install opencv-doc, or apt-get download opencv-doc and pass --deb"
        )
    return np.array(Image.open(path).convert("L"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sheet", type=Path, default=None, help="digits.png [default: the installed opencv-doc file]"
    )
    parser.add_argument("--deb", type=Path, default=None, help="an opencv-doc .deb to read digits.png from")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    sheet = read_sheet(args.sheet, args.deb)
    if sheet.shape != (50 * DIGIT, 100 * DIGIT):
        raise SystemExit(f"expected a 2000 x 1000 digits sheet; got {sheet.shape[1]} x {sheet.shape[0]}")
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty; pass a new folder")
    tiles = sheet.reshape(50, DIGIT, 100, DIGIT).transpose(0, 2, 1, 3).reshape(5000, DIGIT, DIGIT)
    labels = np.repeat(np.arange(10), 500)  # five rows of 100 per digit
    for digit in range(10):
        (args.out / str(digit)).mkdir(parents=True, exist_ok=True)
    for index, (tile, label) in enumerate(zip(tiles, labels)):
        Image.fromarray(tile).save(args.out / str(label) / f"digit-{index:04d}.png")
    print(f"wrote {len(tiles)} images in 10 class folders under {args.out}")


if __name__ == "__main__":
    main()
