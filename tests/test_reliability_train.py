"""Issue 11, training and command-line side: a diverged network is never saved, JSON is strict,
bad settings and weights files get one-line errors, and what the commands print is not misleading.

Real files, real (tiny) networks and the real ``labelaudit`` command; no mocks.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import typer.main
from conftest import (
    make_folder_dataset,
    make_noisy_pattern_dataset,
    pattern_image,
    save_image,
)
from conftest import (
    run_cli as run,
)

from labelaudit.cli import app
from labelaudit.errors import ConfigError, TrainingError
from labelaudit.nets.models import build_model
from labelaudit.pipeline.benchmark import failure_line
from labelaudit.pipeline.scan import ScanConfig, scan, write_run
from labelaudit.reports import write_json
from labelaudit.train.methods.nlnl import NLNLConfig
from labelaudit.train.tensors import TensorData
from labelaudit.train.trainer import TrainConfig, Trainer

TINY = TrainConfig(width=8, flip=False, crop_padding=0)


def one_error_line(err: str) -> str:
    """The error line of ``err``, asserting it is the only line besides warnings (tiny test data warns)."""
    lines = [line for line in err.strip().splitlines() if not line.startswith("labelaudit: warning:")]
    assert len(lines) == 1 and lines[0].startswith("labelaudit: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _refuse(constant):
    raise ValueError(f"bare {constant} in JSON")


@pytest.fixture(scope="module")
def scan_run(tmp_path_factory):
    """A finished scan of 40 pattern images (one epoch per NLNL phase)."""
    base = tmp_path_factory.mktemp("nan")
    make_noisy_pattern_dataset(base / "data", per_class=10, noise_rate=0.2, seed=1)
    result = scan(
        base / "data", ScanConfig(train=TINY, nlnl=NLNLConfig(epochs=(1, 1, 1))), cache_dir=base / "cache"
    )
    return {"run": write_run(result, base / "scan"), "cache": base / "cache", "base": base}


# 1. Diverged training is an error, not a saved model; JSON is strict.


def test_diverged_retrain_stops_with_one_line_and_saves_nothing(scan_run, tmp_path, capsys):
    out = tmp_path / "retrained"
    # --mode forward: the 1-epoch fixture scan may flag a whole class, which pseudo mode refuses to learn
    # from.
    code, stdout, err = run(
        [
            "retrain",
            str(scan_run["run"]),
            "--lr",
            "1e30",
            "--epochs",
            "3",
            "--out",
            str(out),
            "--mode",
            "forward",
            "--cache-dir",
            str(scan_run["cache"]),
            "--quiet",
        ],
        capsys,
    )
    assert code == 2 and stdout == ""
    line = one_error_line(err)
    assert "diverged" in line and "learning rate 1e+30" in line and "--lr" in line
    assert not (out / "model.pt").exists() and not (out / "summary.json").exists()


def test_a_non_finite_loss_names_the_phase_and_epoch():
    images = torch.zeros(8, 1, 8, 8, dtype=torch.uint8)
    data = TensorData(images, torch.tensor([0, 1] * 4), 2, torch.zeros(1), torch.ones(1))
    trainer = Trainer(data, TINY)
    calls = {"n": 0}

    def loss(logits, labels, index, _):
        calls["n"] += 1  # finite in the first epoch, NaN from the second on
        value = torch.nn.functional.cross_entropy(logits, labels)
        return (value if calls["n"] == 1 else value * float("nan")), torch.tensor(len(index))

    with pytest.raises(
        TrainingError, match=r"diverged in phase 'warm-up' at epoch 2 of 4: the loss became nan"
    ):
        trainer.run_phase("warm-up", 4, 0.1, loss)
    assert [c["epoch"] for c in trainer.curves] == [1]  # the NaN epoch is not recorded as trained


def test_write_json_writes_null_for_nan_and_infinity(tmp_path):
    path = tmp_path / "x.json"
    write_json(
        path,
        {
            "a": float("nan"),
            "b": [np.float32("inf")],
            "c": {"d": np.float64("-inf"), "e": (1.5, np.int64(2))},
            "f": np.array([0.5, np.nan]),
        },
    )
    text = path.read_text()
    assert json.loads(text, parse_constant=_refuse) == {
        "a": None,
        "b": [None],
        "c": {"d": None, "e": [1.5, 2]},
        "f": [0.5, None],
    }


# 2. Bad settings and weights files: one line, our words.


@pytest.mark.parametrize("budget", ["inf", "nan", "0", "-1"])
def test_scan_budget_must_be_finite_and_positive(tmp_path, capsys, budget):
    root = make_folder_dataset(tmp_path / "data")
    code, _, err = run(
        ["scan", str(root), "--budget", budget, "--out", str(tmp_path / "run"), "--quiet"], capsys
    )
    assert code == 2
    assert (
        "--budget must be a finite number > 0 (1 = the default schedule, 0.5 = half of it); got "
        f"{float(budget)!r}" in one_error_line(err)
    )
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="--budget must be a finite number"):
        ScanConfig(epochs_scale=float(budget)).validate()


@pytest.mark.parametrize("command", ["scan", "benchmark"])
def test_the_old_epochs_scale_option_says_it_was_renamed(tmp_path, capsys, command):
    root = make_folder_dataset(tmp_path / "data")
    code, _, err = run(
        [command, str(root), "--epochs", "0.5", "--out", str(tmp_path / "out"), "--quiet"], capsys
    )
    assert code == 2
    line = one_error_line(err)
    assert f"{command} --epochs was renamed --budget" in line and "pass --budget 0.5 instead" in line
    assert not (tmp_path / "out").exists()


def _whole_module(path):
    torch.save(torch.nn.Linear(2, 2), path)


WEIGHTS_FILES = {
    "text": (lambda p: p.write_text("these are not weights\n"), "is not a file written by torch.save"),
    "tensor": (lambda p: torch.save(torch.zeros(3), p), "holds a Tensor, not a state_dict"),
    "module": (_whole_module, "holds pickled Python objects (e.g. a whole model), not a plain state_dict"),
    "checkpoint": (
        lambda p: torch.save({"model": {"w": torch.zeros(1)}, "epoch": 3}, p),
        "holds a dict with keys ['model', 'epoch'] whose values are not all tensors",
    ),
}


@pytest.mark.parametrize("kind", list(WEIGHTS_FILES))
def test_a_weights_file_that_is_not_a_state_dict_is_one_line(tmp_path, kind):
    write, expected = WEIGHTS_FILES[kind]
    path = tmp_path / f"{kind}.pth"
    write(path)
    with pytest.raises(ConfigError) as info:
        build_model("resnet18", 3, 4, weights=str(path))
    message = str(info.value)
    assert expected in message and "torch.save(model.state_dict()" in message
    assert "\n" not in message and "weights_only=False" not in message


def test_scan_with_a_pickled_model_as_weights_is_one_line(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "data")
    _whole_module(tmp_path / "model.pth")
    code, _, err = run(
        [
            "scan",
            str(root),
            "--backbone",
            "resnet18",
            "--weights",
            str(tmp_path / "model.pth"),
            "--out",
            str(tmp_path / "run"),
            "--workers",
            "1",
            "--quiet",
        ],
        capsys,
    )
    assert code == 2 and "holds pickled Python objects" in one_error_line(err)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_weights_file_of_another_architecture_is_refused(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(
        ConfigError, match=r"does not match resnet18 \(parameters resnet18 does not have: \['layer1.2"
    ):
        build_model("resnet18", 3, 4, weights=str(tmp_path / "r34.pth"))


def test_torchvision_weights_offline_say_how_to_pass_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached weights
    try:
        build_model("resnet18", 3, 4, weights="IMAGENET1K_V1")
    except ConfigError as exc:
        message = str(exc)
    else:
        pytest.skip("the ImageNet weights could be downloaded here: the offline message cannot be tested")
    assert message.startswith("cannot download the resnet18 weights IMAGENET1K_V1 (")
    assert (
        "download https://download.pytorch.org/models/resnet18-f37072fd.pth on a machine with internet"
        in message
    )
    assert message.endswith("pass the file with --weights path.pth") and "\n" not in message


# 3a. Every "[default: ...]" written in a help text is shown by --help.


def _squash(text: str) -> str:
    """Help text without box borders and whitespace, so line wrapping does not matter."""
    return re.sub(r"[\s│╭╮╰╯─]+", "", text)


def test_every_default_in_help_texts_is_shown(capsys):
    group = typer.main.get_command(app)
    checked = 0
    for name, command in group.commands.items():
        code, out, _ = run([name, "--help"], capsys)
        assert code == 0
        for param in command.params:
            for default in re.findall(r"\\?\[default: ([^\]]+)\]", getattr(param, "help", None) or ""):
                assert _squash(f"[default: {default}]") in _squash(out), (name, param.name, default)
                checked += 1
    assert checked >= 13
    code, out, _ = run(["scan", "--help"], capsys)
    assert _squash("[default: ./labelaudit-runs/<source>-<time>]") in _squash(out)  # where runs go
    assert "[default: auto]" in out  # Typer's own
    assert "--epochs" not in out and "--budget" in out  # the renamed option is hidden
    code, out, _ = run(["retrain", "--help"], capsys)
    assert "[default: 30; x>=1]" in out  # Typer's own, with the range


# 3b. A benchmark whose every run failed exits non-zero with the child's reason.


@pytest.mark.parametrize(
    "option, reason",
    [
        ("--width=abc", "Invalid value for '--width'"),  # the command-line parser's usage error
        ("--device=tpu", "device must be auto, cpu or cuda; got 'tpu'"),  # our own one-line error
    ],
)
def test_benchmark_whose_runs_all_failed_exits_2_with_the_reason(tmp_path, capsys, option, reason):
    root = make_folder_dataset(tmp_path / "data", per_class=5)
    out = tmp_path / "bench"
    code, _, err = run(
        [
            "benchmark",
            str(root),
            "--out",
            str(out),
            "--methods",
            "ce",
            "--budget",
            "0.05",
            f"--scan-option={option}",
            "--quiet",
        ],
        capsys,
    )
    assert code == 2
    line = one_error_line(err)
    assert "all 1 benchmark runs failed" in line and reason in line
    stored = pd.read_csv(out / "results.csv")["error"].iloc[0]
    assert reason in stored and not set(stored) & set("╭╮╰╯─│")


def test_failure_line_picks_the_meaningful_line():
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: out of memory\n'
    assert failure_line(traceback) == "RuntimeError: out of memory"
    assert failure_line("noise\nlabelaudit: error: bad thing; fix it\n") == "bad thing; fix it"
    assert (
        failure_line("Usage: x\nTry 'x --help' for help.\n\nError: No such option: --y\n")
        == "No such option: --y"
    )
    boxed = "Usage: x\n╭─ Error ─────╮\n│ Invalid value for    │\n│ '--x': 'y'.  │\n╰─────────────╯\n"
    assert failure_line(boxed) == "Invalid value for '--x': 'y'."
    assert failure_line("") == "no output"


# 3c. A missing cleanlab is found before any training.


@pytest.fixture
def no_cleanlab(monkeypatch):
    """Make ``import cleanlab`` fail in this process, whether or not it is installed."""
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)


def test_scan_with_the_cleanlab_flagger_checks_cleanlab_first(tmp_path, capsys, isolated_cache, no_cleanlab):
    root = make_folder_dataset(tmp_path / "data")
    code, _, err = run(
        [
            "scan",
            str(root),
            "--method",
            "cv-ce",
            "--flagger",
            "cleanlab",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
        capsys,
    )
    assert code == 2 and "pip install 'labelaudit[cleanlab]'" in one_error_line(err)
    assert not any(isolated_cache.iterdir())  # nothing was even decoded, let alone trained
    assert not (tmp_path / "run").exists()


def test_benchmark_with_cleanlab_checks_cleanlab_first(tmp_path, capsys, no_cleanlab):
    root = make_folder_dataset(tmp_path / "data")
    code, _, err = run(
        ["benchmark", str(root), "--methods", "ce,cleanlab", "--out", str(tmp_path / "bench")], capsys
    )
    assert code == 2 and "pip install 'labelaudit[cleanlab]'" in one_error_line(err)
    assert not (tmp_path / "bench").exists()


# 3d + 3e. A fully flagged class shows no T[i,i]; small classes are named on stderr.


def test_fully_flagged_class_shows_no_t_entry_and_small_classes_are_warned_about(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    # Same pattern under both labels: the network can only learn the prior (30 vs 4), so every
    # "rare" image scores below 0.5 for its label and is flagged, and no "common" one is.
    for name, count in (("rare", 4), ("common", 30)):
        for i in range(count):
            save_image(root / name / f"{i:02d}.png", pattern_image("blob", rng))
    out = tmp_path / "run"
    code, stdout, err = run(
        [
            "scan",
            str(root),
            "--method",
            "ce",
            "--budget",
            "0.1",
            "--batch-size",
            "8",
            "--threshold",
            "0.5",
            "--width",
            "8",
            "--workers",
            "1",
            "--out",
            str(out),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    report = pd.read_csv(out / "report.csv")
    cleaned = np.where(report["suspected_noisy"], report["suggested_label"], report["given_label"])
    assert report.loc[report["given_label"] == "rare", "suspected_noisy"].all() and "rare" not in set(cleaned)

    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in stdout.splitlines()
        if line.startswith("│ rare ") or line.startswith("│ common ")
    }
    # the expected share of wrong labels, and T expected under the posteriors: a class whose
    # images are all disputed keeps little of itself (was "1.00", an identity row, before)
    rare_wrong = report.loc[report["given_label"] == "rare", "p_label_wrong"].mean()
    assert rows["rare"][:2] == ["4", f"{rare_wrong:.1%}"]
    assert rare_wrong > 0.5
    assert rows["rare"][2] == "-" or float(rows["rare"][2]) < 0.5
    assert float(rows["common"][2]) > 0.5

    warning = [line for line in err.splitlines() if line.startswith("labelaudit: warning:")]
    assert warning == [
        "labelaudit: warning: fewer than 10 images in class 'rare' (4); their flags and noise rates "
        "rest on too few samples to trust"
    ]
    summary = json.loads((out / "summary.json").read_text(), parse_constant=_refuse)
    # Same in the summary: the rare row keeps little of itself (was 0.0 from the identity row).
    assert summary["transition_matrix"]["per_class_noise_rates"]["rare"] > 0.5
    # common: 1 - T[common, common] of the expected T (was 4 / 34 from the cleaned labels)
    assert 0 < summary["transition_matrix"]["per_class_noise_rates"]["common"] < 0.2
