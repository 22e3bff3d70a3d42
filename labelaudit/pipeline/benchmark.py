"""``benchmark``: inject known noise into a clean dataset, scan it with several methods, and tabulate.

For every seed and noise setting the injected labels are written as a manifest (the images are
never copied), then each method runs as its own ``labelaudit scan`` process so that its wall time
and peak memory are its own. Results are appended to ``results.csv`` after every run, and a run
whose directory already holds a finished ``summary.json`` is reused, so an interrupted benchmark
resumes where it stopped (``benchmark.json`` records the source and scan settings; another
benchmark in the same folder is refused). ``cleanlab`` is not trained separately: it applies
``cleanlab.filter.find_label_issues`` to the out-of-fold probabilities of the ``cv-ce`` run, and
its AUROC/AUPRC use cleanlab's own ranking score, the self-confidence ``p_given``.

One run is measured in :mod:`labelaudit.pipeline.benchmark_runs`; the summary tables are made in
:mod:`labelaudit.pipeline.benchmark_tables`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from .._atomic import write_text
from ..data.images import ProgressCallback, cache_root
from ..data.sources import load_source
from ..errors import ConfigError, OutputError
from ..reports import read_json, write_csv, write_json
from ..runs.directory import (
    FolderLock,
    check_not_input,
    check_output_folder,
    input_paths,
    output_kind,
    output_path,
    write_marker,
)
from ..runs.fingerprints import table_fingerprint

# The `name as name` imports keep names importable from here, where they were defined before the split.
from .benchmark_runs import failure_line as failure_line
from .benchmark_runs import measure_cleanlab, measure_scan
from .benchmark_tables import METRICS as METRICS
from .benchmark_tables import markdown_table, summarise
from .noise import KINDS, NAMED_MAPS, confusable_noise, inject_noise, read_map_file
from .noisy_dataset import write_noisy_dataset

SCAN_METHODS = ("nlnl", "pmnar", "ce", "gce", "truncated-gce", "cv-ce")
METHODS = (*SCAN_METHODS, "cleanlab")
#: ``labelaudit scan`` options that every benchmark run sets itself (see
#: :func:`~labelaudit.pipeline.benchmark_runs.measure_scan`), which
#: ``--scan-option`` may not repeat: the last one given would win and, for ``--out``, replace a
#: folder outside the benchmark.
OWNED_SCAN_OPTIONS = (
    "--out",
    "-o",
    "--truth",
    "--overwrite",
    "--json",
    "--seed",
    "--method",
    "--budget",
    "--epochs",
    "--quiet",
    "-q",
)


@dataclass(frozen=True)
class NoiseSetting:
    kind: str
    rate: float

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.rate:g}"


def parse_noise(spec: str) -> list[NoiseSetting]:
    """``"symm-exc:0.2,asymm:0.4"`` -> settings."""
    settings = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        kind, _, rate = part.partition(":")
        try:
            value = float(rate)
        except ValueError:
            raise ConfigError(f"noise setting {part!r} must look like KIND:RATE, e.g. symm-exc:0.2") from None
        if kind not in KINDS or not 0 <= value <= 1:
            raise ConfigError(f"noise setting {part!r}: kind must be one of {list(KINDS)} and rate in [0, 1]")
        settings.append(NoiseSetting(kind, value))
    if not settings:
        raise ConfigError("--noise needs at least one KIND:RATE setting")
    return settings


def parse_methods(spec: str) -> list[str]:
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"unknown method {unknown[0] if unknown else spec!r}; choose from {list(METHODS)}")
    if "cleanlab" in methods:
        from ..audit.flags import require_cleanlab

        require_cleanlab()  # now, not after the cv-ce runs it would read
    return list(dict.fromkeys(methods))


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to run. ``scan_args`` are extra ``labelaudit scan`` options given to every method
    (e.g. ``["--width", "16"]``), so every method gets the same backbone."""

    settings: tuple[NoiseSetting, ...]
    methods: tuple[str, ...]
    seeds: int = 1
    noise_map: str | None = None  # for asymm settings
    epochs_scale: float = 1.0
    scan_args: tuple[str, ...] = field(default_factory=tuple)

    def validate(self) -> "BenchmarkConfig":
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1; got {self.seeds!r}")
        if any(s.kind == "asymm" for s in self.settings) and self.noise_map is None:
            raise ConfigError("asymm noise needs --map (cifar10, fashion-mnist, mnist or a CSV file)")
        from ..train.schedule import check_budget

        check_budget(self.epochs_scale)
        for arg in self.scan_args:
            owned = _owned_scan_option(arg)
            if owned is not None:
                raise ConfigError(
                    f"--scan-option {arg!r} sets {owned}, which benchmark sets itself for every run (it owns "
                    f"{', '.join(OWNED_SCAN_OPTIONS)}); drop it (use benchmark's own --out, --budget, "
                    "--seeds)"
                )
        return self


