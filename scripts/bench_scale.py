"""Scale measurements for docs/benchmarks.md (issue 15): memory of a scan, streaming speed, torchrun.

Three measurements, each printed as a table:

``memory SOURCE``
    Runs ``labelaudit scan SOURCE`` once per ``--max-memory`` setting (default ``auto`` and a
    budget below the size of the decoded images), each in its own process, and samples the
    process's ``/proc/<pid>/status`` every 0.1 s: peak resident set (``VmHWM``), peak anonymous
    memory (``RssAnon``: what the process itself allocated; pages of the memory-mapped cache
    are ``RssFile``, which the kernel may drop at any time) and the time per epoch. The image
    cache is filled by a first, untimed ``inspect``, so decoding is not part of the peaks.

``streaming SOURCE``
    Images per second of the training loop (NL loss, 3 epochs) with the images in memory and
    read batch by batch from the cache, alternating, ``--repeats`` times each.

``distributed SOURCE --truth FILE``
    The default scan in one process and in two ``torchrun`` processes over gloo: wall time, F1
    and the share of samples whose flags agree.

Usage:
  python scripts/bench_scale.py memory /tmp/fmnist60k --max-memory auto 40MB --budget 0.05
  python scripts/bench_scale.py streaming sample_data/fashion_mnist_noisy/images
  python scripts/bench_scale.py distributed sample_data/fashion_mnist_noisy/images \\
      --truth sample_data/fashion_mnist_noisy/truth.csv
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_kib(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM``, ``RssAnon``, ``RssFile`` of a live process in KiB ({} once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return {
                key: int(value.split()[0])
                for key, value in (line.split(":", 1) for line in status)
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile")
            }
    except (FileNotFoundError, ProcessLookupError):
        return {}


def run_sampled(command: list[str]) -> tuple[subprocess.CompletedProcess, dict[str, int], float]:
    """Run ``command``; return its result, the peak of each memory figure (KiB) and the wall seconds."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict[str, int] = {}
    while process.poll() is None:
        for key, value in _status_kib(process.pid).items():
            peaks[key] = max(peaks.get(key, 0), value)
        time.sleep(0.1)
    out, err = process.communicate()
    return (
        subprocess.CompletedProcess(command, process.returncode, out, err),
        peaks,
        time.perf_counter() - start,
    )


def labelaudit(*args: str) -> list[str]:
    return [sys.executable, "-m", "labelaudit", *args]


def memory(args) -> None:
    size = ["--image-size", str(args.image_size)] if args.image_size else []
    # fills the image cache: decoding is not measured below
    subprocess.run(labelaudit("inspect", args.source, *size, "--quiet"), check=True, capture_output=True)
    print(
        "| --max-memory | images | state | decoded images | peak RSS | peak anonymous | peak file-backed | "
        "s/epoch |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for budget in args.max_memory:
        out = Path(args.work) / f"run-{budget}"
        done, peaks, _ = run_sampled(
            labelaudit(
                "scan",
                args.source,
                *size,
                "--out",
                str(out),
                "--overwrite",
                "--budget",
                str(args.budget),
                "--max-memory",
                budget,
                "--json",
                "--quiet",
            )
        )
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        summary = json.loads(done.stdout)
        plan, curves = summary["memory"], summary["training_curves"]
        per_epoch = statistics.median(c["seconds"] for c in curves)
        mib = lambda kib: f"{kib / 1024:.0f} MiB"  # noqa: E731
        print(
            f"| {budget} | {plan['images']} | {plan['state_dtype']} | {plan['image_bytes'] / 2**20:.0f} MiB "
            "| "
            f"{mib(peaks['VmHWM'])} | {mib(peaks['RssAnon'])} | {mib(peaks['RssFile'])} | {per_epoch:.1f} |"
        )


def streaming(args) -> None:
    import torch

    from labelaudit import load_images, load_source
    from labelaudit.train.methods.nlnl import NLNLConfig, run_nlnl
    from labelaudit.train.tensors import TensorData
    from labelaudit.train.trainer import TrainConfig, Trainer

    store = load_images(load_source(args.source))
    data = {"in memory": TensorData.from_store(store), "streamed": TensorData.from_store(store, max_memory=1)}
    rates: dict[str, list[float]] = {mode: [] for mode in data}
    for _ in range(args.repeats):
        for mode, tensors in data.items():
            trainer = Trainer(tensors, TrainConfig())
            run_nlnl(trainer, NLNLConfig(epochs=(args.epochs, 0, 0)))
            epochs = trainer.curves[1:]  # the first epoch warms up
            rates[mode].append(len(tensors) * len(epochs) / sum(c["seconds"] for c in epochs))
    base = statistics.median(rates["in memory"])
    print(f"torch threads {torch.get_num_threads()}, {len(store)} images of {store.image_size} px")
    print("| images | images/s (median) | each repeat | vs in memory |")
    print("|---|---|---|---|")
    for mode, values in rates.items():
        print(
            f"| {mode} | {statistics.median(values):.0f} | {', '.join(f'{v:.0f}' for v in values)} | "
            f"{statistics.median(values) / base - 1:+.1%} |"
        )


def distributed(args) -> None:
    import pandas as pd

    common = [
        "scan",
        args.source,
        "--truth",
        args.truth,
        "--budget",
        str(args.budget),
        "--json",
        "--quiet",
        "--overwrite",
    ]
    results = {}
    for processes in (1, 2):
        out = str(Path(args.work) / f"dist-{processes}")
        command = (
            labelaudit(*common, "--out", out)
            if processes == 1
            else [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={processes}",
                "-m",
                "labelaudit",
                *common,
                "--out",
                out,
            ]
        )
        done, peaks, seconds = run_sampled(command)
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        results[processes] = (json.loads(done.stdout), pd.read_parquet(Path(out) / "report.parquet"), seconds)
    merged = results[1][1].merge(results[2][1], on="sample_id")
    agree = (merged["suspected_noisy_x"] == merged["suspected_noisy_y"]).mean()
    print("| processes | backend | wall s | training s | F1 | flagged | noise-rate error (points) |")
    print("|---|---|---|---|---|---|---|")
    for processes, (summary, _, seconds) in results.items():
        training = sum(
            v for k, v in summary["seconds"].items() if k not in ("total", "load_and_decode", "embed")
        )
        t = summary["truth"]
        print(
            f"| {processes} | {summary['distributed_backend'] or '-'} | {seconds:.0f} | {training:.0f} | "
            f"{t['f1']:.3f} | {summary['num_flagged'] / summary['num_samples']:.1%} | "
            f"{t['noise_rate_error'] * 100:.1f} |"
        )
    print(f"flags agree on {agree:.1%} of {len(merged)} samples")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default=None, help="Folder for run directories [default: a temporary one].")
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory")
    m.add_argument("source")
    m.add_argument("--max-memory", nargs="+", default=["auto", "40MB"])
    m.add_argument("--budget", type=float, default=0.05)
    m.add_argument("--image-size", type=int, default=None)
    s = sub.add_parser("streaming")
    s.add_argument("source")
    s.add_argument("--epochs", type=int, default=3)
    s.add_argument("--repeats", type=int, default=3)
    d = sub.add_parser("distributed")
    d.add_argument("source")
    d.add_argument("--truth", required=True)
    d.add_argument("--budget", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="labelaudit-bench-scale-") as work:
        args.work = args.work or work
        os.makedirs(args.work, exist_ok=True)
        {"memory": memory, "streaming": streaming, "distributed": distributed}[args.what](args)


if __name__ == "__main__":
    main()
