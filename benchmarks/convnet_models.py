"""resnet18-, mobilenet_v2- and mobilenet_v3_small-shaped models for the conv benchmark (torchvision's layer shapes,
written here: torchvision is not a dependency). Random init, eval mode, BatchNorm folded (each conv carries a bias,
as after `torch.ao.nn.intrinsic` / ONNX export folding), so every conv is what a deployed model runs.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU) -> nn.Sequential:
    """Conv (BN folded into its bias) + activation."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=True)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv(cin, cout, 3, stride), _conv(cout, cout, 3, act=None))
        self.down = _conv(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return torch.relu(self.body(x) + self.down(x))


def resnet18(num_classes: int = 1000) -> nn.Module:
    layers = [_conv(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """mobilenet_v2's block (v3's with se and act): expand 1x1, depthwise kxk, (squeeze-excite), project 1x1."""

    def __init__(self, cin: int, hidden: int, cout: int, k: int, stride: int, act=nn.ReLU6, se: bool = False):
        super().__init__()
        layers = [_conv(cin, hidden, 1, act=act)] if hidden != cin else []
        layers.append(_conv(hidden, hidden, k, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(_conv(hidden, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class SqueezeExcite(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        squeeze = max(8, (c // 4 + 4) // 8 * 8)
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))


def mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    layers, cin = [_conv(3, 32, 3, 2, act=nn.ReLU6)], 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)):
        for i in range(n):
            layers.append(InvertedResidual(cin, cin * t, c, 3, s if i == 0 else 1))
            cin = c
    layers += [_conv(cin, 1280, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, num_classes)]
    return nn.Sequential(*layers)


# mobilenet_v3_small: (kernel, expanded, out, squeeze-excite, activation, stride), torchvision's table
_V3_SMALL = ((3, 16, 16, True, nn.ReLU, 2), (3, 72, 24, False, nn.ReLU, 2), (3, 88, 24, False, nn.ReLU, 1),
             (5, 96, 40, True, nn.Hardswish, 2), (5, 240, 40, True, nn.Hardswish, 1),
             (5, 240, 40, True, nn.Hardswish, 1), (5, 120, 48, True, nn.Hardswish, 1),
             (5, 144, 48, True, nn.Hardswish, 1), (5, 288, 96, True, nn.Hardswish, 2),
             (5, 576, 96, True, nn.Hardswish, 1), (5, 576, 96, True, nn.Hardswish, 1))


def mobilenet_v3_small(num_classes: int = 1000) -> nn.Module:
    layers, cin = [_conv(3, 16, 3, 2, act=nn.Hardswish)], 16
    for k, hidden, cout, se, act, stride in _V3_SMALL:
        layers.append(InvertedResidual(cin, hidden, cout, k, stride, act, se))
        cin = cout
    layers += [_conv(cin, 576, 1, act=nn.Hardswish), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(576, 1024),
               nn.Hardswish(), nn.Linear(1024, num_classes)]
    return nn.Sequential(*layers)


MODELS = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "mobilenet_v3_small": mobilenet_v3_small}


def build(name: str, seed: int = 0) -> nn.Module:
    """The named model with random weights (seeded), eval mode, no gradients."""
    torch.manual_seed(seed)
    model = MODELS[name]()
    with torch.no_grad():  # scale weights so activations neither vanish nor explode through the depth
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, (2.0 / fan_in) ** 0.5)
                m.bias.normal_(0, 0.01)
    return model.eval().requires_grad_(False)