def _owned_scan_option(arg: str) -> str | None:
    """The option of :data:`OWNED_SCAN_OPTIONS` that the command-line word ``arg`` sets, or None.

    ``--out=X`` and ``--out`` (its value in the next word) set ``--out``; short options are
    judged by their first letter (``-oX``, ``-qo X``; scan's only short options are ours).
    """
    word = arg.strip()
    if word.startswith("--"):
        name = re.split(r"[=\s]", word, maxsplit=1)[0]
    elif word.startswith("-") and len(word) > 1:
        name = word[:2]
    else:
        return None
    return name if name in OWNED_SCAN_OPTIONS else None


def run_benchmark(
    source: str | os.PathLike,
    config: BenchmarkConfig,
    out_dir: str | os.PathLike,
    *,
    path_column: str | None = None,
    label_column: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    label_names: Sequence[str] | str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Run every (seed, noise setting, method) and write ``results.csv`` and the summary tables.

    Returns the per-run table (one row per run).
    """
    config.validate()
    table = load_source(
        source,
        path_column=path_column,
        label_column=label_column,
        label_names=label_names,
        cache_dir=cache_dir,
    )
    inputs = input_paths(
        table, [cache_root(cache_dir), None if config.noise_map in NAMED_MAPS else config.noise_map]
    )
    out = check_not_input(output_path(out_dir), inputs)
    if any(s.kind == "asymm" for s in config.settings) and config.noise_map not in NAMED_MAPS:
        # fails now, not after hours of training
        _, full_t = read_map_file(config.noise_map, table.class_names)
        if full_t is not None:
            raise ConfigError(
                "benchmark needs a from,to map for asymm noise (its rate comes from --noise); "
                "a full T file works with inject-noise"
            )
    # A benchmark folder fills up run by run (and resumes), so it is not swapped in whole; instead
    # it is locked while running, and a non-empty folder must be an earlier benchmark's.
    with BenchmarkLock(out):
        return _run_jobs(out, table, config, cache_dir, progress)


def _run_jobs(out: Path, table, config: BenchmarkConfig, cache_dir, progress) -> pd.DataFrame:
    _check_resumable(out, table, config)
    labels = table.samples["given_label"].to_numpy()
    scan_methods = [
        m for m in SCAN_METHODS if m in config.methods or (m == "cv-ce" and "cleanlab" in config.methods)
    ]
    jobs = [
        (seed, setting, method)
        for seed in range(config.seeds)
        for setting in config.settings
        for method in scan_methods
    ]
    rows: list[dict] = []
    env = dict(os.environ)
    if cache_dir is not None:
        env["LABELAUDIT_CACHE_DIR"] = str(cache_root(cache_dir).resolve())
    for done, (seed, setting, method) in enumerate(jobs):
        if progress:
            progress("benchmark", done, len(jobs), f"{method} {setting.label} seed {seed}")
        data_dir = out / "data" / f"{_slug(setting)}-seed{seed}"
        if not (data_dir / "noise.json").is_file():
            if setting.kind == "confusable":
                noisy = confusable_noise(table, setting.rate, seed=seed, cache_dir=cache_dir)
            else:
                noisy = inject_noise(
                    labels,
                    table.class_names,
                    setting.kind,
                    setting.rate,
                    noise_map=config.noise_map if setting.kind == "asymm" else None,
                    seed=seed,
                )
            write_noisy_dataset(table, noisy, data_dir)
        run_dir = out / "runs" / f"{_slug(setting)}-seed{seed}" / method
        measured = measure_scan(data_dir, run_dir, method, seed, config.epochs_scale, config.scan_args, env)
        base = {"noise": setting.label, "kind": setting.kind, "rate": setting.rate, "seed": seed}
        if method in config.methods:
            rows.append({**base, "method": method, **measured})
        if method == "cv-ce" and "cleanlab" in config.methods:
            rows.append({**base, "method": "cleanlab", **measure_cleanlab(data_dir, run_dir, measured)})
        write_csv(out / "results.csv", pd.DataFrame(rows))
    if progress:
        progress("benchmark", len(jobs), len(jobs), "done")
    results = pd.DataFrame(rows)
    write_summary(results, out, config, table)
    return results


class BenchmarkLock:
    """The run-directory lock (:mod:`labelaudit.runs.directory`) on a benchmark folder, which is checked
    and created under the lock: new, empty, or an earlier benchmark (never a foreign folder)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._lock = FolderLock(out, "--out")

    def __enter__(self) -> "BenchmarkLock":
        if output_kind(self.out) != "benchmark":
            check_output_folder(self.out, "benchmark", overwrite=True)  # a file or a foreign folder: raises
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
            if output_kind(self.out) != "benchmark":  # again, under the lock
                check_output_folder(self.out, "benchmark", overwrite=True)
            self.out.mkdir(exist_ok=True)
            if output_kind(self.out) is None:  # new or empty: mark it as a benchmark folder
                write_marker(self.out, "benchmark", entries=[])
            probe = self.out / ".write-test"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            self._lock.release()
            raise OutputError(
                f"cannot write --out {str(self.out)!r} ({exc.strerror or exc}); pass a folder you can write "
                "to"
            ) from None
        return self

    def __exit__(self, *exc_info) -> None:
        self._lock.release()


def _check_resumable(out: Path, table, config: BenchmarkConfig) -> None:
    """Finished runs are reused only when they were made from the same data and scan settings.

    The data is identified by its source, sample count and :func:`~labelaudit.runs.directory.data_fingerprint`
    (sample ids and given labels in table order): images moved between class folders change it.
    """
    fingerprint = table_fingerprint(table)
    identity = {
        "source": str(table.source),
        "num_samples": len(table),
        "noise_map": str(config.noise_map),
        "epochs_scale": config.epochs_scale,
        "scan_args": list(config.scan_args),
        "data_fingerprint": fingerprint,
    }
    marker = out / "benchmark.json"
    if marker.exists():
        try:
            previous = read_json(marker)
            problem = (
                None if isinstance(previous, dict) else f"a JSON {type(previous).__name__}, not an object"
            )
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
            problem = f"cannot be read as JSON: {getattr(exc, 'strerror', None) or exc}"
        if problem is not None:
            raise OutputError(
                f"--out {str(out)!r} holds a benchmark.json that is not a benchmark's settings ({problem}); "
                "its runs "
                "cannot be reused: pass a new --out (or delete that folder)"
            )
        differing = [k for k in identity if previous.get(k) != identity[k]]
        if differing:
            raise ConfigError(
                f"{str(out)!r} holds a benchmark with other {', '.join(differing)}; its runs cannot be "
                "reused: "
                "pass a new --out (or delete that folder)"
            )
    else:
        write_json(marker, identity)


def _slug(setting: NoiseSetting) -> str:
    return f"{setting.kind}-{setting.rate:g}"


def write_summary(results: pd.DataFrame, out: Path, config: BenchmarkConfig, table) -> None:
    """``summary.csv``, ``summary.md`` and ``summary.json`` from the per-run table."""
    summary = summarise(results)
    write_csv(out / "summary.csv", summary)
    write_text(out / "summary.md", markdown_table(summary))
    write_json(
        out / "summary.json",
        {
            "source": str(table.source),
            "num_samples": len(table),
            "class_names": list(table.class_names),
            "config": {**asdict(config), "settings": [s.label for s in config.settings]},
            "summary": json.loads(summary.to_json(orient="records")),
            "runs": json.loads(results.to_json(orient="records")),
        },
    )
