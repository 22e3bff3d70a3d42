"""``benchmark``: inject known noise into a clean dataset, scan it with several methods, and tabulate.

For every seed and noise setting the injected labels are written as a manifest (the images are
never copied), then each method runs as its own ``labelaudit scan`` process so that its wall time
and peak memory are its own. Results are appended to ``results.csv`` after every run, and a run
whose directory already holds a finished ``summary.json`` is reused, so an interrupted benchmark
resumes where it stopped (``benchmark.json`` records the source and scan settings; another
benchmark in the same folder is refused). ``cleanlab`` is not trained separately: it applies
``cleanlab.filter.find_label_issues`` to the out-of-fold probabilities of the ``cv-ce`` run, and
its AUROC/AUPRC use cleanlab's own ranking score, the self-confidence ``p_given``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import write_text
from ..audit.flags import audit_from_soft_labels, cv_flags
from ..audit.metrics import load_truth, ranking_metrics, truth_metrics
from ..data._decode import die_with_parent, libc_prctl
from ..data.images import ProgressCallback, cache_root
from ..data.sources import load_source, read_table, table_from_rows
from ..errors import ConfigError, OutputError
from ..reports import read_json, write_csv, write_json
from ..runs.directory import (
    FolderLock,
    check_not_input,
    check_output_folder,
    data_fingerprint,
    input_paths,
    output_kind,
    output_path,
    write_marker,
)
from .noise import KINDS, NAMED_MAPS, confusable_noise, inject_noise, read_map_file, write_noisy_dataset

SCAN_METHODS = ("nlnl", "pmnar", "ce", "gce", "truncated-gce", "cv-ce")
METHODS = (*SCAN_METHODS, "cleanlab")
#: ``labelaudit scan`` options that every benchmark run sets itself (see :func:`_run_scan`), which
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
# Columns of the per-run table, and the ones averaged over seeds.
METRICS = (
    "precision",
    "recall",
    "f1",
    "auroc",
    "auprc",
    "true_noise_rate",
    "estimated_noise_rate",
    "noise_rate_error",
    "model_estimated_noise_rate",
    "model_noise_rate_error",
    "transition_matrix_mae",
    "relabel_accuracy",
    "seconds",
    "peak_memory_mb",
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
        from ..train.trainer import check_budget

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
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Run every (seed, noise setting, method) and write ``results.csv`` and the summary tables.

    Returns the per-run table (one row per run).
    """
    config.validate()
    table = load_source(source, path_column=path_column, label_column=label_column)
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
        measured = _run_scan(data_dir, run_dir, method, seed, config, env)
        base = {"noise": setting.label, "kind": setting.kind, "rate": setting.rate, "seed": seed}
        if method in config.methods:
            rows.append({**base, "method": method, **measured})
        if method == "cv-ce" and "cleanlab" in config.methods:
            rows.append({**base, "method": "cleanlab", **_cleanlab_row(data_dir, run_dir, measured)})
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
    names = np.asarray(table.class_names, dtype=object)
    fingerprint = data_fingerprint(
        table.samples["sample_id"].tolist(), names[table.samples["given_label"].to_numpy()].tolist()
    )
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


