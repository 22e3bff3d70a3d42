"""Where and how a network computes: the device, the arithmetic, the CPU threads and their
share of the machine, and the memory budget for images and per-sample state."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
from contextlib import contextmanager
from typing import Callable, Optional

import torch

from ..data.images import ProgressCallback
from ..errors import ConfigError
from ..resources import cpu_slots, usable_cpus
from . import distributed
from .config import TrainConfig

log = logging.getLogger(__name__)


def cpu_has_fast_bfloat16() -> bool:
    """True when this CPU computes bfloat16 matrix products in hardware (AMX tiles or AVX-512 BF16)."""
    checks = [
        getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    ]
    try:
        return any(check() for check in checks if check is not None)
    except Exception:  # a private torch helper that changed: assume no
        return False


def resolve_precision(precision: str, device: torch.device, features: bool) -> str:
    """The arithmetic a network trains in: ``"fp16"`` (CUDA autocast), ``"bf16"`` or ``"fp32"``.

    ``auto``: float16 autocast on CUDA; on a CPU, bfloat16 autocast where the CPU multiplies
    bfloat16 in hardware (measured 1.7x the images per second of float32 for the default
    ResNet-8, docs/benchmarks.md), else float32. On a CPU a head over embeddings always stays
    float32 (its cost is negligible). ``bf16`` and ``fp32`` are honoured on CUDA. Weights,
    optimiser state, losses and soft labels are float32 in every case; only the network's
    forward and backward run in the lower precision.
    """
    if device.type == "cuda":
        return {"fp32": "fp32", "bf16": "bf16"}.get(precision, "fp16")
    if features or precision == "fp32":
        return "fp32"
    if precision == "bf16" or (precision == "auto" and cpu_has_fast_bfloat16()):
        return "bf16"
    return "fp32"


@contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` CPU threads for torch (None: leave the setting), then restore it."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: torch's own thread count at import: physical cores, or OMP_NUM_THREADS (torchrun sets it to 1).
_TORCH_DEFAULT_THREADS = torch.get_num_threads()


def cpu_threads(config: TrainConfig, *, features: bool = False) -> int:
    """CPU threads a network computes with: ``config.threads`` when given; 1 for a head on
    embeddings (its matrices are too small to split); else torch's default (physical cores, or
    ``OMP_NUM_THREADS`` when set), capped by the CPUs this process may use
    (:func:`labelaudit.resources.usable_cpus`: affinity and a container's CPU quota, which
    torch does not read). The same machine gives the same count, and so the same results, whatever
    else runs: the count changes a network's sums (docs/benchmarks.md, "Sharing the CPUs")."""
    if config.threads is not None:
        return config.threads
    if features:
        return 1
    if os.environ.get("OMP_NUM_THREADS"):
        return _TORCH_DEFAULT_THREADS
    return max(1, min(_TORCH_DEFAULT_THREADS, usable_cpus()))


@contextmanager
def cpu_share(config: TrainConfig, progress: Optional[ProgressCallback] = None):
    """Run the block holding :func:`cpu_threads` slots of the machine's CPUs
    (:func:`labelaudit.resources.cpu_slots`): concurrent runs take turns instead of slowing each
    other down many times. Not under torchrun (its processes must run together) nor on a GPU."""
    several = os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1")
    if several or resolve_device(config.validate().device).type != "cpu":
        yield
        return
    with cpu_slots(cpu_threads(config), progress=progress):
        yield


def holding_cpus(train_of: Callable[[dict], Optional[TrainConfig]]):
    """Decorator: run the function inside :func:`cpu_share`. ``train_of(arguments)`` gets the call's
    bound arguments (by name, defaults applied; it may replace them, e.g. with something it
    loaded) and returns the network settings the call trains with, or None to share nothing."""

    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            call = signature.bind(*args, **kwargs)
            call.apply_defaults()
            train = train_of(call.arguments)
            if train is None:
                return function(*call.args, **call.kwargs)
            with cpu_share(train, call.arguments.get("progress")):
                return function(*call.args, **call.kwargs)

        return wrapper

    return decorate


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU. Under ``torchrun`` plain ``cuda`` means
    this process's own GPU (``cuda:LOCAL_RANK``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was requested but no CUDA GPU is available; use --device cpu or auto"
        )
    if name == "cuda" and distributed.active():
        return torch.device("cuda", distributed.local_rank())
    return torch.device(name)


#: Share of the machine's RAM a scan may fill with images and per-sample state by default.
MEMORY_FRACTION = 0.5
#: History epochs and networks assumed when images are placed before the trainer exists.
PLAN_WINDOW, PLAN_NETWORKS = 10, 1


def physical_memory() -> int:
    """Bytes of RAM of this machine (``MemTotal``; a fixed figure, so the default budget and the
    choices it makes are the same on every run)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30  # no way to ask: assume a small machine


def memory_budget(max_memory: int | None) -> int:
    """Bytes this process may fill with images and per-sample state: ``max_memory`` when given,
    else :data:`MEMORY_FRACTION` of the machine's RAM shared by the processes ``torchrun``
    started on it."""
    if max_memory is not None:
        return int(max_memory)
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return int(MEMORY_FRACTION * physical_memory() / processes)


def state_plan(
    num_samples: int, num_classes: int, window: int, networks: int, budget: int
) -> tuple[str, int]:
    """``(dtype name, bytes)`` of the per-sample state: the softmax history of ``window`` epochs,
    the epoch's softmax and a method's ``(networks, N, K)`` arrays, in float32 unless that would
    take more than a quarter of ``budget`` (then float16)."""
    float32_bytes = 4 * num_samples * num_classes * (window + 1 + networks)
    if float32_bytes > budget / 4:
        return "float16", float32_bytes // 2
    return "float32", float32_bytes


_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "K": 2**10,
    "KB": 2**10,
    "KIB": 2**10,
    "M": 2**20,
    "MB": 2**20,
    "MIB": 2**20,
    "G": 2**30,
    "GB": 2**30,
    "GIB": 2**30,
    "T": 2**40,
    "TB": 2**40,
    "TIB": 2**40,
}


def parse_memory_size(text: str, option: str = "--max-memory") -> int | None:
    """``"auto"`` -> None; ``"8GB"``, ``"512M"``, ``"1.5G"``, ``"1000000"`` -> bytes (binary units)."""
    cleaned = text.strip().upper().replace(" ", "")
    if cleaned == "AUTO":
        return None
    number = cleaned.rstrip("KMGTIB")
    unit = cleaned[len(number) :]
    try:
        value = float(number)
    except ValueError:
        value = float("nan")
    if unit not in _SIZE_UNITS or not math.isfinite(value) or value <= 0 or value * _SIZE_UNITS[unit] < 1:
        raise ConfigError(f"{option} must be 'auto' or a size such as 8GB, 512MB or 1.5G; got {text!r}")
    return int(value * _SIZE_UNITS[unit])


def format_size(num_bytes: float) -> str:
    """Bytes in the binary unit :func:`parse_memory_size` reads, with enough digits to tell sizes
    apart: ``1024`` -> ``"1.0 KB"``, ``3 * 2**30`` -> ``"3.0 GB"``, ``200`` -> ``"200 B"``."""
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if abs(num_bytes) >= size:
            value = num_bytes / size
            return f"{value:.3g} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{int(num_bytes)} B"
