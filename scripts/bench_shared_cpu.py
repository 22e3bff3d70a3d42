"""Scans sharing the CPUs: one scan alone, then two started together, under several settings.

    python scripts/bench_shared_cpu.py SOURCE --out /tmp/bench-shared [--budget 0.5] [--settings ...]

Settings (each a pair of scans of SOURCE started 0.3 s apart, every scan into its own run folder,
all with a warm image cache):

- ``queued``: labelaudit's default: the second scan waits for the first to give its CPU slots
  back (labelaudit.resources.cpu_slots), then runs with the threads it would have alone.
- ``unqueued``: what runs did before the queue: each process has its own slot folder (its own
  TMPDIR), so both compute at once with their usual threads.
- ``passive``: as ``unqueued``, with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads sleep at once
  instead of spinning while they wait at a barrier).
- ``one-thread``: as ``unqueued``, each scan with ``--threads 1`` (its flags then differ from a
  run with the default thread count: the count changes the network's sums).

Prints one line per setting: the time of one scan alone with that setting, and of each of the
pair; ``ratio`` is the later of the pair against the default scan alone (the target of issue 25:
at most 2.3). Results are also written to ``--out``/results.json. Each run's report is compared
with the default scan's: ``same flags`` says whether the pair's flags equal it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

SETTINGS = {
    "queued": ({}, [], False),
    "unqueued": ({}, [], True),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, [], True),
    "one-thread": ({}, ["--threads", "1"], True),
}


def run_scan(source: Path, out: Path, budget: str, env: dict, extra: list[str]) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "labelaudit",
        "scan",
        str(source),
        "--out",
        str(out),
        "--overwrite",
        "--quiet",
        "--budget",
        budget,
        *extra,
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def timed(processes: list[subprocess.Popen], started: list[float]) -> list[float]:
    seconds = []
    for process, start in zip(processes, started):
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a scan failed: {err.strip().splitlines()[-1:]}")
        seconds.append(time.perf_counter() - start)
    return seconds


def flags(run: Path) -> pd.Series:
    return pd.read_parquet(run / "report.parquet", columns=["sample_id", "suspected_noisy"]).set_index(
        "sample_id"
    )["suspected_noisy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", default="0.5")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base_env = {**os.environ, "LABELAUDIT_CACHE_DIR": str(args.out / "cache")}
    base_env.pop("OMP_WAIT_POLICY", None)

    # Warm the cache, then the default scan alone: the reference.
    timed([run_scan(args.source, args.out / "warm", args.budget, base_env, [])], [time.perf_counter()])
    start = time.perf_counter()
    alone = timed([run_scan(args.source, args.out / "alone", args.budget, base_env, [])], [start])[0]
    reference = flags(args.out / "alone")
    print(
        f"default scan alone: {alone:.1f} s (threads "
        f"{json.loads((args.out / 'alone' / 'summary.json').read_text())['threads']})"
    )
    results = {"alone_seconds": alone, "budget": args.budget, "settings": {}}
    for name in args.settings.split(","):
        extra_env, extra_args, own_slots = SETTINGS[name]
        env = {**base_env, **extra_env}
        own_alone = alone
        if extra_env or extra_args:
            start = time.perf_counter()
            own_alone = timed(
                [run_scan(args.source, args.out / f"{name}-alone", args.budget, env, extra_args)], [start]
            )[0]
        processes, started = [], []
        for i in range(2):
            env_i = dict(env)
            if own_slots:
                env_i["TMPDIR"] = tempfile.mkdtemp(prefix=f"{name}-{i}-", dir=args.out)
            started.append(time.perf_counter())
            processes.append(run_scan(args.source, args.out / f"{name}-{i}", args.budget, env_i, extra_args))
            time.sleep(0.3)
        pair = timed(processes, started)
        same = all(flags(args.out / f"{name}-{i}").equals(reference) for i in range(2))
        ratio = max(pair) / alone
        results["settings"][name] = {
            "alone_seconds": own_alone,
            "pair_seconds": pair,
            "ratio": ratio,
            "same_flags_as_default": same,
        }
        print(
            f"{name:>10}: alone {own_alone:6.1f} s | pair {pair[0]:6.1f} s, {pair[1]:6.1f} s | ratio "
            f"{ratio:5.2f} "
            f"| same flags as the default scan: {same}",
            flush=True,
        )
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
