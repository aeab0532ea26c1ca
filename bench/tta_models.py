"""Models of the time-to-accuracy benchmark: one per data set, built from the run's seed so
that every optimizer starts from the same weights."""

from __future__ import annotations

import torch
from torch import nn


def digits_cnn(num_classes: int = 10) -> nn.Module:
    """8x8 digits: two convolutions with BatchNorm, then a two-layer head (every trainable
    module is one libfngd preconditions)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes))


def tabular_mlp(in_features: int = 30, num_classes: int = 2, hidden: int = 64) -> nn.Module:
    """Breast cancer (30 features): Linear - LayerNorm - ReLU - Linear."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def cifar_resnet(num_classes: int, arch: str = "resnet18", width: int = 64) -> nn.Module:
    """bench/resnet_cifar.py's CIFAR ResNet: resnet18 = (2,2,2,2) blocks, resnet10 = (1,1,1,1)."""
    from resnet_cifar import ResNetCIFAR  # bench/ is on sys.path
    blocks = {"resnet18": (2, 2, 2, 2), "resnet10": (1, 1, 1, 1)}[arch]
    return ResNetCIFAR(blocks, num_classes, width)


def build(dataset: str, num_classes: int, seed: int, in_features: int | None = None,
          arch: str = "resnet18", width: int = 64) -> nn.Module:
    torch.manual_seed(seed)
    if dataset == "digits":
        return digits_cnn(num_classes)
    if dataset == "breast_cancer":
        return tabular_mlp(in_features or 30, num_classes)
    if dataset in ("cifar10", "cifar100"):
        return cifar_resnet(num_classes, arch, width)
    raise ValueError(f"no model for dataset {dataset!r}")


def describe(model: nn.Module) -> str:
    n = sum(p.numel() for p in model.parameters())
    return f"{model.__class__.__name__} with {n} parameters"
