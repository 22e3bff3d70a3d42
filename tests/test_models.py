"""Backbones: shapes for grayscale and RGB, depth rule, local weights files, weight-name errors."""

from __future__ import annotations

import pytest
import torch
import torchvision

from labelaudit.errors import ConfigError
from labelaudit.nets.models import CifarResNet, build_model, default_backbone


@pytest.mark.parametrize("channels", [1, 3])
def test_cifar_resnet_shapes(channels):
    model = build_model("cifar-resnet", channels, 7, depth=14, width=8)
    assert model(torch.zeros(2, channels, 28, 28)).shape == (2, 7)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) > 10


def test_cifar_resnet_depth_rule():
    with pytest.raises(ConfigError, match=r"depth must be 6n\+2"):
        CifarResNet(3, 10, depth=10)


def test_torchvision_backbone_accepts_grayscale():
    model = build_model("resnet18", 1, 5)
    model.eval()
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 5)


def test_local_weights_file_is_loaded_except_the_head(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    torch.nn.init.constant_(source.conv1.weight, 0.123)
    path = tmp_path / "r18.pt"
    torch.save(source.state_dict(), path)
    model = build_model("resnet18", 3, 4, weights=str(path))
    features, classifier = model.model  # the pretrained network without its head, then a fresh linear layer
    assert torch.allclose(features.conv1.weight, torch.full_like(features.conv1.weight, 0.123))
    assert classifier.out_features == 4


def test_weights_errors():
    with pytest.raises(ConfigError, match="unknown weights 'NOPE' for resnet18"):
        build_model("resnet18", 3, 4, weights="NOPE")
    with pytest.raises(ConfigError, match="does not exist"):
        build_model("resnet18", 3, 4, weights="/no/such/file.pt")
    with pytest.raises(ConfigError, match="applies to pretrained backbones"):
        build_model("cifar-resnet", 3, 4, weights="IMAGENET1K_V1")
    with pytest.raises(ConfigError, match="backbone must be one of"):
        build_model("vgg", 3, 4)


def test_default_backbone_by_image_size():
    assert default_backbone(28) == "cifar-resnet" and default_backbone(64) == "cifar-resnet"
    assert default_backbone(128) == "resnet18"


@pytest.mark.parametrize("batch", [33, 105])
def test_narrow_network_trains_on_odd_batches(batch):
    """torch's CPU channels_last backward segfaults for < 16 channels and odd batches; the
    Trainer must avoid that layout for narrow networks (a crash here kills the test run)."""
    from labelaudit.train.tensors import TensorData
    from labelaudit.train.trainer import TrainConfig, Trainer

    images = torch.randint(0, 256, (batch, 1, 16, 16), dtype=torch.uint8)
    data = TensorData(images, torch.arange(batch) % 3, 3, torch.tensor([0.5]), torch.tensor([0.25]))
    trainer = Trainer(data, TrainConfig(width=8, batch_size=128))
    assert trainer.memory_format == torch.contiguous_format
    trainer.run_phase(
        "t",
        1,
        0.1,
        lambda logits, labels, index, ctx: (
            torch.nn.functional.cross_entropy(logits, labels),
            torch.tensor(len(index)),
        ),
    )
    assert trainer.history.filled == 1


def test_precision_is_resolved_per_device_and_input():
    from labelaudit.train.compute import cpu_has_fast_bfloat16, resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("fp32", cpu, features=False) == "fp32"
    assert resolve_precision("bf16", cpu, features=False) == "bf16"
    assert resolve_precision("auto", cpu, features=False) == ("bf16" if cpu_has_fast_bfloat16() else "fp32")
    assert resolve_precision("bf16", cpu, features=True) == "fp32"  # a head over embeddings stays float32
    assert resolve_precision("auto", cuda, features=False) == "fp16"
    assert resolve_precision("auto", cuda, features=True) == "fp16"
    assert resolve_precision("fp32", cuda, features=False) == "fp32"
    assert resolve_precision("bf16", cuda, features=False) == "bf16"


@pytest.mark.parametrize("batch", [33, 105])
def test_bfloat16_training_is_deterministic_and_keeps_float32_weights(batch):
    """bf16 autocast on the CPU (the default where the CPU computes bf16 in hardware): the same
    seed gives the same weights and soft labels, weights stay float32, narrow networks and odd
    batches included."""
    from labelaudit.train.tensors import TensorData
    from labelaudit.train.trainer import TrainConfig, Trainer

    def train(width):
        images = torch.randint(
            0, 256, (batch, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
        )
        data = TensorData(images, torch.arange(batch) % 3, 3, torch.tensor([0.5]), torch.tensor([0.25]))
        trainer = Trainer(data, TrainConfig(width=width, batch_size=32, precision="bf16"))
        assert trainer.precision == "bf16"
        trainer.run_phase(
            "t",
            2,
            0.1,
            lambda logits, labels, index, ctx: (
                torch.nn.functional.cross_entropy(logits, labels),
                torch.tensor(len(index)),
            ),
        )
        return trainer

    for width in (8, 16):
        a, b = train(width), train(width)
        assert all(p.dtype == torch.float32 for p in a.model.parameters())
        assert torch.equal(a.history.mean(), b.history.mean()) and torch.isfinite(a.history.mean()).all()
        for p, q in zip(a.model.parameters(), b.model.parameters()):
            assert torch.equal(p, q)
