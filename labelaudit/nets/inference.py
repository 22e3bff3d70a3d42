"""Fast inference copies of frozen networks: batch norms folded into their convolutions, padding
fused, the channels_last layout; less memory traffic for the same features (docs/benchmarks.md,
"Embedding speed per backbone")."""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def inference_copy(
    module: nn.Module, crop_size: int, device: torch.device, *, relu6_in_place: bool = False
) -> nn.Module:
    """A copy of ``module`` (``(B, 3, crop_size, crop_size)`` images to features) made for fast
    inference on ``device``, with the same outputs up to float rounding.

    Batch norms are folded into the convolutions before them, explicit symmetric zero padding
    becomes the convolution's own, ``nn.ReLU6`` runs in place when ``relu6_in_place`` (safe only
    where every ReLU6 reads a convolution's own output), and the weights use the channels_last
    layout (feed it channels_last input). When the copy's features on a probe differ from
    ``module``'s beyond float rounding, a plain eval-mode copy is returned instead. Being a deep
    copy, it keeps the forward hooks registered on ``module``.
    """
    fast = copy.deepcopy(module).eval().requires_grad_(False)
    probe = torch.randn(2, 3, crop_size, crop_size, generator=torch.Generator().manual_seed(0))
    pairs, expected = conv_bn_pairs(fast, probe)  # expected: the unfolded features of the probe
    for bn_parent, bn_name, conv_parent, conv_name in pairs:
        conv, bn = getattr(conv_parent, conv_name), getattr(bn_parent, bn_name)
        setattr(conv_parent, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(bn_parent, bn_name, nn.Identity())
    for sub in fast.modules():
        pad = getattr(sub, "static_padding", None)  # efficientnet_lite_pytorch's TF "SAME" padding
        if isinstance(sub, nn.Conv2d) and isinstance(pad, nn.ZeroPad2d) and tuple(sub.padding) == (0, 0):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom:  # stride-1 convolutions; stride 2 pads one side only
                sub.padding, sub.static_padding = (top, left), nn.Identity()
        if relu6_in_place and isinstance(sub, nn.ReLU6):
            sub.inplace = True
    with torch.inference_mode():
        got = fast(probe)
    scale = 1.0 + float(expected.abs().max())
    if got.shape != expected.shape or not float((got - expected).abs().max()) <= 1e-3 * scale:
        fast = copy.deepcopy(module).eval().requires_grad_(False)  # an unexpected graph: plain copy
    # channels_last: faster convolutions on the CPU (oneDNN; docs/benchmarks.md), and what tensor cores want.
    return fast.to(device, memory_format=torch.channels_last)


def conv_bn_pairs(
    model: nn.Module, probe: torch.Tensor
) -> tuple[list[tuple[nn.Module, str, nn.Module, str]], torch.Tensor]:
    """``(pairs, output)``: ``(bn_parent, bn_name, conv_parent, conv_name)`` for each ``BatchNorm2d``
    that reads the output of a ``Conv2d`` directly, found by running ``model`` on ``probe``, and
    that run's output."""
    parents = {}
    for parent in model.modules():
        for child_name, child in parent.named_children():
            parents[id(child)] = (parent, child_name)
    produced_by, pairs, hooks, keep_alive = {}, [], [], []

    def after_conv(conv, inputs, output):
        produced_by[id(output)] = conv
        keep_alive.append(output)  # ids stay unique while the pass runs

    def before_bn(bn, inputs):
        conv = produced_by.get(id(inputs[0]))
        if conv is not None and bn.track_running_stats and id(bn) in parents and id(conv) in parents:
            pairs.append((*parents[id(bn)], *parents[id(conv)]))

    for sub in model.modules():
        if isinstance(sub, nn.Conv2d):
            hooks.append(sub.register_forward_hook(after_conv))
        elif isinstance(sub, nn.BatchNorm2d):
            hooks.append(sub.register_forward_pre_hook(before_bn))
    try:
        with torch.inference_mode():
            output = model(probe)
    finally:
        for hook in hooks:
            hook.remove()
    # A batch norm or convolution met twice (shared weights, or one output read by two batch
    # norms) cannot be folded once for both uses: leave it alone. Another reader of a
    # convolution's output is invisible here; the caller's comparison of outputs catches it.
    uses = Counter([(id(p[0]), p[1]) for p in pairs] + [(id(p[2]), p[3]) for p in pairs])
    return [p for p in pairs if uses[(id(p[0]), p[1])] == 1 and uses[(id(p[2]), p[3])] == 1], output
