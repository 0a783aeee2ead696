"""``mobile``: a small MobileNetV3-style net (torchvision InvertedResidual / SqueezeExcitation).

stem Conv3x3/2-BN-Hardswish (16 ch), then inverted residual blocks
(1x1 expand Conv-BN-act -> depthwise kxk Conv(groups=C)-BN-act -> [SE] -> 1x1 project Conv-BN,
residual Add when stride 1 and in == out; the first block has no expand conv, like MobileNetV3):

    in  exp  out  k  SE  act  stride
    16   16   16  3  yes ReLU  2
    16   64   24  3  no  ReLU  2   (no residual)
    24   72   24  3  no  ReLU  1   (residual)
    24   96   40  5  yes HS    2
    40  120   40  5  yes HS    1   (residual)

SE is torchvision's SqueezeExcitation: AdaptiveAvgPool2d(1) -> 1x1 Conv -> ReLU -> 1x1 Conv
-> Hardsigmoid -> ``scale * input`` (no reshape). Then a *grouped* 3x3 Conv(40->96, groups=4)
-BN-Hardswish, AdaptiveAvgPool2d(1) -> flatten -> Linear(96, 64) -> Hardswish -> Linear(64, 10).
Input ``input`` [batch, 3, 64, 64]; output ``logits`` [batch, 10].
"""

from __future__ import annotations

INPUT_SHAPE = (1, 3, 64, 64)
OUTPUT_NAMES = ("logits",)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def make():
    import torch
    from torch import nn

    class SqueezeExcitation(nn.Module):
        def __init__(self, channels: int, squeeze: int):
            super().__init__()
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Conv2d(channels, squeeze, 1)
            self.activation = nn.ReLU()
            self.fc2 = nn.Conv2d(squeeze, channels, 1)
            self.scale_activation = nn.Hardsigmoid()

        def forward(self, x):
            scale = self.avgpool(x)
            scale = self.scale_activation(self.fc2(self.activation(self.fc1(scale))))
            return scale * x

    def conv_bn_act(cin, cout, k, stride=1, groups=1, act=nn.Hardswish):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act())
        return nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        def __init__(self, cin, exp, cout, k, use_se, act, stride):
            super().__init__()
            self.use_res = stride == 1 and cin == cout
            layers = []
            if exp != cin:
                layers.append(conv_bn_act(cin, exp, 1, act=act))
            layers.append(conv_bn_act(exp, exp, k, stride, groups=exp, act=act))
            if use_se:
                layers.append(SqueezeExcitation(exp, _make_divisible(exp // 4, 8)))
            layers.append(conv_bn_act(exp, cout, 1, act=None))
            self.block = nn.Sequential(*layers)

        def forward(self, x):
            out = self.block(x)
            return out + x if self.use_res else out

    RE, HS = nn.ReLU, nn.Hardswish
    cfg = [  # in, exp, out, k, se, act, stride
        (16, 16, 16, 3, True, RE, 2),
        (16, 64, 24, 3, False, RE, 2),
        (24, 72, 24, 3, False, RE, 1),
        (24, 96, 40, 5, True, HS, 2),
        (40, 120, 40, 5, True, HS, 1),
    ]

    class MobileNet(nn.Module):
        def __init__(self, num_classes: int = 10):
            super().__init__()
            layers = [conv_bn_act(3, 16, 3, 2)]
            layers += [InvertedResidual(*c) for c in cfg]
            layers.append(conv_bn_act(40, 96, 3, 1, groups=4))  # grouped, not depthwise
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Linear(96, 64), nn.Hardswish(), nn.Linear(64, num_classes))

        def forward(self, x):
            x = torch.flatten(self.avgpool(self.features(x)), 1)
            return self.classifier(x)

    return MobileNet()
