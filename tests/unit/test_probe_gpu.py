"""The probes on a real GPU (marker `gpu`: skipped where torch sees none, run on the H100 device)."""

from __future__ import annotations

import pytest

from h100fleet.probes import compute, nvml
from h100fleet.probes.checks import Expectations
from h100fleet.probes.result import Status
from h100fleet.probes.run import Thresholds, probe

pytestmark = pytest.mark.gpu


def test_nvml_snapshot_sees_a_hopper_gpu():
    snap = nvml.snapshot()
    assert "error" not in snap, snap
    assert snap["gpus"], snap
    assert all(g["compute_capability"] == "9.0" for g in snap["gpus"])


def test_gemm_and_copy_give_plausible_figures():
    tflops = compute.gemm_tflops(0, n=4096)
    gbs = compute.copy_bandwidth_gbs(0, nbytes=1 << 28)
    # Far below any healthy H100 and far above zero: the measurement itself works.
    assert 50 < tflops < 2000
    assert 100 < gbs < 10000


def test_attention_matches_the_math_reference():
    result = compute.attention(0, batch=1, heads=8, seq=512)
    assert result.ok, result


def test_probe_without_unsloth_passes_on_a_healthy_gpu():
    report = probe(Expectations(), Thresholds(), unsloth=False)
    assert report.status in {Status.OK, Status.WARN}, report.summary_line()
