"""inject-noise, the ranking metrics and the benchmark command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_folder_dataset, make_noisy_pattern_dataset

from labelaudit.audit.metrics import detection_metrics, ranking_metrics
from labelaudit.cli import main
from labelaudit.errors import ConfigError
from labelaudit.pipeline.benchmark import (
    BenchmarkConfig,
    markdown_table,
    parse_methods,
    parse_noise,
    run_benchmark,
    summarise,
)
from labelaudit.pipeline.noise import inject_noise, resolve_named_map
from labelaudit.runs.directory import write_marker

FASHION = (
    "T-shirt-top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle-boot",
)


def balanced_labels(per_class=200, k=10):
    return np.repeat(np.arange(k), per_class)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.6])
def test_symm_exc_hits_the_rate_and_never_keeps_the_label(rate):
    labels = balanced_labels(per_class=1000)
    noisy = inject_noise(labels, FASHION, "symm-exc", rate, seed=1)
    assert noisy.real_rate == pytest.approx(rate, abs=0.001)
    chosen = noisy.is_noisy
    assert (noisy.noisy_labels[chosen] != labels[chosen]).all()
    # Every class loses the same share, and wrong labels spread over all other classes.
    t = noisy.transition_matrix()
    np.testing.assert_allclose(np.diag(t), 1 - rate, atol=0.003)
    if rate > 0:
        assert (t[~np.eye(10, dtype=bool)] > 0).all()


def test_symm_inc_real_rate_is_below_the_request():
    labels = balanced_labels(per_class=1000)
    noisy = inject_noise(labels, FASHION, "symm-inc", 0.5, seed=0)
    # Redrawn over all 10 classes, a tenth of the chosen keep their label: real rate ~ 0.5 * 0.9.
    assert noisy.real_rate == pytest.approx(0.45, abs=0.01)


def test_asymm_flips_only_mapped_classes_to_their_target():
    labels = balanced_labels()
    noisy = inject_noise(labels, FASHION, "asymm", 0.4, noise_map="fashion-mnist", seed=2)
    mapping = {FASHION.index(a): FASHION.index(b) for a, b in noisy.mapping.items()}
    assert mapping == {9: 7, 7: 5, 2: 6, 4: 3, 3: 4}
    for c in range(10):
        changed = noisy.noisy_labels[(labels == c) & noisy.is_noisy]
        if c in mapping:
            assert (changed == mapping[c]).all() and len(changed) == 80
        else:
            assert len(changed) == 0
    assert noisy.real_rate == pytest.approx(0.2)  # 5 of 10 classes at 40%


def test_named_maps_match_names_loosely_or_integer_classes():
    assert resolve_named_map("cifar10", tuple(str(i) for i in range(10)))[:2] == [(9, 1), (2, 0)]
    cifar = ("airplane", "Automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert resolve_named_map("cifar10", cifar)[0] == (9, 1)
    with pytest.raises(ConfigError, match="does not have"):
        resolve_named_map("cifar10", ("cat", "dog"))


def test_full_transition_matrix_from_csv(tmp_path):
    names = ("a", "b", "c")
    t = np.array([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0], [0.1, 0.1, 0.8]])
    pd.DataFrame(t, index=pd.Index(names, name="true"), columns=names).to_csv(tmp_path / "t.csv")
    labels = np.repeat(np.arange(3), 100)
    noisy = inject_noise(labels, names, "asymm", None, noise_map=tmp_path / "t.csv", seed=0)
    np.testing.assert_allclose(noisy.transition_matrix(), t)
    pd.DataFrame({"from": ["a"], "to": ["c"]}).to_csv(tmp_path / "map.csv", index=False)
    mapped = inject_noise(labels, names, "asymm", 0.5, noise_map=tmp_path / "map.csv", seed=0)
    assert mapped.real_rate == pytest.approx(50 / 300)
    broken = pd.DataFrame(t, index=pd.Index(names, name="true"), columns=names).astype(object)
    broken.iloc[0, 1] = "lots"
    broken.to_csv(tmp_path / "broken.csv")
    with pytest.raises(ConfigError, match="not a number"):
        inject_noise(labels, names, "asymm", None, noise_map=tmp_path / "broken.csv")
    pd.DataFrame({"from": ["a"], "to": ["zebra"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ConfigError, match="zebra"):
        inject_noise(labels, names, "asymm", 0.5, noise_map=tmp_path / "bad.csv")


def test_same_seed_same_noise_other_seed_other_noise():
    labels = balanced_labels()
    a = inject_noise(labels, FASHION, "symm-exc", 0.3, seed=5).noisy_labels
    assert (a == inject_noise(labels, FASHION, "symm-exc", 0.3, seed=5).noisy_labels).all()
    assert (a != inject_noise(labels, FASHION, "symm-exc", 0.3, seed=6).noisy_labels).any()


def test_ranking_metrics_by_hand():
    # Scores 4 3 2 1 with noisy = T F T F: pairs (noisy above clean) = (4>3, 4>1, 2>1) of 4 -> 0.75.
    # AP: ranks 1 (P=1) and 3 (P=2/3) -> (1 + 2/3) / 2.
    m = ranking_metrics(np.array([4.0, 3, 2, 1]), np.array([True, False, True, False]))
    assert m["auroc"] == pytest.approx(0.75) and m["auprc"] == pytest.approx((1 + 2 / 3) / 2)
    # A tie between a noisy and a clean sample counts half; AP takes the tied pair as one threshold.
    m = ranking_metrics(np.array([1.0, 1.0, 0.0]), np.array([True, False, False]))
    assert m["auroc"] == pytest.approx(0.75) and m["auprc"] == pytest.approx(0.5)
    perfect = ranking_metrics(np.array([0.9, 0.8, 0.1]), np.array([True, True, False]))
    assert perfect == {"auroc": 1.0, "auprc": 1.0}
    assert ranking_metrics(np.array([1.0, 2.0]), np.array([True, True])) == {"auroc": None, "auprc": None}


def test_detection_metrics_by_hand():
    m = detection_metrics(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 1, 0, 1], bool))
    assert (m["precision"], m["recall"]) == pytest.approx((2 / 3, 2 / 3)) and m["f1"] == pytest.approx(2 / 3)


def test_parse_settings_and_methods():
    assert [s.label for s in parse_noise("symm-exc:0.2, asymm:0.4")] == ["symm-exc:0.2", "asymm:0.4"]
    for bad in ("symm:0.2", "symm-exc", "symm-exc:1.5", ""):
        with pytest.raises(ConfigError):
            parse_noise(bad)
    assert parse_methods("nlnl,ce,nlnl") == ["nlnl", "ce"]
    with pytest.raises(ConfigError, match="unknown method"):
        parse_methods("nlnl,magic")


def test_summary_mean_and_spread():
    runs = pd.DataFrame(
        {"noise": ["s:0.2"] * 3, "method": ["a", "a", "b"], "f1": [0.8, 0.6, 0.5], "error": ["", "", ""]}
    )
    summary = summarise(runs)
    a = summary[summary["method"] == "a"].iloc[0]
    assert (
        a["seeds"] == 2
        and a["f1_mean"] == pytest.approx(0.7)
        and a["f1_std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    )
    assert "0.700 ± 0.141" in markdown_table(summary)


def test_inject_noise_cli_writes_manifest_truth_and_leaves_images(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "clean", classes=("a", "b", "c"), per_class=10)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in root.rglob("*.png"))
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "inject-noise",
                str(root),
                "--kind",
                "symm-exc",
                "--rate",
                "0.3",
                "--out",
                str(tmp_path / "noisy"),
            ]
        )
    assert exit_info.value.code == 0
    assert "real noise rate 30.00%" in capsys.readouterr().out
    manifest = pd.read_parquet(tmp_path / "noisy" / "manifest.parquet")
    truth = pd.read_csv(tmp_path / "noisy" / "truth.csv")
    assert (manifest["label"] != truth["true_label"]).sum() == 9 == truth["is_noisy"].sum()
    assert sorted((p.name, p.stat().st_mtime_ns) for p in root.rglob("*.png")) == before
    info = json.loads((tmp_path / "noisy" / "noise.json").read_text())
    assert info["real_rate"] == pytest.approx(0.3)
    with pytest.raises(SystemExit) as exit_info:
        main(["inject-noise", str(root), "--kind", "asymm", "--rate", "0.3", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "needs --map" in capsys.readouterr().err


def test_benchmark_asymm_map_and_cleanlab_on_cv_ce_probabilities(tmp_path):
    pytest.importorskip("cleanlab")
    root = tmp_path / "clean"
    make_noisy_pattern_dataset(root, per_class=40, noise_rate=0.0, seed=0)
    pd.DataFrame({"from": ["horizontal", "checker"], "to": ["vertical", "blob"]}).to_csv(
        tmp_path / "map.csv", index=False
    )
    config = BenchmarkConfig(
        settings=tuple(parse_noise("asymm:0.4")),
        methods=("cleanlab",),
        seeds=1,
        noise_map=str(tmp_path / "map.csv"),
        epochs_scale=0.2,
        scan_args=("--width", "8"),
    )
    results = run_benchmark(root, config, tmp_path / "bench")
    assert results["method"].tolist() == ["cleanlab"] and results["error"].tolist() == [""]
    assert results["true_noise_rate"].iloc[0] == pytest.approx(0.2)  # 2 of 4 classes at 40%
    assert 0 <= results["f1"].iloc[0] <= 1 and results["auroc"].notna().all()
    noisy = pd.read_csv(tmp_path / "bench" / "data" / "asymm-0.4-seed0" / "truth.csv")
    flips = set(map(tuple, noisy.loc[noisy["is_noisy"], ["true_label", "given_label"]].values))
    assert flips == {("horizontal", "vertical"), ("checker", "blob")}


def test_benchmark_refuses_bad_maps_and_other_settings_in_the_same_folder(tmp_path):
    root = tmp_path / "clean"
    make_noisy_pattern_dataset(root, per_class=5, noise_rate=0.0, seed=0)
    config = BenchmarkConfig(
        settings=tuple(parse_noise("asymm:0.4")), methods=("ce",), noise_map=str(tmp_path / "none.csv")
    )
    with pytest.raises(ConfigError, match="does not exist"):
        run_benchmark(root, config, tmp_path / "bench")
    (tmp_path / "bench").mkdir()
    write_marker(tmp_path / "bench", "benchmark", entries=[])  # an earlier benchmark's folder
    (tmp_path / "bench" / "benchmark.json").write_text(
        json.dumps(
            {
                "source": str(root.resolve()),
                "num_samples": 20,
                "noise_map": "None",
                "epochs_scale": 0.5,
                "scan_args": [],
            }
        )
    )
    other = BenchmarkConfig(settings=tuple(parse_noise("symm-exc:0.2")), methods=("ce",), epochs_scale=1.0)
    with pytest.raises(ConfigError, match="other epochs_scale"):
        run_benchmark(root, other, tmp_path / "bench")


def test_benchmark_end_to_end_and_resume(tmp_path):
    root = tmp_path / "clean"
    make_noisy_pattern_dataset(root, per_class=40, noise_rate=0.0, seed=0)
    config = BenchmarkConfig(
        settings=tuple(parse_noise("symm-exc:0.3")),
        methods=("nlnl", "ce"),
        seeds=2,
        epochs_scale=0.1,
        scan_args=("--width", "8"),
    )
    seen = []
    results = run_benchmark(root, config, tmp_path / "bench", progress=lambda *a: seen.append(a))
    assert len(results) == 4 and (results["error"] == "").all()
    assert results["true_noise_rate"].tolist() == pytest.approx([0.3] * 4)
    assert results[["auroc", "auprc", "f1"]].notna().all().all()
    assert (results["peak_memory_mb"] > 50).all() and (results["seconds"] > 0).all()
    assert seen[0][:3] == ("benchmark", 0, 4) and "nlnl symm-exc:0.3 seed 0" in seen[0][3]
    summary = pd.read_csv(tmp_path / "bench" / "summary.csv")
    assert summary[["noise", "method", "seeds"]].values.tolist() == [
        ["symm-exc:0.3", "nlnl", 2],
        ["symm-exc:0.3", "ce", 2],
    ]
    assert "± " in (tmp_path / "bench" / "summary.md").read_text()
    # A second call reuses every finished run (same numbers, no new training).
    again = run_benchmark(root, config, tmp_path / "bench")
    pd.testing.assert_frame_equal(again, results)
