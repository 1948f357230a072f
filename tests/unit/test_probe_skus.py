"""The Hopper SKU table and what the probe takes from it: the model check, PCIe, power and the measured minimums."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from h100fleet.probes import checks, compute, run
from h100fleet.probes.checks import ANY_HOPPER, HOPPER_SKUS, Expectations, evaluate, sku_of, sku_threshold
from h100fleet.probes.result import Status

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvml"
NAMES = {
    "NVIDIA H100 80GB HBM3": "H100 SXM5",
    "NVIDIA H100 PCIe": "H100 PCIe",
    "NVIDIA H100 NVL": "H100 NVL",
    "NVIDIA H200": "H200 SXM",
    "NVIDIA H200 NVL": "H200 NVL",
}


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def as_sku(name: str, **changes) -> dict:
    """The healthy H100 snapshot with every GPU renamed to `name` (and `changes` applied to each)."""
    snap = load("healthy_h100_8gpu")
    snap["gpus"] = [{**g, "name": name, **changes} for g in snap["gpus"]]
    return snap


def by_name(result):
    return {c.name: c for c in result}


def test_the_table_lists_the_fleet_skus_under_their_nvml_names():
    assert {name: sku.label for name, sku in HOPPER_SKUS.items()} == NAMES
    for sku in HOPPER_SKUS.values():
        # Every minimum is below the datasheet peak it was derived from, and the power range is ordered.
        assert 0 < sku.min_gemm_tflops < sku.bf16_tflops
        assert 0 < sku.min_copy_gbs < sku.hbm_tbs * 1000
        assert 0 < sku.min_power_w <= sku.max_power_w
        assert (sku.pcie_gen, sku.pcie_width) == (5, 16)


def test_the_sources_of_the_table_are_written_beside_it():
    source = Path(checks.__file__).read_text()
    table = source[source.index("# --- Hopper SKUs") : source.index("HOPPER_SKUS: dict")]
    for column in ("bf16_tflops", "hbm_tbs", "min_gemm_tflops", "min_copy_gbs", "min_allreduce_busbw_gbs"):
        assert column in table
    assert "datasheet" in table


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_hopper_sku_passes_the_default_gate(name):
    result = evaluate(as_sku(name), Expectations(expected_gpus=8))
    assert {c.name: c.status.name for c in result if c.status is not Status.OK} == {}
    model = by_name(result)["gpu_model[0]"]
    assert (model.value, model.threshold) == (name, ANY_HOPPER)
    assert model.detail == f"{NAMES[name]}: thresholds from the SKU table"


def test_a_hopper_gpu_the_table_lacks_passes_with_the_lowest_thresholds():
    model = by_name(evaluate(as_sku("NVIDIA H800")))["gpu_model[0]"]
    assert model.status is Status.OK
    assert model.detail == "not in the SKU table: the table's lowest thresholds apply"
    assert sku_of("NVIDIA H800") is None
    assert sku_threshold("NVIDIA H800", "min_gemm_tflops") == min(s.min_gemm_tflops for s in HOPPER_SKUS.values())


def test_a_non_hopper_gpu_fails_the_model_check_even_if_its_name_says_hopper():
    model = by_name(evaluate(as_sku("NVIDIA H100 80GB HBM3", compute_capability="8.9")))["gpu_model[0]"]
    assert model.status is Status.CRIT
    assert model.detail == "NVIDIA H100 80GB HBM3 (compute capability 8.9) is not a Hopper GPU (9.0)"


def test_model_check_without_compute_capability_is_unknown():
    snap = as_sku("NVIDIA H200", compute_capability=None)
    snap["gpus"][0]["errors"] = {"compute_capability": "Unknown Error"}
    assert by_name(evaluate(snap))["gpu_model[0]"].status is Status.UNKNOWN


def test_a_group_can_require_one_sku():
    snap = as_sku("NVIDIA H100 PCIe")
    result = by_name(evaluate(snap, Expectations(model_substring="H200")))
    assert result["gpu_model[0]"].status is Status.CRIT
    assert result["gpu_model[0]"].remedy == "Move this node to an inventory group for NVIDIA H100 PCIe GPUs."
    assert by_name(evaluate(snap, Expectations(model_substring="H100 PCIe")))["gpu_model[0]"].status is Status.OK


def test_pcie_generation_falls_back_to_the_skus_when_nvml_lacks_the_gpus_own():
    snap = as_sku("NVIDIA H200", pcie_link_gen_gpu_max=None, pcie_link_gen_max=4)
    check = by_name(evaluate(snap))["pcie_link_generation[0]"]
    assert (check.status, check.value, check.threshold) == (Status.CRIT, 4, 5)
    unknown = as_sku("NVIDIA H800", pcie_link_gen_gpu_max=None, pcie_link_gen_max=4)
    assert by_name(evaluate(unknown))["pcie_link_generation[0]"].status is Status.OK


def test_power_limit_below_the_skus_range_warns():
    check = by_name(evaluate(as_sku("NVIDIA H100 PCIe", power_limit_w=250.0, power_usage_w=40.0)))["power_draw[0]"]
    assert check.status is Status.WARN
    assert check.detail == "40 W of 250 W limit (16%); the limit is below the H100 PCIe's 300 W"
    assert check.remedy == "Raise the power limit (nvidia-smi -i 0 -pl 350): clocks are capped."
    ok = by_name(evaluate(as_sku("NVIDIA H100 PCIe", power_limit_w=350.0, power_usage_w=40.0)))["power_draw[0]"]
    assert ok.status is Status.OK


def test_thresholds_come_from_each_gpus_sku_unless_set():
    t = run.Thresholds()
    assert t.for_gpu("min_gemm_tflops", "NVIDIA H100 PCIe") == 450
    assert t.for_gpu("min_copy_gbs", "NVIDIA H200") == 2880
    assert t.for_node("min_allreduce_busbw_gbs", ["NVIDIA H200", "NVIDIA H100 NVL"]) == 20
    assert t.for_node("min_allreduce_busbw_gbs", ["NVIDIA H200", "NVIDIA H100 80GB HBM3"]) == 100
    fixed = run.Thresholds(min_gemm_tflops=700)
    assert fixed.for_gpu("min_gemm_tflops", "NVIDIA H100 PCIe") == 700


def test_compute_checks_use_each_gpus_sku(monkeypatch):
    monkeypatch.setattr(compute, "gemm_tflops", lambda i: 520.0)
    monkeypatch.setattr(compute, "copy_bandwidth_gbs", lambda i: 2500.0)
    monkeypatch.setattr(compute, "attention", lambda i, tolerance: (_ for _ in ()).throw(RuntimeError("no torch")))
    result = by_name(run.compute_checks(2, run.Thresholds(), ["NVIDIA H100 NVL", "NVIDIA H200"])[:4])
    # 520 TFLOP/s clears the NVL's 500 but not the H200's 590; 2500 GB/s clears the NVL's 2340, not the H200's 2880.
    assert {n: (c.status.name, c.threshold) for n, c in result.items()} == {
        "gemm_bf16_tflops[0]": ("OK", 500.0),
        "copy_bandwidth_gbs[0]": ("OK", 2340.0),
        "gemm_bf16_tflops[1]": ("CRIT", 590.0),
        "copy_bandwidth_gbs[1]": ("CRIT", 2880.0),
    }


def test_cli_default_model_is_any_hopper(tmp_path, capsys):
    snap = tmp_path / "h200.json"
    # On a supported branch (R580), so that the only finding can be the model's: R550 is past end of life (WARN).
    snap.write_text(json.dumps({**as_sku("NVIDIA H200"), "driver_version": "580.159.04"}))
    assert run.main(["--snapshot", str(snap), "--no-compute", "--no-unsloth", "--node", "h"]) == 0
    assert run.main(["--snapshot", str(snap), "--no-compute", "--no-unsloth", "--model", "H100"]) == 2
    assert "gpu_model[0]: NVIDIA H200, expected H100" in capsys.readouterr().out


def test_the_recorded_h200_passes_the_default_gate_and_fails_a_group_that_requires_h100():
    # Recorded on the lent H200 (NVML, driver 580.159.04; uuid replaced).
    snap = load("h200")
    result = evaluate(snap, Expectations(expected_gpus=1))
    assert [c.status for c in result] == [Status.OK] * 16
    assert by_name(result)["gpu_model[0]"].detail == "H200 SXM: thresholds from the SKU table"
    required = by_name(evaluate(snap, Expectations(expected_gpus=1, model_substring="H100")))["gpu_model[0]"]
    assert (required.status, required.detail) == (Status.CRIT, "NVIDIA H200, expected H100")
