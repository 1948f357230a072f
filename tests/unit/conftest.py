"""Shared test configuration: tests marked `gpu` run only where an NVIDIA GPU is visible to torch; tests marked
`torch` run only where torch is importable (the trainer's stack venvs, not the control node)."""

from __future__ import annotations

import importlib.util

import pytest


def _torch_importable() -> bool:
    return importlib.util.find_spec("torch") is not None


def _gpu_visible() -> bool:
    try:
        import torch  # noqa: PLC0415 - optional: the control node has no torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if not _torch_importable():
        skip_torch = pytest.mark.skip(reason="torch is not importable here (run in a stack venv)")
        for item in items:
            if "torch" in item.keywords:
                item.add_marker(skip_torch)
    if _gpu_visible():
        return
    skip = pytest.mark.skip(reason="no NVIDIA GPU visible to torch")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
