"""``yolo``: a tiny YOLOv8-style detector (ultralytics Conv / Bottleneck / C2f / SPPF / Detect layout).

Conv = Conv2d(bias=False)-BN-SiLU. C2f: cv1 1x1 -> ``.chunk(2, 1)`` -> n Bottlenecks
(3x3 Conv, 3x3 Conv, residual Add when ``shortcut``) each appended -> ``torch.cat`` of all
parts -> cv2 1x1. SPPF: cv1 -> three chained MaxPool2d(5, 1, 2) -> cat -> cv2.

Backbone (64x64 input): Conv/2 (8) -> Conv/4 (16) -> C2f -> Conv/8 (32) -> C2f(n=2) [P3]
-> Conv/16 (48) -> C2f(n=2) [P4] -> Conv/32 (64) -> C2f -> SPPF [P5]. Bottlenecks in the
backbone have the residual Add; the neck C2f blocks have shortcut=False, as in YOLOv8.
Neck (PAN): Upsample x2 (nearest) + cat P4 -> C2f -> Upsample x2 + cat P3 -> C2f => N3;
Conv/2 + cat -> C2f => N4; Conv/2 + cat SPPF out -> C2f => N5.
Head per scale (like ultralytics Detect before the anchor decode): box branch
Conv3x3-Conv3x3-Conv2d1x1(4*reg_max) (hidden 24) and class branch Conv3x3-Conv3x3-Conv2d1x1(nc)
(hidden 16), the two concatenated on channels (box first). No anchor reshape/concat: three conv outputs
``p3`` [batch, 72, 8, 8], ``p4`` [batch, 72, 4, 4], ``p5`` [batch, 72, 2, 2]
(72 = 4*16 + 8 classes). Input ``input`` [batch, 3, 64, 64].
"""

from __future__ import annotations

INPUT_SHAPE = (1, 3, 64, 64)
OUTPUT_NAMES = ("p3", "p4", "p5")
NC = 8
REG_MAX = 16
WIDTHS = (8, 16, 32, 48, 64)
HEAD = (24, 16)  # hidden channels of the box (cv2) and class (cv3) branches


def make(widths=WIDTHS, head=HEAD, nc: int = NC, reg_max: int = REG_MAX):
    import torch
    from torch import nn

    class Conv(nn.Module):
        def __init__(self, c1, c2, k=1, s=1):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(c2)
            self.act = nn.SiLU()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class Bottleneck(nn.Module):
        def __init__(self, c1, c2, shortcut=True, e=1.0):
            super().__init__()
            c_ = int(c2 * e)
            self.cv1 = Conv(c1, c_, 3)
            self.cv2 = Conv(c_, c2, 3)
            self.add = shortcut and c1 == c2

        def forward(self, x):
            y = self.cv2(self.cv1(x))
            return x + y if self.add else y

    class C2f(nn.Module):
        def __init__(self, c1, c2, n=1, shortcut=False, e=0.5):
            super().__init__()
            self.c = int(c2 * e)
            self.cv1 = Conv(c1, 2 * self.c, 1)
            self.cv2 = Conv((2 + n) * self.c, c2, 1)
            self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

        def forward(self, x):
            y = list(self.cv1(x).chunk(2, 1))
            y.extend(m(y[-1]) for m in self.m)
            return self.cv2(torch.cat(y, 1))

    class SPPF(nn.Module):
        def __init__(self, c1, c2, k=5):
            super().__init__()
            c_ = c1 // 2
            self.cv1 = Conv(c1, c_, 1)
            self.cv2 = Conv(c_ * 4, c2, 1)
            self.m = nn.MaxPool2d(k, 1, k // 2)

        def forward(self, x):
            y = [self.cv1(x)]
            y.extend(self.m(y[-1]) for _ in range(3))
            return self.cv2(torch.cat(y, 1))

    class Detect(nn.Module):
        def __init__(self, ch, nc, reg_max, c2, c3):
            super().__init__()
            self.cv2 = nn.ModuleList(
                nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch
            )
            self.cv3 = nn.ModuleList(
                nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch
            )

        def forward(self, xs):
            return tuple(torch.cat((b(x), c(x)), 1) for x, b, c in zip(xs, self.cv2, self.cv3))

    class Yolo(nn.Module):
        def __init__(self, w, head):
            super().__init__()
            w1, w2, w3, w4, w5 = w
            # backbone
            self.b0 = Conv(3, w1, 3, 2)
            self.b1 = Conv(w1, w2, 3, 2)
            self.b2 = C2f(w2, w2, 1, True)
            self.b3 = Conv(w2, w3, 3, 2)
            self.b4 = C2f(w3, w3, 2, True)
            self.b5 = Conv(w3, w4, 3, 2)
            self.b6 = C2f(w4, w4, 2, True)
            self.b7 = Conv(w4, w5, 3, 2)
            self.b8 = C2f(w5, w5, 1, True)
            self.b9 = SPPF(w5, w5, 5)
            # neck
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.n12 = C2f(w5 + w4, w4, 1)
            self.n15 = C2f(w4 + w3, w3, 1)
            self.n16 = Conv(w3, w3, 3, 2)
            self.n18 = C2f(w3 + w4, w4, 1)
            self.n19 = Conv(w4, w4, 3, 2)
            self.n21 = C2f(w4 + w5, w5, 1)
            self.detect = Detect((w3, w4, w5), nc, reg_max, *head)

        def forward(self, x):
            p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
            p4 = self.b6(self.b5(p3))
            p5 = self.b9(self.b8(self.b7(p4)))
            h12 = self.n12(torch.cat((self.up(p5), p4), 1))
            n3 = self.n15(torch.cat((self.up(h12), p3), 1))
            n4 = self.n18(torch.cat((self.n16(n3), h12), 1))
            n5 = self.n21(torch.cat((self.n19(n4), p5), 1))
            return self.detect((n3, n4, n5))

    return Yolo(widths, head)
