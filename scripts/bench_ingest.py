"""Time and peak memory of ``labelaudit inspect`` on manifests of 100k and 1M rows (issue 15).

Everything is generated in a temporary folder outside the repository and deleted at the end
(``--keep`` keeps it):

- ``images/``: ``--distinct-images`` small grayscale PNGs (16 x 16, random pixels, seeded).
- ``data/real/``: hard links to those images under distinct paths, one per "real" manifest
  row (``--real-fraction`` of the rows, spread evenly over the manifest). Hard links are
  regular files, so every real row costs a stat, a header read, a hash and a decode, like a
  real dataset's files; equal bytes make ``inspect`` report duplicate groups, as it would.
- ``manifest-<rows>.parquet`` / ``.csv``: columns ``path`` (relative to the manifest), ``label``
  (one of ``--classes`` class names, seeded; the first real rows cover every class, as
  ``inspect`` needs images in each) and ``caption`` (a text column the ingestion does not need,
  as real manifests have); the other rows point at files that do not exist, which ``inspect``
  stats, skips and lists as ``missing``.

Each measurement runs ``labelaudit inspect MANIFEST --quiet`` (``--out DIR`` too with
``--write-out``) as its own child process with a fresh ``LABELAUDIT_CACHE_DIR`` (so the image
cache is built, not reused), waited for with ``os.wait4``: its ``ru_maxrss`` is the peak
resident memory of that child and of the decoding workers it started (the largest of them, not
the sum; workers are forked and share the parent's pages). Wall time includes starting Python
and importing labelaudit. ``baseline`` is the same command on a 100-row manifest; ``bytes/row``
is (peak - baseline peak) / rows; ``slope`` is the extra peak per extra row between consecutive
sizes of the same format. Linux counts the memory of the process that started a child in the
child's ``ru_maxrss`` (the pre-``exec`` copy), so this script keeps its own process small: it
imports no numpy or pandas and generates the data in child processes of its own.

Usage: python scripts/bench_ingest.py [--rows 100000 1000000] [--formats parquet csv]
       [--real-fraction 0.1] [--write-out]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LINKS_PER_FOLDER = 1000


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Write ``count`` distinct 16 x 16 grayscale PNGs into ``folder``; return their paths."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


def real_link(i: int) -> str:
    """Path (relative to the manifests' folder) of the ``i``-th real row's hard link."""
    return f"data/real/{i // LINKS_PER_FOLDER:04d}/{i:07d}.png"


def make_links(root: Path, images: list[Path], count: int) -> None:
    """Create ``count`` hard links under ``root/data/real``, cycling through ``images``."""
    for i in range(count):
        link = root / real_link(i)
        if i % LINKS_PER_FOLDER == 0:
            link.parent.mkdir(parents=True, exist_ok=True)
        os.link(images[i % len(images)], link)


def manifest_frame(rows: int, real_rows: int, num_classes: int, seed: int = 0):
    """The manifest (a pandas DataFrame): ``real_rows`` rows spread evenly over ``rows`` point at
    real links, the others at missing files."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    is_real = np.zeros(rows, dtype=bool)
    is_real[np.round(np.arange(real_rows) * (rows / max(real_rows, 1))).astype(np.int64)] = True
    real_index = np.cumsum(is_real) - 1
    paths = [
        real_link(int(real_index[i]))
        if is_real[i]
        else f"data/missing/{i // LINKS_PER_FOLDER:04d}/{i:07d}.png"
        for i in range(rows)
    ]
    names = np.array([f"class_{k}" for k in range(num_classes)], dtype=object)
    labels = names[rng.integers(0, num_classes, rows)]
    first_real = np.flatnonzero(is_real)[:num_classes]
    labels[first_real] = names[: len(first_real)]  # every class has files that exist
    captions = [f"photo {i} taken for the ingestion benchmark" for i in range(rows)]
    return pd.DataFrame({"path": paths, "label": labels, "caption": captions})


def run_inspect(manifest: Path, work: Path, name: str, write_out: bool) -> tuple[float, int, int]:
    """Run ``labelaudit inspect`` on ``manifest`` in a child process; return (wall seconds,
    peak RSS in bytes, exit code)."""
    cache = work / f"cache-{name}"
    out = work / f"out-{name}"
    env = {**os.environ, "LABELAUDIT_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "labelaudit", "inspect", str(manifest), "--quiet"]
    if write_out:
        command += ["--out", str(out)]
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    error = child.stderr.read().decode(errors="replace").strip()
    child.stderr.close()
    if child.returncode != 0:
        print(f"inspect {manifest.name} failed ({child.returncode}): {error}", file=sys.stderr)
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return seconds, usage.ru_maxrss * 1024, child.returncode  # ru_maxrss is in KiB on Linux


def generate(argv: list[str]) -> None:
    """Child-process entry: ``images WORK COUNT LINKS`` or ``manifest PATH ROWS REAL CLASSES``."""
    if argv[0] == "images":
        work, count, links = Path(argv[1]), int(argv[2]), int(argv[3])
        make_links(work, make_images(work / "images", count), links)
    else:
        manifest, rows, real, classes = Path(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
        frame = manifest_frame(rows, real, classes)
        if manifest.suffix == ".parquet":
            frame.to_parquet(manifest, index=False)
        else:
            frame.to_csv(manifest, index=False)


def in_child(*argv) -> None:
    """Run :func:`generate` in a child process (its memory never reaches this process's peak)."""
    subprocess.run([sys.executable, __file__, "--generate", *map(str, argv)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--formats", nargs="+", choices=["parquet", "csv"], default=["parquet", "csv"])
    parser.add_argument("--real-fraction", type=float, default=0.1, help="share of rows whose file exists")
    parser.add_argument("--distinct-images", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument(
        "--write-out", action="store_true", help="also pass --out (writes inspect.json, skipped.csv)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print it")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="labelaudit-bench-ingest-"))
    try:
        sizes = sorted(args.rows)
        real_counts = {rows: int(round(rows * args.real_fraction)) for rows in [100, *sizes]}
        start = time.perf_counter()
        in_child("images", work, args.distinct_images, max(real_counts.values()))
        print(
            f"# data in {work}: {args.distinct_images} distinct PNGs, {max(real_counts.values())} hard links "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        print(
            f"# command: labelaudit inspect MANIFEST --quiet{' --out DIR' if args.write_out else ''}",
            flush=True,
        )
        print(
            "| rows | format | files that exist | wall s | peak RSS MiB | bytes/row above baseline | slope "
            "bytes/row |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|")
        for fmt in args.formats:
            previous = baseline = None
            for rows in [100, *sizes]:
                manifest = work / f"manifest-{rows}.{fmt}"
                in_child("manifest", manifest, rows, real_counts[rows], args.classes)
                seconds, peak, code = run_inspect(manifest, work, f"{rows}-{fmt}", args.write_out)
                manifest.unlink()
                if code != 0:
                    continue
                baseline = peak if baseline is None else baseline
                above = "" if rows == 100 else f"{(peak - baseline) / rows:,.0f}"
                slope = "" if previous is None else f"{(peak - previous[1]) / (rows - previous[0]):,.0f}"
                label = "100 (baseline)" if rows == 100 else f"{rows:,}"
                print(
                    f"| {label} | {fmt} | {real_counts[rows]:,} | {seconds:.1f} | {peak / 2**20:,.0f} | "
                    f"{above} | {slope} |",
                    flush=True,
                )
                previous = (rows, peak)
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"# this script's own peak RSS: {own:,.0f} MiB (a child's peak below it would be hidden)")
    finally:
        if args.keep:
            print(f"# kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--generate"]:
        generate(sys.argv[2:])
    else:
        main()
