"""A model whose forward pass sleeps as long as its input says: overload, timeout and
shutdown tests need a model that is slow on demand, and fast for everything else.

Input: a number of seconds. Output: twice the input. A batch sleeps for its largest item,
plus the `delay` in its weights (0 when trained; a slow version for the canary tests).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

import proto2prod
from proto2prod import fields


class Sleep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.delay = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(float(x.max()) + float(self.delay))
        return x * self.scale


class Sleepy(proto2prod.Model):
    """Sleeps for the number of seconds it is given, then doubles it."""

    name = "sleepy"
    inputs = fields.Number(name="seconds")
    outputs = fields.Number(name="doubled")

    def network(self) -> nn.Module:
        return Sleep()

    def preprocess(self, item: Any) -> torch.Tensor:
        return torch.tensor([float(item)])

    def examples(self) -> list[Any]:
        return [0.0, 0.001]

    def train(self, progress: proto2prod.Progress, quick: bool = False) -> proto2prod.Trained:
        net = self.network()
        with torch.no_grad():
            net.scale.fill_(2.0)
        return proto2prod.Trained(weights=net.state_dict(), metrics={"error": 0.0})
