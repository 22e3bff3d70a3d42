"""The CPUs a run may use, and sharing them with other runs.

Torch's CPU kernels split each operation over a team of OpenMP threads that meet at a barrier.
When two such processes share too few cores, each barrier waits for a thread that another
process's thread has pushed off its core: measured on 2 cores (docs/benchmarks.md, "Sharing the
CPUs"), two 2-thread scans started together each took 10 times as long as one alone, and a
passive OpenMP wait policy made it worse (21 times). Fewer threads per run avoid it, but the
thread count changes a network's floating-point sums, and so its flags: a run must keep the
thread count it would have alone. So:

- :func:`usable_cpus` counts the CPUs this process may really use: its affinity mask and, in a
  container, its cgroup CPU quota (torch's own default is every core of the host).
- :func:`cpu_slots` takes one slot per thread from a machine-wide set of :func:`usable_cpus`
  slots (file locks, released by the kernel when a process dies): runs that together need more
  threads than there are CPUs wait for each other instead of thrashing, each with the thread
  count it would have alone, so its results do not depend on what else runs.
- Other programs' load cannot be queued: :func:`busy_cpus_of_others` measures it, and the caller
  warns when it would slow the run.
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

log = logging.getLogger(__name__)

#: Seconds between tries while waiting for CPU slots.
_POLL_SECONDS = 0.5


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (rounded up)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_limit()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota - 1e-9)))
    return max(1, count)


def cgroup_cpu_limit(
    root: str | os.PathLike = "/sys/fs/cgroup", self_cgroup: str | os.PathLike = "/proc/self/cgroup"
) -> Optional[float]:
    """The CPU quota of this process's cgroup in CPUs (``quota / period``), or None when unlimited
    or unknown. Reads cgroup v2 ``cpu.max`` and v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``,
    at this process's own cgroup path and at the mount's root (a container sees its own there)."""
    root = Path(root)
    v2_path, v1_path = "", ""
    try:
        for line in Path(self_cgroup).read_text().splitlines():
            hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
            if hierarchy == "0" and controllers == "":
                v2_path = path.lstrip("/")
            elif "cpu" in controllers.split(","):
                v1_path = path.lstrip("/")
    except OSError:
        pass
    candidates = [(root / v2_path / "cpu.max", None), (root / "cpu.max", None)]
    for v1 in ("cpu,cpuacct", "cpu"):
        candidates += [
            (root / v1 / v1_path / "cpu.cfs_quota_us", root / v1 / v1_path / "cpu.cfs_period_us"),
            (root / v1 / "cpu.cfs_quota_us", root / v1 / "cpu.cfs_period_us"),
        ]
    for quota_file, period_file in candidates:
        try:
            if period_file is None:  # v2: "max 100000" or "200000 100000"
                quota, period = quota_file.read_text().split()[:2]
            else:
                quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
        except (OSError, ValueError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            quota_value, period_value = float(quota), float(period)
        except ValueError:
            continue
        if quota_value > 0 and period_value > 0:
            return quota_value / period_value
    return None


def _slot_folder() -> Path:
    """``$LABELAUDIT_CPU_SLOTS``, else ``$TMPDIR/labelaudit-<uid>/cpu-slots``: the runs that share
    one folder take turns (a test suite uses its own, so that it never waits for other runs)."""
    if os.environ.get("LABELAUDIT_CPU_SLOTS"):
        return Path(os.environ["LABELAUDIT_CPU_SLOTS"]).expanduser()
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"labelaudit-{uid}" / "cpu-slots"


@contextmanager
def cpu_slots(
    threads: int,
    *,
    progress: Optional[Callable[..., None]] = None,
    slots: Optional[int] = None,
    folder: Optional[Path] = None,
) -> Iterator[int]:
    """Hold ``threads`` of the machine's ``slots`` CPU slots (default :func:`usable_cpus`) for the block.

    Waits (reporting a ``waiting for CPUs`` progress phase and one log line) while other
    labelaudit runs hold too many; ``threads`` above ``slots`` takes them all. Yields how many
    slots it holds. Best effort: where file locks are unavailable (no ``fcntl``, no writable
    temporary folder) the block runs at once.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        yield 0
        return
    slots = usable_cpus() if slots is None else slots
    wanted = max(1, min(int(threads), slots))
    folder = _slot_folder() if folder is None else Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        yield 0
        return
    held: list = []
    waited_since = None
    rng = random.Random(os.getpid())
    try:
        while True:
            for i in range(slots):
                if len(held) == wanted:
                    break
                try:
                    handle = open(folder / f"slot-{i}", "a+")
                except OSError:
                    continue
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    handle.close()
                    continue
                handle.seek(0)
                handle.truncate()
                handle.write(str(os.getpid()))
                handle.flush()
                held.append(handle)
            if len(held) == wanted:
                break
            if not held and not any((folder / f"slot-{i}").exists() for i in range(slots)):
                break  # nothing to lock with (unwritable folder): do not wait for ever
            for handle in held:  # all or none: two runs holding half each would wait for each other
                handle.close()
            held.clear()
            if waited_since is None:
                waited_since = time.monotonic()
                holders = sorted(_holders(folder, slots) - {os.getpid()})
                log.warning(
                    "waiting for other labelaudit runs (process%s %s) to free the CPUs: %d threads of %d "
                    "CPUs are in use; runs share the CPUs in turn rather than slow each other down many "
                    "times (docs/benchmarks.md)",
                    "es" if len(holders) > 1 else "",
                    ", ".join(map(str, holders)) or "?",
                    slots,
                    slots,
                )
            if progress:
                progress("waiting for CPUs", 0, 1, f"{time.monotonic() - waited_since:.0f} s")
            time.sleep(_POLL_SECONDS * (0.5 + rng.random()))
        if waited_since is not None and progress:
            progress("waiting for CPUs", 1, 1, f"{time.monotonic() - waited_since:.0f} s")
        yield len(held)
    finally:
        for handle in held:
            handle.close()  # closing releases the lock


def _holders(folder: Path, slots: int) -> set[int]:
    pids = set()
    for i in range(slots):
        try:
            text = (folder / f"slot-{i}").read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            pids.add(int(text))
    return pids


def busy_cpus_of_others(window: float = 0.25) -> Optional[float]:
    """CPUs kept busy by other processes over the next ``window`` seconds (Linux ``/proc``), or None.

    Call it while this process is idle: its own CPU time in the window is subtracted anyway.
    """

    def totals() -> tuple[float, float, float]:
        with open("/proc/stat") as fh:
            fields = [float(v) for v in fh.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        own = os.times()
        return sum(fields[:8]), idle, own.user + own.system

    try:
        tick = os.sysconf("SC_CLK_TCK")
        total_a, idle_a, own_a = totals()
        time.sleep(window)
        total_b, idle_b, own_b = totals()
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    elapsed = (total_b - total_a) / tick  # CPU-seconds of all CPUs in the window
    if elapsed <= 0:
        return None
    cpus = os.cpu_count() or 1
    busy = (elapsed - (idle_b - idle_a) / tick) - (own_b - own_a)
    return max(0.0, busy / (elapsed / cpus))
