"""Training done elsewhere, as in a notebook: save a state dict, then `proto2prod register`."""

from __future__ import annotations

import sys

import torch
from my_model import Iris

import proto2prod

if __name__ == "__main__":
    trained = Iris().train(proto2prod.NullProgress())
    torch.save(trained.weights, sys.argv[1])
    print(f"accuracy={trained.metrics['accuracy']:.4f}")
