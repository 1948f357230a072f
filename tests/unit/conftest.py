"""Shared test configuration: tests marked `gpu` run only where an NVIDIA GPU is visible to torch."""

from __future__ import annotations

import pytest


def _gpu_visible() -> bool:
    try:
        import torch  # noqa: PLC0415 - optional: the control node has no torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _gpu_visible():
        return
    skip = pytest.mark.skip(reason="no NVIDIA GPU visible to torch")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