def _run_scan(
    data_dir: Path, run_dir: Path, method: str, seed: int, config: BenchmarkConfig, env: dict
) -> dict:
    """Scan the noisy manifest in a child process (reusing a finished run); return its metrics.

    The child's log and timing sit beside its run directory (``<method>.log``,
    ``<method>.timing.json``): the run directory itself is the scan's, written whole or not at all.
    """
    timing_file = run_dir.with_name(f"{run_dir.name}.timing.json")
    log_file = run_dir.with_name(f"{run_dir.name}.log")
    if not (timing_file.is_file() and (run_dir / "summary.json").is_file()):
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        # --overwrite: a finished run whose timing was never recorded is redone.
        command = [
            sys.executable,
            "-m",
            "labelaudit",
            "scan",
            str(data_dir / "manifest.parquet"),
            "--method",
            method,
            "--truth",
            str(data_dir / "truth.csv"),
            "--out",
            str(run_dir),
            "--overwrite",
            "--seed",
            str(seed),
            "--budget",
            str(config.epochs_scale),
            "--quiet",
            *config.scan_args,
        ]
        started = time.perf_counter()
        # The child dies with this process (PR_SET_PDEATHSIG on Linux), as the decode workers do:
        # a killed benchmark leaves no scan running and holding its run's lock.
        prctl = libc_prctl()
        preexec = partial(die_with_parent, os.getpid(), prctl) if prctl is not None else None
        with open(log_file, "w") as log:
            child = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec
            )
            _, status, usage = os.wait4(child.pid, 0)  # the child's own peak memory, not the parent's
            child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        if child.returncode != 0:
            reason = failure_line(log_file.read_text(errors="replace"))
            return {"error": f"exit {child.returncode}: {reason}", "seconds": seconds}
        # ru_maxrss is in kilobytes on Linux, bytes on macOS.
        peak = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
        write_json(timing_file, {"seconds": seconds, "peak_memory_mb": peak, "command": command})
    timing = read_json(timing_file)
    summary = read_json(run_dir / "summary.json")
    report = pd.read_parquet(run_dir / "report.parquet", columns=["sample_id", "label_quality"])
    is_noisy = _truth_is_noisy(data_dir / "truth.csv", report["sample_id"])
    return _row(
        summary["truth"],
        ranking_metrics(-report["label_quality"].to_numpy(), is_noisy),
        timing["seconds"],
        timing["peak_memory_mb"],
    )


def _truth_is_noisy(path: Path, sample_ids: pd.Series) -> np.ndarray:
    """``is_noisy`` of every sample in ``sample_ids`` from the truth.csv that inject-noise wrote, ``(N,)``
    bool.

    Read as text (ids such as ``NA`` or ``None`` stay ids, formula-escaped cells are unescaped);
    ``is_noisy`` is ``True``/``False``. Raises :class:`ConfigError` when a sample has no row.
    """
    truth = read_table(path, "truth file")
    if not {"sample_id", "is_noisy"} <= set(truth.columns):
        raise ConfigError(
            f"truth file {str(path)!r} lacks a sample_id or is_noisy column; delete that data folder "
            "and run the benchmark again"
        )
    flags = (
        truth["is_noisy"]
        .astype(str)
        .str.strip()
        .str.lower()
        .map({"true": True, "false": False, "1": True, "0": False})
    )
    lookup = dict(zip(truth["sample_id"], flags))
    values = [lookup.get(sample_id) for sample_id in sample_ids]
    missing = [sample_id for sample_id, value in zip(sample_ids, values) if value is None or pd.isna(value)]
    if missing:
        raise ConfigError(
            f"truth file {str(path)!r} has no True/False is_noisy for {len(missing)} samples of the run "
            f"(first: {missing[0]!r}); delete that data folder and run the benchmark again"
        )
    return np.array(values, dtype=bool)


_BOX = set("╭╮╰╯─│┃━┏┓┗┛ ")


def failure_line(log: str) -> str:
    """The line of a failed child scan's output that says why it failed.

    Our own ``labelaudit: error: ...`` line (without the prefix); else the command-line parser's
    ``Error: ...`` line, or the text inside the box in which rich-formatted help frames it (its
    lines joined, borders dropped); else the last line of a traceback; else the last line that is
    not a box border.
    """
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for prefix in ("labelaudit: error:", "Error:"):
        for line in reversed(lines):
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
    boxed = [line.strip("│┃ ") for line in lines if line[0] in "│┃"]
    if boxed:
        return " ".join(part for part in boxed if part)
    text = [line for line in lines if not set(line) <= _BOX and line[0] not in "╭╰┏┗"]
    return text[-1] if text else "no output"


