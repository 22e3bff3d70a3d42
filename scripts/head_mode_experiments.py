"""Compare methods and heads on a pretrained backbone's cached embeddings (docs/pretrained.md).

Embeds SOURCE once (or reuses the cache), then trains each setting on the embeddings and prints
flag F1, precision, recall, the estimated and true noise rate, and seconds after embedding.

Usage:
  python scripts/head_mode_experiments.py noisy30/manifest.parquet noisy30/truth.csv \
      method=gce method=nlnl method=nlnl,head=mlp method=cv-ce method=gce,budget=2
Each setting is comma-separated key=value: method, head (linear|mlp), budget, backbone
(default efficientnet_lite0), weights.
"""

from __future__ import annotations

import sys
import time

from labelaudit.audit.flags import audit_from_soft_labels, cv_flags
from labelaudit.audit.metrics import audit_truth_metrics, load_truth
from labelaudit.data.images import load_images
from labelaudit.data.sources import load_source
from labelaudit.pipeline.scan import ScanConfig, _train
from labelaudit.train.inputs import backbone_embeddings
from labelaudit.train.tensors import TensorData
from labelaudit.train.trainer import TrainConfig


def main(source: str, truth: str, settings: list[str]) -> None:
    store = load_images(load_source(source))
    table = store.table
    given = table.samples["given_label"].to_numpy()
    true = load_truth(truth, table)
    cached: dict = {}
    for setting in settings:
        options = dict(item.split("=", 1) for item in setting.split(","))
        method, budget = options.pop("method", "gce"), float(options.pop("budget", 1))
        train = TrainConfig(
            backbone=options.pop("backbone", "efficientnet_lite0"),
            weights=options.pop("weights", None),
            head=options.pop("head", "linear"),
        )
        if options:
            raise SystemExit(f"unknown keys in {setting!r}: {sorted(options)}")
        key = (train.backbone, train.weights)
        if key not in cached:
            cached[key] = backbone_embeddings(store, train).features
        data = TensorData.from_features(cached[key], given, table.num_classes)
        started = time.perf_counter()
        soft = _train(data, ScanConfig(method=method, epochs_scale=budget, train=train), None).soft_labels
        flags = rule = None
        if method == "cv-ce":
            flags, rule = cv_flags(soft, given, "confident-learning")
        audit = audit_from_soft_labels(table, soft, flags=flags, flag_rule=rule)
        m = audit_truth_metrics(audit, given, true)
        print(
            f"{setting:40s} F1 {m['f1']:.3f}  precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
            f"noise rate {audit.noise_rate:.3f} (true {m['true_noise_rate']:.3f})  "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
