"""inject-noise --kind confusable (instance-dependent noise) and --flips (the user's own noise)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_noisy_pattern_dataset, run_cli

from labelaudit.data.sources import load_source
from labelaudit.errors import ConfigError
from labelaudit.pipeline.benchmark import parse_noise
from labelaudit.pipeline.noise import (
    confusable_noise,
    confusion_probabilities,
    inclusion_probabilities,
    inject_noise,
    systematic_sample,
)


def test_inclusion_probabilities_are_proportional_capped_and_sum_to_the_count():
    weight = np.array([0.0, 0.01, 0.02, 0.04, 0.5, 0.9, 0.95])
    p = inclusion_probabilities(weight, 3)
    assert p.sum() == pytest.approx(3.0) and (p <= 1 + 1e-9).all() and p[0] == 0
    assert p[-1] == pytest.approx(1.0) and p[-2] == pytest.approx(1.0)  # saturated
    unsaturated = p < 1 - 1e-9
    ratios = p[unsaturated & (weight > 0)] / weight[unsaturated & (weight > 0)]
    np.testing.assert_allclose(ratios, ratios[0])  # the rest share one scale


def test_systematic_sample_draws_the_exact_count_with_the_given_probabilities():
    p = inclusion_probabilities(np.linspace(0.0, 1.0, 40) ** 2, 10)
    counts = np.zeros(len(p))
    for seed in range(3000):
        chosen = systematic_sample(p, np.random.default_rng(seed))
        assert len(chosen) == 10 and len(set(chosen)) == 10
        counts[chosen] += 1
    np.testing.assert_allclose(counts / 3000, p, atol=0.03)


def test_confusable_moves_exactly_the_rate_to_the_most_probable_other_class():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 250)
    confusion = rng.dirichlet(np.ones(4) * 0.3, size=len(labels))
    names = ("a", "b", "c", "d")
    noisy = inject_noise(labels, names, "confusable", 0.3, confusion=confusion, seed=4)
    assert noisy.is_noisy.sum() == 300 and noisy.kind == "confusable"
    others = confusion.copy()
    others[np.arange(len(labels)), labels] = -1
    moved = noisy.is_noisy
    assert (noisy.noisy_labels[moved] == others.argmax(1)[moved]).all()
    # Ambiguous images (a strong other class) are flipped more often than clear ones.
    strength = others.max(1)
    assert strength[moved].mean() > strength[~moved].mean() + 0.1
    again = inject_noise(labels, names, "confusable", 0.3, confusion=confusion, seed=4)
    assert (again.noisy_labels == noisy.noisy_labels).all()
    assert (
        inject_noise(labels, names, "confusable", 0.3, confusion=confusion, seed=5).noisy_labels
        != noisy.noisy_labels
    ).any()
    with pytest.raises(ConfigError, match="go with --kind confusable"):
        inject_noise(labels, names, "confusable", 0.3, seed=4)
    one_hot = np.eye(4)[labels]
    with pytest.raises(ConfigError, match="lower --rate"):
        inject_noise(labels, names, "confusable", 0.3, confusion=one_hot, seed=4)


def test_confusion_classifier_reads_real_images_out_of_fold(tmp_path):
    root = tmp_path / "clean"
    make_noisy_pattern_dataset(root, per_class=30, noise_rate=0.0, seed=0)
    table = load_source(root)
    noisy = confusable_noise(table, 0.2, seed=0)
    assert noisy.recipe["folds"] == 5 and noisy.recipe["skipped_images"] == 0
    assert noisy.recipe["out_of_fold_accuracy"] > 0.6  # four pattern classes: chance is 0.25
    assert noisy.is_noisy.sum() == round(0.2 * len(table))
    assert noisy.flip_probability.sum() == pytest.approx(0.2 * len(table))


def test_confusion_probabilities_are_deterministic():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0)
    a, _ = confusion_probabilities(x, y, 4)
    b, recipe = confusion_probabilities(x, y, 4)
    np.testing.assert_array_equal(a, b)
    assert recipe["out_of_fold_accuracy"] > 0.8 and np.allclose(a.sum(1), 1)


def test_inject_noise_cli_confusable_and_flips(tmp_path, capsys):
    root = tmp_path / "clean"
    make_noisy_pattern_dataset(root, per_class=20, noise_rate=0.0, seed=0)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in root.rglob("*"))
    code, out, _ = run_cli(
        [
            "inject-noise",
            str(root),
            "--kind",
            "confusable",
            "--rate",
            "0.25",
            "-q",
            "--out",
            str(tmp_path / "conf"),
        ],
        capsys,
    )
    assert code == 0 and "real noise rate 25.00%" in out and "out-of-fold accuracy" in out
    truth = pd.read_csv(tmp_path / "conf" / "truth.csv")
    assert truth["is_noisy"].sum() == 20 and "flip_probability" in truth
    info = json.loads((tmp_path / "conf" / "noise.json").read_text())
    assert info["kind"] == "confusable" and info["recipe"]["classifier"].startswith("multinomial logistic")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in root.rglob("*")) == before

    first = truth.iloc[0]
    pd.DataFrame(
        {"sample_id": [first["sample_id"]], "label": ["blob" if first["true_label"] != "blob" else "checker"]}
    ).to_csv(tmp_path / "flips.csv", index=False)
    code, out, _ = run_cli(
        ["inject-noise", str(root), "--flips", str(tmp_path / "flips.csv"), "--out", str(tmp_path / "mine")],
        capsys,
    )
    assert code == 0 and "Flipped 1 of 80" in out
    mine = pd.read_csv(tmp_path / "mine" / "truth.csv")
    assert mine["is_noisy"].tolist() == [True] + [False] * 79
    assert json.loads((tmp_path / "mine" / "noise.json").read_text())["kind"] == "table"

    for rows, message in [
        ({"sample_id": ["nope.png"], "label": ["blob"]}, "not in the dataset"),
        ({"sample_id": [first["sample_id"]], "label": ["zebra"]}, "not a class"),
        ({"sample_id": [first["sample_id"]], "target": ["blob"]}, "needs a sample_id"),
    ]:
        pd.DataFrame(rows).to_csv(tmp_path / "bad.csv", index=False)
        code, _, err = run_cli(
            ["inject-noise", str(root), "--flips", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "bad")],
            capsys,
        )
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()
    code, _, err = run_cli(
        [
            "inject-noise",
            str(root),
            "--flips",
            str(tmp_path / "flips.csv"),
            "--rate",
            "0.2",
            "--out",
            str(tmp_path / "bad"),
        ],
        capsys,
    )
    assert code != 0 and "leave out --kind, --rate" in err


def test_benchmark_accepts_confusable_settings():
    assert [s.label for s in parse_noise("confusable:0.2,symm-exc:0.4")] == ["confusable:0.2", "symm-exc:0.4"]


def test_confusion_probabilities_do_not_depend_on_the_thread_count():
    import torch

    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 64))
    y = (x[:, :3].sum(1) > 0).astype(int) + 2 * (x[:, 3] > 0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = confusion_probabilities(x, y, 4)
        torch.set_num_threads(2)
        two, _ = confusion_probabilities(x, y, 4)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(one, two)
    assert torch.get_num_threads() == before


def test_confusable_refuses_to_empty_a_class():
    labels = np.array([0] * 50 + [1] * 50 + [2])
    confusion = np.full((len(labels), 3), 0.01)
    confusion[np.arange(len(labels)), labels] = 0.98
    confusion[-1] = [0.9, 0.05, 0.05]  # the one image of class 2 looks like class 0
    with pytest.raises(ConfigError, match="moves every image of class 'c'"):
        inject_noise(labels, ("a", "b", "c"), "confusable", 0.3, confusion=confusion, seed=0)


def test_flips_by_relative_path_and_a_class_name_that_lost_its_space(tmp_path, capsys):
    from conftest import make_folder_dataset

    root = make_folder_dataset(tmp_path / "data", classes=("cat ", "dog"), per_class=3)
    first = sorted(root.glob("cat */*.png"))[0]
    (tmp_path / "lists").mkdir()
    relative = f"../data/{first.parent.name}/{first.name}"
    pd.DataFrame({"path": [relative], "label": ["dog"]}).to_csv(tmp_path / "lists" / "flips.csv", index=False)
    code, out, err = run_cli(
        [
            "inject-noise",
            str(root),
            "--flips",
            str(tmp_path / "lists" / "flips.csv"),
            "--out",
            str(tmp_path / "o1"),
        ],
        capsys,
    )
    assert code == 0, err
    dog = sorted(root.glob("dog/*.png"))[0]
    pd.DataFrame({"sample_id": [f"dog/{dog.name}"], "label": ["cat"]}).to_csv(
        tmp_path / "f2.csv", index=False
    )
    code, out, err = run_cli(
        ["inject-noise", str(root), "--flips", str(tmp_path / "f2.csv"), "--out", str(tmp_path / "o2")],
        capsys,
    )
    assert code == 0, err
    truth = pd.read_csv(tmp_path / "o2" / "truth.csv", dtype=str, keep_default_na=False)
    assert truth.loc[truth["is_noisy"] == "True", "given_label"].tolist() == ["cat "]


def test_map_is_refused_with_confusable(tmp_path, capsys):
    root = tmp_path / "clean"
    make_noisy_pattern_dataset(root, per_class=5, noise_rate=0.0, seed=0)
    code, _, err = run_cli(
        [
            "inject-noise",
            str(root),
            "--kind",
            "confusable",
            "--rate",
            "0.2",
            "--map",
            "cifar10",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 2 and "--map applies to --kind asymm only" in err and not (tmp_path / "o").exists()
