"""Training speed of the default network: the scan's loop against a bare forward + backward.

For each precision (float32, and bfloat16 autocast where the CPU computes it in hardware) it
prints images per second of

- ``bare``: forward, cross-entropy, backward and SGD step on one fixed batch (the ceiling);
- ``loop``: :meth:`labelaudit.train.trainer.Trainer.run_phase` with the NL loss on the real images
  (batch assembly, augmentation, normalisation, softmax history, per-epoch checks included);

and the loop's time split by stage (measured by repeating each stage alone on the same batches).

Usage: python scripts/bench_training_speed.py [--source sample_data/fashion_mnist_noisy/images] [--epochs 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from labelaudit.data.images import load_images
from labelaudit.data.sources import load_source
from labelaudit.nets.models import build_model
from labelaudit.train.compute import cpu_has_fast_bfloat16
from labelaudit.train.methods.nlnl import class_weights, nl_loss
from labelaudit.train.tensors import TensorData
from labelaudit.train.trainer import TrainConfig, Trainer


def bare_rate(data: TensorData, precision: str, steps: int = 40, repeats: int = 3) -> float:
    """Images/s of forward + loss + backward + step on one fixed normalised batch (best of
    ``repeats`` timings of ``steps`` steps, after 20 warm-up steps)."""
    torch.manual_seed(0)
    model = build_model("cifar-resnet", data.channels, data.num_classes, depth=8, width=16).to(
        memory_format=torch.channels_last
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = (
        (data.images[:128].float() / 255 - data.mean.view(1, -1, 1, 1)) / data.std.view(1, -1, 1, 1)
    ).contiguous(memory_format=torch.channels_last)
    y = data.labels[:128]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        with autocast:
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(20):
        step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, time.perf_counter() - start)
    return 128 * steps / best


def loop_rate(data: TensorData, precision: str, epochs: int) -> tuple[float, Trainer]:
    """Images/s of Trainer.run_phase with the NL loss (NLNL's first phase)."""
    trainer = Trainer(data, TrainConfig(precision=precision))
    weights = class_weights(data.labels, data.num_classes)
    everyone = torch.ones(len(data))

    def negative(logits, labels, index, mask):
        probs = torch.softmax(logits, dim=1)
        complementary = torch.ones_like(probs, dtype=torch.bool)
        complementary[torch.arange(len(labels)), labels] = False
        return nl_loss(probs, complementary, labels, weights, mask[index])

    trainer.run_phase("warm-up", 1, 0.1, negative, lambda _: everyone)
    start = time.perf_counter()
    trainer.run_phase("NL", epochs, 0.1, negative, lambda _: everyone)
    return len(data) * epochs / (time.perf_counter() - start), trainer


def stage_seconds(trainer: Trainer, batches: int = 40) -> dict[str, float]:
    """Per-batch seconds of each stage of the loop, each repeated alone."""
    index = torch.randperm(len(trainer.data), generator=torch.Generator().manual_seed(0))[:128]
    batch = trainer.batches.images[index]
    out: dict[str, float] = {}

    def timed(name, fn):
        fn()
        start = time.perf_counter()
        for _ in range(batches):
            fn()
        out[name] = (time.perf_counter() - start) / batches

    timed("gather batch", lambda: trainer.batches.images[index])
    timed("augment", lambda: trainer.batches.augment(batch))
    timed("normalise", lambda: trainer.normalize(batch))
    x = trainer.normalize(trainer.batches.augment(batch))
    trainer.model.train()

    def forward_backward():
        with trainer.autocast():
            logits = trainer.model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), trainer.labels[index])
        trainer.model.zero_grad(set_to_none=True)
        loss.backward()

    timed("forward + backward", forward_backward)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default="sample_data/fashion_mnist_noisy/images")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    store = load_images(load_source(args.source))
    data = TensorData.from_store(store)
    print(
        f"{len(data)} images {tuple(data.images.shape[1:])}, {torch.get_num_threads()} threads, "
        f"bfloat16 in hardware: {cpu_has_fast_bfloat16()}"
    )
    precisions = ["fp32"] + (["bf16"] if cpu_has_fast_bfloat16() else [])
    for precision in precisions:
        loop, trainer = loop_rate(data, precision, args.epochs)
        bare = bare_rate(data, precision)
        stages = stage_seconds(trainer)
        per_batch = 128 / loop
        print(
            f"{precision}: bare forward+backward+step {bare:,.0f} img/s; training loop {loop:,.0f} img/s "
            f"({loop / bare:.0%} of bare)"
        )
        print(
            "   per batch of 128: "
            + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in stages.items())
            + f"; whole loop step {per_batch * 1e3:.2f} ms"
        )


if __name__ == "__main__":
    main()
