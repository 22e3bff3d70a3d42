"""retrain, predict and evaluate end to end on generated images with known noise."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PATTERN_CLASSES, make_noisy_pattern_dataset, pattern_image, save_image

from labelaudit.cli import main
from labelaudit.errors import ConfigError, DatasetError, ManifestError
from labelaudit.pipeline.predict import evaluate, predict
from labelaudit.pipeline.retrain import RetrainConfig, load_run, retrain, write_retrain
from labelaudit.pipeline.scan import ScanConfig, scan, write_run
from labelaudit.train.checkpoint import load_model
from labelaudit.train.methods.baselines import BaselineConfig
from labelaudit.train.methods.nlnl import NLNLConfig
from labelaudit.train.trainer import TrainConfig

# No augmentation: plain CE then memorises the wrong labels of 240 images (test accuracy ~0.73),
# which is the failure retrain exists to avoid.
TRAIN = TrainConfig(width=16, seed=0, flip=False, crop_padding=0)
# No similarity search: these tests measure retrain on the audit of label flips alone (on these
# random patterns it calls 3 of 240 images outliers, which moves T and the forward mode a little).
SCAN = ScanConfig(train=TRAIN, nlnl=NLNLConfig(epochs=(6, 6, 6)), similarity=False)
RETRAIN = RetrainConfig(epochs=20)


def make_clean_test_set(root, per_class: int = 40, seed: int = 99):
    rng = np.random.default_rng(seed)
    for name in PATTERN_CLASSES:
        for i in range(per_class):
            save_image(root / name / f"test_{i:03d}.png", pattern_image(name, rng))
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    base = tmp_path_factory.mktemp("retrain")
    cache = base / "cache"
    train_root = base / "data"
    make_noisy_pattern_dataset(train_root, per_class=60, noise_rate=0.4, seed=3)
    test_root = make_clean_test_set(base / "test")
    run_dir = write_run(scan(train_root, SCAN, cache_dir=cache), base / "scan")
    return {"base": base, "cache": cache, "train": train_root, "test": test_root, "run": run_dir}


@pytest.fixture(scope="module")
def pseudo(workspace):
    result = retrain(workspace["run"], RETRAIN, test=workspace["test"], cache_dir=workspace["cache"])
    return result, write_retrain(result, workspace["base"] / "pseudo")


def test_retrain_beats_plain_ce_on_clean_held_out_images(workspace, pseudo):
    result, _ = pseudo
    # Plain CE on the noisy labels with the same number of epochs as scan + retrain (18 + 2 x 20).
    ce_scan = scan(
        workspace["train"],
        ScanConfig(method="ce", train=TRAIN, baseline=BaselineConfig(epochs=58)),
        cache_dir=workspace["cache"],
    )
    ce_dir = write_run(ce_scan, workspace["base"] / "ce")
    ce_accuracy = evaluate(ce_dir, workspace["test"], cache_dir=workspace["cache"])["accuracy"]
    print(f"retrain {result.test['accuracy']:.3f} vs ce {ce_accuracy:.3f}")
    assert result.test["accuracy"] >= ce_accuracy + 0.1
    assert result.test["accuracy"] >= 0.9


def test_retrain_outputs_and_schemas(workspace, pseudo):
    result, out = pseudo
    assert {p.name for p in out.iterdir()} == {
        ".labelaudit-output.json",
        "model.pt",
        "cleaned_labels.csv",
        "cleaned_labels.parquet",
        "summary.json",
        "config.json",
    }
    cleaned = pd.read_parquet(out / "cleaned_labels.parquet")
    assert cleaned.columns.tolist() == [
        "sample_id",
        "path",
        "given_label",
        "cleaned_label",
        "changed",
        "confidence",
        "in_training",
    ]
    assert (cleaned["changed"] == (cleaned["given_label"] != cleaned["cleaned_label"])).all()
    report = pd.read_parquet(workspace["run"] / "report.parquet")
    # relabel=flagged: only samples the scan flagged may change, and kept ones keep their label.
    assert not cleaned.loc[~report["suspected_noisy"].to_numpy(), "changed"].any()
    assert cleaned["confidence"].between(0, 1).all()
    pd.testing.assert_frame_equal(pd.read_csv(out / "cleaned_labels.csv"), cleaned, check_dtype=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "retrain" and summary["mode"] == "pseudo"
    curves = summary["training_curves"]
    assert list(curves) == ["kept samples", "soft labels"]
    assert [len(c) for c in curves.values()] == [20, 20]
    assert curves["soft labels"][-1]["loss"] < curves["soft labels"][0]["loss"]
    test = summary["test"]
    assert test["num_samples"] == 160 and sum(r["samples"] for r in test["per_class"].values()) == 160
    assert np.array(test["confusion_matrix"]).sum() == 160


def test_model_loads_with_weights_only_and_predicts_like_the_trainer(workspace, pseudo):
    result, out = pseudo
    checkpoint = torch.load(out / "model.pt", weights_only=True)
    assert checkpoint["class_names"] == sorted(PATTERN_CLASSES) == list(result.run.class_names)
    model = load_model(out)
    predictions = predict(model, workspace["test"], cache_dir=workspace["cache"]).frame
    assert len(predictions) == 160
    probs = predictions[[f"p_{c}" for c in sorted(PATTERN_CLASSES)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    true = predictions["sample_id"].str.split("/").str[0]
    assert (predictions["predicted_label"] == true).mean() == pytest.approx(result.test["accuracy"])


def test_drop_and_forward_modes_learn_the_clean_classes(workspace, tmp_path):
    for mode in ("drop", "forward"):
        result = retrain(
            workspace["run"],
            RetrainConfig(mode=mode, epochs=20),
            test=workspace["test"],
            cache_dir=workspace["cache"],
        )
        cleaned = result.cleaned
        if mode == "drop":
            assert cleaned["in_training"].sum() == (~result.run.flagged).sum()
            assert len(result.curves["kept samples"]) == 20
        else:
            assert cleaned["in_training"].all() and not cleaned["changed"].any()
        print(mode, result.test["accuracy"])
        assert result.test["accuracy"] >= 0.9


def test_forward_mode_corrects_with_the_scans_transition_matrix(workspace, tmp_path):
    # Same run, T replaced by the identity: forward correction becomes plain CE and the model differs.
    identity_run = tmp_path / "identity"
    shutil.copytree(workspace["run"], identity_run)
    t_file = identity_run / "transition_matrix.csv"
    matrix = pd.read_csv(t_file, index_col=0)
    assert np.abs(matrix.to_numpy() - np.eye(4)).max() > 0.05
    pd.DataFrame(np.eye(4), index=matrix.index, columns=matrix.columns).to_csv(t_file)
    config = RetrainConfig(mode="forward", epochs=1)
    with_t = retrain(workspace["run"], config, cache_dir=workspace["cache"]).trainer.curves[0]["loss"]
    plain = retrain(identity_run, config, cache_dir=workspace["cache"]).trainer.curves[0]["loss"]
    assert with_t != pytest.approx(plain, rel=1e-3)


def test_a_class_flagged_entirely_is_a_clear_error(workspace, tmp_path):
    run = tmp_path / "all-flagged"
    shutil.copytree(workspace["run"], run)
    report = pd.read_parquet(run / "report.parquet")
    report.loc[report["given_label"] == "blob", "suspected_noisy"] = True
    report.to_parquet(run / "report.parquet", index=False)
    with pytest.raises(ConfigError, match="flagged every sample given class 'blob'"):
        retrain(run, RetrainConfig(epochs=1), cache_dir=workspace["cache"])


def test_out_folder_holding_a_scan_is_refused_before_training(workspace, tmp_path):
    with pytest.raises(ConfigError, match="is one of the inputs"):
        retrain(
            workspace["run"], RetrainConfig(epochs=1), out_dir=workspace["run"], cache_dir=workspace["cache"]
        )


def test_retrain_is_deterministic(workspace):
    config = RetrainConfig(epochs=2)
    a = retrain(workspace["run"], config, cache_dir=workspace["cache"])
    b = retrain(workspace["run"], config, cache_dir=workspace["cache"])
    pd.testing.assert_frame_equal(a.cleaned, b.cleaned)
    for key, value in a.trainer.model.state_dict().items():
        assert torch.equal(value, b.trainer.model.state_dict()[key])


def test_wrong_run_directories_give_clear_errors(workspace, tmp_path, pseudo):
    with pytest.raises(ConfigError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    shutil.copytree(workspace["run"], partial)
    (partial / "report.parquet").unlink()
    with pytest.raises(ConfigError, match="missing report.parquet"):
        load_run(partial)
    other = tmp_path / "other-version"
    shutil.copytree(workspace["run"], other)
    summary = json.loads((other / "summary.json").read_text())
    summary["format_version"] = 99
    (other / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match="format version 99"):
        load_run(other)
    with pytest.raises(ConfigError, match="retrain's run directory"):
        load_run(pseudo[1])


def test_run_whose_images_are_gone_is_refused(tmp_path):
    root = tmp_path / "data"
    make_noisy_pattern_dataset(root, per_class=10, noise_rate=0.2, seed=1)
    run = write_run(scan(root, ScanConfig(train=TRAIN, nlnl=NLNLConfig(epochs=(1, 1, 1)))), tmp_path / "scan")
    victim = next((root / "blob").iterdir())
    victim.unlink()
    with pytest.raises(DatasetError, match="no longer exist"):
        load_run(run)


def run_cli(argv, capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_cli_retrain_predict_evaluate(workspace, tmp_path, capsys):
    out = tmp_path / "retrained"
    code, stdout, _ = run_cli(
        [
            "retrain",
            str(workspace["run"]),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--test",
            str(workspace["test"]),
            "--cache-dir",
            str(workspace["cache"]),
            "--json",
        ],
        capsys,
    )
    assert code == 0
    summary = json.loads(stdout)
    assert summary["run_dir"] == str(out) and 0 <= summary["test"]["accuracy"] <= 1

    predictions = tmp_path / "preds.parquet"
    code, stdout, _ = run_cli(
        [
            "predict",
            str(out / "model.pt"),
            str(workspace["test"]),
            "--out",
            str(predictions),
            "--quiet",
            "--cache-dir",
            str(workspace["cache"]),
        ],
        capsys,
    )
    assert code == 0 and "Predicted 160 images" in stdout
    frame = pd.read_parquet(predictions)
    assert frame.columns[:4].tolist() == ["sample_id", "path", "predicted_label", "confidence"]
    assert len(frame) == 160

    code, stdout, _ = run_cli(
        ["evaluate", str(out), str(workspace["test"]), "--json", "--cache-dir", str(workspace["cache"])],
        capsys,
    )
    metrics = json.loads(stdout)
    assert metrics["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    code, stdout, _ = run_cli(
        ["evaluate", str(out), str(workspace["test"]), "--quiet", "--cache-dir", str(workspace["cache"])],
        capsys,
    )
    assert code == 0 and f"Accuracy on 160 images: {metrics['accuracy']:.2%}" in stdout
    assert "most often mistaken for" in stdout and all(name in stdout for name in PATTERN_CLASSES)
    assert np.array(metrics["confusion_matrix"]).shape == (4, 4)


def test_cli_errors_are_one_line(workspace, tmp_path, capsys):
    for argv, expected in (
        (["retrain", str(tmp_path / "missing")], "does not exist"),
        (["evaluate", str(tmp_path / "missing.pt"), str(workspace["test"])], "no model file"),
    ):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and err.strip().count("\n") == 0 and expected in err
    # A test set with a class the model does not know.
    odd = tmp_path / "odd"
    save_image(odd / "zebra" / "z.png", pattern_image("blob", np.random.default_rng(0)))
    code, _, err = run_cli(
        ["evaluate", str(workspace["run"]), str(odd), "--cache-dir", str(workspace["cache"])], capsys
    )
    assert code == 2 and "'zebra' is not one of the given classes" in err


def test_predict_reads_unlabelled_folders_and_manifests_and_skips_bad_files(workspace, tmp_path):
    rng = np.random.default_rng(5)
    loose = tmp_path / "new"
    save_image(loose / "a.png", pattern_image("vertical", rng))
    save_image(loose / "deeper" / "b.png", pattern_image("blob", rng))
    # other size: resized like a scan would
    save_image(loose / "c.png", pattern_image("checker", rng, size=24))
    (loose / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (loose / "notes.txt").write_text("not an image")
    result = predict(workspace["run"], loose, cache_dir=workspace["cache"])
    assert sorted(result.frame["sample_id"]) == ["a.png", "c.png", "deeper/b.png"]
    assert sorted(zip(result.skipped["sample_id"], result.skipped["reason"])) == [
        ("broken.png", "corrupt"),
        ("notes.txt", "unsupported_extension"),
    ]
    with pytest.raises(ConfigError, match="inside the input folder"):
        predict(workspace["run"], loose, cache_dir=workspace["cache"], out_file=loose / "predictions.csv")

    manifest = tmp_path / "list.csv"
    pd.DataFrame({"file": ["new/a.png", "new/c.png"], "label": ["ignored", "ignored"]}).to_csv(
        manifest, index=False
    )
    frame = predict(workspace["run"], manifest, cache_dir=workspace["cache"]).frame
    repeated = tmp_path / "repeated.csv"
    pd.DataFrame({"id": ["x", "x"], "file": ["new/a.png", "new/c.png"]}).to_csv(repeated, index=False)
    with pytest.raises(ManifestError, match="repeats the id 'x'"):
        predict(workspace["run"], repeated, cache_dir=workspace["cache"])
    assert frame["sample_id"].tolist() == ["new/a.png", "new/c.png"]
    np.testing.assert_allclose(
        frame["confidence"].to_numpy(),
        result.frame.set_index("sample_id").loc[["a.png", "c.png"], "confidence"].to_numpy(),
        rtol=1e-5,
    )


def test_model_files_that_are_not_ours_are_refused(tmp_path, workspace):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable labelaudit model"):
        load_model(junk)
    checkpoint = torch.load(workspace["run"] / "model.pt", weights_only=True)
    checkpoint["format_version"] = 7
    torch.save(checkpoint, tmp_path / "future.pt")
    with pytest.raises(ConfigError, match="format version 7"):
        load_model(tmp_path / "future.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not a labelaudit model"):
        load_model(tmp_path / "other.pt")
