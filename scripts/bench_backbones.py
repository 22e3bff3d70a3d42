"""Measure how fast each pretrained backbone embeds images on this machine; print markdown tables.

1. The forward pass alone, per backbone, at its own crop size, batch 64, best batch after a warm-up:
   the plain module (``Backbone.module``) and the inference copy the embedding pass runs
   (``Backbone.inference_module``: batch norms folded, channels_last). torchvision backbones use
   random-init weights (none can be downloaded here; speed does not depend on weight values);
   efficientnet_lite0 uses its real packaged weights.
2. efficientnet_lite0's inference copy at batch sizes 8 to 64.
3. End to end: ``compute_embeddings`` with efficientnet_lite0 at its default batch size on N
   real JPEG files (decode, preprocess, forward, cache write), then the same call again (reuse).

Other processes on the machine distort every figure (2 busy OpenMP threads stall when a core is
taken away): the load average is printed at the start and the end.

Usage::

    python scripts/bench_backbones.py                       # N=256 photos made from tests/data
    python scripts/bench_backbones.py --images ~/photos -n 500   # a folder of class subfolders
    python scripts/bench_backbones.py --only efficientnet_lite0 resnet18 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labelaudit.data.images import load_images  # noqa: E402
from labelaudit.data.sources import load_source  # noqa: E402
from labelaudit.nets.backbones import PRETRAINED_BACKBONES, load_backbone  # noqa: E402
from labelaudit.nets.embeddings import compute_embeddings  # noqa: E402

DEFAULT_ORDER = ("resnet18", "resnet50", "efficientnet_b0", "convnext_tiny", "vit_b_16", "efficientnet_lite0")
PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "chelsea_224.jpg"


def forward_rate(
    module: torch.nn.Module, crop: int, batch_size: int, batches: int, channels_last: bool
) -> float:
    """Images per second of ``module`` on random ``(batch_size, 3, crop, crop)`` input: the fastest
    of ``batches`` timed batches after a warm-up (the best run is the one least disturbed by
    other processes, as in :mod:`timeit`)."""
    x = torch.randn(batch_size, 3, crop, crop)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode():
        module(x)  # warm-up: oneDNN picks its kernels on the first call of each shape
        for _ in range(batches):
            start = time.perf_counter()
            module(x)
            best = min(best, time.perf_counter() - start)
    return batch_size / best


def make_photos(folder: Path, n: int, seed: int = 0) -> None:
    """Write ``n`` 500x375 (or 375x500) JPEG photos in two class folders: random crops, flips and
    colour changes of the cat photo in tests/data, upscaled like a typical camera export."""
    rng = np.random.default_rng(seed)
    photo = Image.open(PHOTO).convert("RGB")
    for i in range(n):
        x0, y0 = rng.integers(0, 60, 2)
        side = int(rng.integers(150, 224 - max(x0, y0) + 1))
        image = photo.crop((x0, y0, x0 + side, y0 + side))
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        image = Image.fromarray(
            np.clip(np.asarray(image) * rng.uniform(0.7, 1.3, 3), 0, 255).astype(np.uint8)
        )
        size = (500, 375) if i % 3 else (375, 500)
        target = folder / ("a" if i % 2 else "b") / f"{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.resize(size, Image.Resampling.BICUBIC).save(target, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--images", type=Path, help="image folder (one subfolder per class); default: made up"
    )
    parser.add_argument("-n", type=int, default=256, help="files for the end-to-end pass (default 256)")
    parser.add_argument("--only", nargs="+", choices=PRETRAINED_BACKBONES, help="backbones to time")
    parser.add_argument("--batch-size", type=int, default=64, help="forward table batch (default 64)")
    parser.add_argument(
        "--batches", type=int, default=3, help="timed batches per backbone after the warm-up (best counts)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, load average at start "
        f"{os.getloadavg()[0]:.2f}"
    )
    print()
    print(
        f"Forward pass only, batch {args.batch_size}, best of {args.batches} timed batches after a warm-up. "
        "torchvision backbones"
    )
    print(
        "have random-init weights (speed does not depend on weight values); efficientnet_lite0 its real "
        "weights."
    )
    print()
    print("| backbone | weights | input | D | plain module img/s | inference copy img/s |")
    print("|---|---|---|---|---|---|")
    for name in args.only or DEFAULT_ORDER:
        backbone = load_backbone(name, "DEFAULT" if name == "efficientnet_lite0" else None)
        crop = backbone.preprocess.crop_size
        plain = forward_rate(backbone.module, crop, args.batch_size, args.batches, channels_last=False)
        fast = forward_rate(
            backbone.inference_module("cpu"), crop, args.batch_size, args.batches, channels_last=True
        )
        weights = "packaged ImageNet" if name == "efficientnet_lite0" else "random init"
        print(
            f"| {name} | {weights} | {crop}x{crop} | {backbone.dim} | {plain:.1f} | {fast:.1f} |", flush=True
        )

    print()
    print("efficientnet_lite0 inference copy by batch size:")
    print()
    lite0 = load_backbone("efficientnet_lite0")
    fast = lite0.inference_module("cpu")
    sizes = (8, 16, 32, 64)
    rates = [
        forward_rate(fast, 224, size, max(args.batches, 2 * args.batch_size // size), channels_last=True)
        for size in sizes
    ]
    print("| batch | " + " | ".join(map(str, sizes)) + " |")
    print("|---|" + "---|" * len(sizes))
    print("| img/s | " + " | ".join(f"{r:.1f}" for r in rates) + " |", flush=True)

    work = Path(tempfile.mkdtemp(prefix="labelaudit-bench-"))
    try:
        source = args.images
        if source is None:
            source = work / "photos"
            make_photos(source, args.n)
        table = load_source(source)
        if len(table.samples) > args.n:  # keep the first n files
            rest = table.samples.iloc[args.n :][["sample_id", "path"]].assign(
                reason="not_benchmarked", detail=""
            )
            table = table.without(rest)
        cache = work / "cache"
        start = time.perf_counter()
        store = load_images(table, cache_dir=cache)
        decode_seconds = time.perf_counter() - start
        backbone = load_backbone("efficientnet_lite0")
        first = compute_embeddings(store, backbone, cache_dir=cache)
        second = compute_embeddings(store, backbone, cache_dir=cache)
        dims = store.files[["width", "height"]].to_numpy()
        print()
        print(
            f"End to end, compute_embeddings with efficientnet_lite0 on {len(store)} real JPEG files "
            f"(median {int(np.median(dims[:, 0]))}x{int(np.median(dims[:, 1]))} px), default batch size:"
        )
        print()
        print("| files | image cache (headers + small decode) s | embed s | embed img/s | reuse s |")
        print("|---|---|---|---|---|")
        print(
            f"| {len(store)} | {decode_seconds:.1f} | {first.seconds:.1f} | {first.images_per_second:.1f} | "
            f"{second.seconds:.3f} |"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
