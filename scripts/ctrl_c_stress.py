"""Press Ctrl-C at random moments of real scans and check that the answer is always the same.

    python scripts/ctrl_c_stress.py --trials 30 --work /tmp/ctrl-c

Each trial starts ``labelaudit scan`` (the console script) on 120 images of the sample data and
sends SIGINT either after a random delay over the whole run (imports, decoding, training,
writing) or a random 0-50 ms after the scan printed "Run directory:". A trial passes when the
scan either finished before the signal (exit 0, run complete) or ended with exit 130, a
``labelaudit: interrupted`` line, no traceback and no "Exception ignored", no temporaries, and a
run directory that is absent, or complete and said to be so. Prints one line per trial and the
counts.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "fashion_mnist_noisy" / "images"
COMMAND = [str(Path(sys.executable).with_name("labelaudit"))]


def make_dataset(root: Path) -> None:
    for folder in sorted(SAMPLE.iterdir())[:3]:
        (root / folder.name).mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.iterdir())[:40]:
            shutil.copy(image, root / folder.name / image.name)


def trial(root: Path, out: Path, env: dict, rng: random.Random) -> tuple[str, str]:
    shutil.rmtree(out, ignore_errors=True)
    after_line = rng.random() < 0.3
    process = subprocess.Popen(
        [*COMMAND, "scan", str(root), "--out", str(out), "--budget", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    if after_line:
        for line in process.stdout:
            if line.startswith("Run directory"):
                break
        delay = rng.uniform(0, 0.05)
        moment = f"{1000 * delay:.0f} ms after 'Run directory:'"
    else:
        delay = rng.uniform(0.02, 7.0)
        moment = f"{delay:.2f} s after start"
    time.sleep(delay)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    complete = (out / "summary.json").is_file() and (out / "report.parquet").is_file()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    if process.returncode == 0 and complete and "interrupted" not in err:
        verdict = "finished first"
    elif (
        process.returncode == 130
        and "labelaudit: interrupted" in err
        and "Traceback" not in err
        and "Exception ignored" not in err
        and not leftovers
        and out.exists() == complete
        and complete == ("is complete" in err)
    ):
        verdict = "interrupted: run complete" if complete else "interrupted: no run"
    else:
        verdict = (
            f"WRONG (exit {process.returncode}, run exists {out.exists()}, complete {complete}, "
            f"leftovers {leftovers})"
        )
    for name in leftovers:
        shutil.rmtree(out.parent / name, ignore_errors=True)
    return verdict, f"{moment}: {verdict}; {err.strip().splitlines()[-1] if err.strip() else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    root = args.work / "images"
    if not root.exists():
        make_dataset(root)
    runs = args.work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LABELAUDIT_CACHE_DIR": str(args.work / "cache")}
    subprocess.run([*COMMAND, "inspect", str(root)], env=env, capture_output=True)  # warm the cache
    rng = random.Random(args.seed)
    counts: dict[str, int] = {}
    for i in range(args.trials):
        verdict, line = trial(root, runs / "run", env, rng)
        counts[verdict.split(" (")[0]] = counts.get(verdict.split(" (")[0], 0) + 1
        print(f"{i + 1:3d} {line}", flush=True)
    print(counts)
    if any(key.startswith("WRONG") for key in counts):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
