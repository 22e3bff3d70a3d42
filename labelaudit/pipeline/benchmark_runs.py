"""One benchmark run measured: a ``labelaudit scan`` child process on a noisy manifest (its wall
time and peak memory its own), or cleanlab on the cv-ce run's out-of-fold probabilities; each
gives a row of ``results.csv`` (:mod:`labelaudit.pipeline.benchmark`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..audit.flags import audit_from_soft_labels, cv_flags
from ..audit.metrics import audit_truth_metrics, load_truth, ranking_metrics
from ..data._decode import die_with_parent, libc_prctl
from ..data.sources import SampleTable, read_table, table_from_rows
from ..errors import ConfigError
from ..reports import read_json, write_json


def measure_scan(
    data_dir: Path, run_dir: Path, method: str, seed: int, budget: float, scan_args: Sequence[str], env: dict
) -> dict:
    """Scan the noisy manifest in ``data_dir`` with ``method`` in a child process (reusing a finished
    run), with ``--budget budget`` and the extra ``scan_args``; return its results.csv metrics.

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
            str(budget),
            "--quiet",
            *scan_args,
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
    report = pd.read_parquet(run_dir / "report.parquet")
    is_noisy = truth_is_noisy(data_dir / "truth.csv", report["sample_id"])
    # The ranking the report gives: p_label_wrong (older runs: label_quality, lowest first).
    score = report["p_label_wrong"] if "p_label_wrong" in report else -report["label_quality"]
    return results_row(
        summary["truth"],
        ranking_metrics(score.to_numpy(dtype=float), is_noisy),
        timing["seconds"],
        timing["peak_memory_mb"],
    )


def truth_is_noisy(path: Path, sample_ids: pd.Series) -> np.ndarray:
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


def run_report_table(run_dir: Path, data_dir: Path) -> tuple[list, pd.DataFrame, SampleTable]:
    """``(class names, report, sample table)`` of a benchmark's scan run over the noisy dataset in
    ``data_dir``: the table rebuilt from the report's rows, in the report's order."""
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
    return names, report, table


def measure_cleanlab(data_dir: Path, run_dir: Path, cv_measured: dict) -> dict:
    """cleanlab's find_label_issues on the cv-ce run's out-of-fold probabilities, audited like a scan."""
    if cv_measured.get("error"):
        return {"error": "cv-ce run failed"}
    names, report, table = run_report_table(run_dir, data_dir)
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
    metrics = audit_truth_metrics(audit, given, true)
    # cleanlab's own ranking score is the self-confidence p_given.
    ranking = ranking_metrics(-probs[np.arange(len(given)), given], given != true)
    # The cv-ce training is shared: its time and memory plus cleanlab's own seconds.
    return results_row(
        metrics,
        ranking,
        cv_measured["seconds"] + time.perf_counter() - started,
        cv_measured["peak_memory_mb"],
    )


def results_row(truth: dict, ranking: dict, seconds: float, peak_memory_mb: float) -> dict:
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
        "ece_p_label_wrong": truth.get("ece_p_label_wrong"),
        "ece_suggested_confidence": truth.get("ece_suggested_confidence"),
        "seconds": seconds,
        "peak_memory_mb": peak_memory_mb,
        "error": "",
    }
