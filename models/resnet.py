"""``resnet``: a small ResNet-18-style CNN (torchvision BasicBlock layout).

stem Conv3x3-BN-ReLU -> MaxPool 3x3/2 -> layer1: 2 identity BasicBlocks (16 ch)
-> layer2: BasicBlock stride 2 with 1x1 conv+BN shortcut (32 ch) + identity block
-> layer3: BasicBlock stride 2 with 1x1 conv+BN shortcut (64 ch)
-> AdaptiveAvgPool2d(1) -> flatten -> Linear(64, 10).
Input ``input`` [batch, 3, 64, 64]; output ``logits`` [batch, 10].
"""

from __future__ import annotations

INPUT_SHAPE = (1, 3, 64, 64)
OUTPUT_NAMES = ("logits",)


def make():
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int = 1):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet(nn.Module):
        def __init__(self, num_classes: int = 10):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
            self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
            self.layer3 = nn.Sequential(BasicBlock(32, 64, 2))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer3(self.layer2(self.layer1(x)))
            x = torch.flatten(self.avgpool(x), 1)
            return self.fc(x)

    return ResNet()