def _cleanlab_row(data_dir: Path, run_dir: Path, cv_measured: dict) -> dict:
    """cleanlab's find_label_issues on the cv-ce run's out-of-fold probabilities, audited like a scan."""
    if cv_measured.get("error"):
        return {"error": "cv-ce run failed"}
    names = read_json(run_dir / "summary.json")["class_names"]
    report = pd.read_parquet(run_dir / "report.parquet")
    table = table_from_rows(
        report["sample_id"].astype(str).tolist(),
        report["path"].astype(str).tolist(),
        report["given_label"].astype(str).tolist(),
        names,
        data_dir / "manifest.parquet",
        "parquet",
    )
    given = table.samples["given_label"].to_numpy()
    probs = report[[f"p_{n}" for n in names]].to_numpy(dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    started = time.perf_counter()
    try:
        flags, rule = cv_flags(probs, given, "cleanlab")
    except Exception as exc:  # missing extra or a third-party failure costs one row, not the benchmark
        return {"error": f"cleanlab failed: {exc}"}
    audit = audit_from_soft_labels(table, probs, flags=flags, flag_rule=rule)
    true = load_truth(data_dir / "truth.csv", table)
    metrics = truth_metrics(
        audit.report["suspected_noisy"].to_numpy(),
        given,
        true,
        audit.cleaned_labels,
        audit.noise_rate,
        audit.transition_matrix,
        model_noise_rate=audit.model_noise_rate,
    )
    # cleanlab's own ranking score is the self-confidence p_given.
    ranking = ranking_metrics(-probs[np.arange(len(given)), given], given != true)
    # The cv-ce training is shared: its time and memory plus cleanlab's own seconds.
    return _row(
        metrics,
        ranking,
        cv_measured["seconds"] + time.perf_counter() - started,
        cv_measured["peak_memory_mb"],
    )


def _row(truth: dict, ranking: dict, seconds: float, peak_memory_mb: float) -> dict:
    """One results.csv row from a run's truth metrics, ranking metrics, time and memory."""
    return {
        "precision": truth["precision"],
        "recall": truth["recall"],
        "f1": truth["f1"],
        **ranking,
        "true_noise_rate": truth["true_noise_rate"],
        "estimated_noise_rate": truth["estimated_noise_rate"],
        "noise_rate_error": truth["noise_rate_error"],
        "transition_matrix_mae": truth["transition_matrix_mae"],
        "model_estimated_noise_rate": truth.get("model_estimated_noise_rate"),
        "model_noise_rate_error": truth.get("model_noise_rate_error"),
        "relabel_accuracy": truth["relabel_accuracy_on_noisy_flagged"],
        "seconds": seconds,
        "peak_memory_mb": peak_memory_mb,
        "error": "",
    }


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (over seeds) of every metric per noise setting and method."""
    ok = results[results["error"].fillna("") == ""] if "error" in results else results
    if ok.empty:
        return pd.DataFrame(columns=["noise", "method", "seeds"])
    present = [m for m in METRICS if m in ok.columns]
    grouped = ok.groupby(["noise", "method"], sort=False)[present]
    mean = grouped.mean().add_suffix("_mean")
    std = grouped.std(ddof=1).add_suffix("_std")
    counts = grouped.size().rename("seeds")
    table = pd.concat([counts, mean, std], axis=1).reset_index()
    ordered = ["noise", "method", "seeds"] + [f"{m}_{s}" for m in present for s in ("mean", "std")]
    return table[ordered]


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a markdown table: mean ± std (std shown when there are several seeds)."""
    columns = [
        ("precision", "precision", 3),
        ("recall", "recall", 3),
        ("f1", "F1", 3),
        ("auroc", "AUROC", 3),
        ("auprc", "AUPRC", 3),
        ("true_noise_rate", "true noise", 3),
        ("estimated_noise_rate", "flagged share", 3),
        ("model_estimated_noise_rate", "model estimate", 3),
        ("transition_matrix_mae", "T MAE", 4),
        ("relabel_accuracy", "relabel acc.", 3),
        ("seconds", "seconds", 0),
        ("peak_memory_mb", "peak MB", 0),
    ]
    header = ["noise", "method", "seeds"] + [title for _, title, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.itertuples(index=False):
        row = row._asdict()
        cells = [row["noise"], row["method"], str(row["seeds"])]
        for key, _, digits in columns:
            mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
            if mean is None or pd.isna(mean):
                cells.append("-")
            elif row["seeds"] > 1 and not pd.isna(std):
                cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
            else:
                cells.append(f"{mean:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
