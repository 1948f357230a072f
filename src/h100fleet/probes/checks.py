"""Judge an NVML snapshot (see `nvml.snapshot`) against what the inventory expects of the node.

Pure functions from plain dicts to `Check`s: no NVML, no clock, no I/O, so every verdict can be tested on recorded
snapshots. Each check answers one question a person would ask before putting a training job on the node, and
every check that is not OK says what to do about it.

A field that could not be read is never taken as good news: a query error is UNKNOWN, and so is a field the GPU
does not support where the check guards the job's results (ECC, remapped rows) or the node's identity (model,
compute capability). Where "not supported" only costs information (temperature, power, PCIe), the check is OK
with that said in its detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Callable

from . import drivers
from .result import Check, Status, worst

GPU_VISIBLE = "nvidia_gpu_visible"

# NVML's clock event reasons (nvmlClocksEventReason*, formerly nvmlClocksThrottleReason*): bit, name, status.
# Idle, application clocks, sync boost and display clock are ordinary operation. The software limits slow a job
# down; the hardware ones mean the board asserted a thermal or power emergency. Board limit and reliability exist
# only as nvmlClocksThrottleReason* constants in pynvml; they lower clocks but assert nothing, so they warn.
CLOCK_EVENT_REASONS = (
    (0x001, "gpu_idle", Status.OK),
    (0x002, "applications_clocks_setting", Status.OK),
    (0x004, "sw_power_cap", Status.WARN),
    (0x008, "hw_slowdown", Status.CRIT),
    (0x010, "sync_boost", Status.OK),
    (0x020, "sw_thermal_slowdown", Status.WARN),
    (0x040, "hw_thermal_slowdown", Status.CRIT),
    (0x080, "hw_power_brake_slowdown", Status.CRIT),
    (0x100, "display_clock_setting", Status.OK),
    (0x200, "board_limit", Status.WARN),
    (0x400, "reliability", Status.WARN),
)
CLOCK_EVENT_REMEDIES = {
    "sw_power_cap": "Check what draws power at the limit; raise the power limit back to default with nvidia-smi -pl.",
    "hw_slowdown": "Check the GPU's cooling and power supply (HW slowdown asserted); drain the node if it persists.",
    "sw_thermal_slowdown": "Improve the GPU's cooling: check fans, airflow and inlet temperature.",
    "hw_thermal_slowdown": "Drain the node and fix the GPU's cooling (HW thermal slowdown asserted).",
    "hw_power_brake_slowdown": "Drain the node and check its power supplies (external power brake asserted).",
    "board_limit": "Check the board's power and thermal limits with nvidia-smi -q -d PERFORMANCE.",
    "reliability": "Check the GPU's clocks and voltage with nvidia-smi -q -d PERFORMANCE.",
}

# The oldest Linux driver of each CUDA version, and the driver branches' lifecycle: the project's one table
# (h100fleet.probes.drivers); re-exported here for the remedy texts and their tests.
CUDA_MIN_DRIVER = drivers.CUDA_MIN_DRIVER

REMEDY_NO_GPU = "Install and load the NVIDIA driver, check dmesg for Xid errors and lspci for the GPUs, then rerun."
REMEDY_QUERY_FAILED = "Rerun the probe; if the NVML query keeps failing, reset the GPU or reboot the node."
REMEDY_UNSUPPORTED = "Find out why this GPU does not report it (nvidia-smi -q); do not train until it does."


# --- Hopper SKUs --------------------------------------------------------------------------------------------------
# Every threshold that depends on the GPU model comes from this one table, keyed by the name NVML reports
# (nvmlDeviceGetName). Sources, per column:
# - bf16_tflops (dense), hbm_tbs, pcie, nvlink_gbs, max_power_w: NVIDIA's datasheets ("NVIDIA H100 Tensor Core GPU"
#   datasheet for H100 SXM5 / PCIe / NVL; "NVIDIA H200 Tensor Core GPU" datasheet for H200 SXM / NVL); the sparse
#   figures there are halved to dense. min_power_w is the low end of the datasheet's configurable range, or its
#   maximum where the datasheet gives none (SXM boards).
# - min_gemm_tflops and min_copy_gbs: 60 % of the datasheet peak (rounded down to 10), the fraction that the
#   measured H100 SXM5 and H200 figures clear with room (docs/validation: 780-800 TFLOP/s on 8192^3 bf16, 79-81 % of
#   989; 3.0 TB/s and 4.2 TB/s device copy, read + write counted, 87-90 % of 3.35 and 4.8 TB/s).
# - min_allreduce_busbw_gbs: SXM boards (NVLink through NVSwitch, 900 GB/s) keep the 100 GB/s floor that two H100
#   SXM5 cleared at 333 GB/s (docs/validation/2026-11-26-2xh100-probe.json); PCIe boards (NVL bridges join pairs,
#   other traffic crosses PCIe gen 5, 64 GB/s each way) get 20 GB/s, not measured here.
# Temperature limits are the board's own (NVML's slowdown threshold): they vary by board and VBIOS, so they are not
# tabulated.


@dataclass(frozen=True)
class Sku:
    """One Hopper data-center GPU model: its datasheet figures and the probe's thresholds for it."""

    nvml_name: str
    label: str
    bf16_tflops: float
    hbm_tbs: float
    pcie_gen: int
    pcie_width: int
    nvlink_gbs: int
    max_power_w: float
    min_power_w: float
    min_gemm_tflops: float
    min_copy_gbs: float
    min_allreduce_busbw_gbs: float


HOPPER_SKUS: dict[str, Sku] = {
    s.nvml_name: s
    for s in (
        Sku("NVIDIA H100 80GB HBM3", "H100 SXM5", 989, 3.35, 5, 16, 900, 700, 700, 590, 2010, 100),
        Sku("NVIDIA H100 PCIe", "H100 PCIe", 756, 2.0, 5, 16, 600, 350, 300, 450, 1200, 20),
        Sku("NVIDIA H100 NVL", "H100 NVL", 835, 3.9, 5, 16, 600, 400, 350, 500, 2340, 20),
        Sku("NVIDIA H200", "H200 SXM", 989, 4.8, 5, 16, 900, 700, 700, 590, 2880, 100),
        Sku("NVIDIA H200 NVL", "H200 NVL", 835, 4.8, 5, 16, 900, 600, 600, 500, 2880, 20),
    )
}
HOPPER_COMPUTE_CAPABILITY = "9.0"
# The model setting that accepts every Hopper data-center GPU (compute capability 9.0); any other setting is text
# the GPU's NVML name must contain ("H200", "NVIDIA H100 80GB HBM3") and so requires one SKU.
ANY_HOPPER = "hopper"


def sku_of(gpu_name: str | None) -> Sku | None:
    """The SKU table's entry for an NVML name; None for a GPU the table does not list."""
    return HOPPER_SKUS.get(gpu_name) if gpu_name else None


def _lowest(field: str) -> float:
    return min(getattr(s, field) for s in HOPPER_SKUS.values())


def sku_threshold(gpu_name: str | None, field: str) -> float:
    """A threshold for a GPU: its SKU's, or the lowest of the table for a Hopper GPU the table does not list."""
    sku = sku_of(gpu_name)
    return getattr(sku, field) if sku is not None else _lowest(field)


@dataclass(frozen=True)
class Expectations:
    """What the node must be. `driver_version` is an exact pin ("550.163.01") or a branch ("550": the major
    must match); None checks nothing. `min_cuda_driver` is the CUDA version the stack's runtime needs (the caller
    fills it from torch.version.cuda). `model_substring` is ANY_HOPPER (every GPU of compute capability 9.0) or
    text the NVML name must contain. `pcie_link_width` is the GPU's own link width, None for its SKU's (NVML
    reports the link's maximum but has no query for the device's)."""

    expected_gpus: int | None = None
    compute_capability: str = HOPPER_COMPUTE_CAPABILITY
    driver_version: str | None = None
    model_substring: str = ANY_HOPPER
    min_cuda_driver: str | None = "12.4"
    require_persistence: bool = True
    max_temp_headroom_c: int = 10
    power_warn_fraction: float = 0.98
    pcie_link_width: int | None = None
    today: date | None = None


def _ok(name: str, value: Any, threshold: Any, detail: str = "") -> Check:
    return Check(name, Status.OK, value, threshold, "", detail)


def _version(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in text.split("."))
    except (AttributeError, ValueError):
        return None


def _missing(name: str, record: dict, field: str, threshold: Any, *, safety: bool) -> Check | None:
    """The check to give when `field` of `record` is None, or None when the field has a value.
    A query error is always UNKNOWN; "not supported" is UNKNOWN only for checks that guard the job (`safety`)."""
    if record.get(field) is not None:
        return None
    errors = record.get("errors") or {}
    if field in errors:
        return Check(name, Status.UNKNOWN, None, threshold, REMEDY_QUERY_FAILED, f"NVML error: {errors[field]}")
    if field in (record.get("not_supported") or ()):
        if safety:
            return Check(name, Status.UNKNOWN, None, threshold, REMEDY_UNSUPPORTED, "not supported")
        return _ok(name, None, threshold, "not supported")
    return Check(name, Status.UNKNOWN, None, threshold, REMEDY_QUERY_FAILED, "not recorded in the snapshot")


# --- node checks -----------------------------------------------------------------------------------------------


def gpus_of(snapshot: Any) -> list[dict]:
    """The snapshot's GPU records; [] for an error snapshot or anything that is not a snapshot."""
    gpus = snapshot.get("gpus") if isinstance(snapshot, dict) else None
    return [g for g in gpus if isinstance(g, dict)] if isinstance(gpus, list) else []


def check_gpu_visible(snapshot: Any) -> Check:
    gpus = gpus_of(snapshot)
    if gpus:
        return _ok(GPU_VISIBLE, f"{len(gpus)} NVIDIA GPU{'s' if len(gpus) != 1 else ''} visible", None)
    if isinstance(snapshot, dict) and snapshot.get("error"):
        reason = str(snapshot["error"])
    elif isinstance(snapshot, dict) and isinstance(snapshot.get("gpus"), list):
        reason = "NVML reports 0 GPUs"
    else:
        reason = "no NVML snapshot"
    return Check(GPU_VISIBLE, Status.CRIT, f"no NVIDIA GPU visible: {reason}", None, REMEDY_NO_GPU)


def check_gpu_count(gpus: list[dict], expect: Expectations) -> Check:
    name, count, expected = "gpu_count", len(gpus), expect.expected_gpus
    if expected is None:
        return _ok(name, count, None, "no expected GPU count set")
    detail = f"{count} of {expected} expected GPUs visible"
    if count < expected:
        remedy = "Find the missing GPUs: check dmesg for Xid 79 and lspci; reboot, then reseat or RMA."
        return Check(name, Status.CRIT, count, expected, remedy, detail)
    if count > expected:
        return Check(
            name, Status.WARN, count, expected, "Correct expected_gpus for this node in the inventory.", detail
        )
    return _ok(name, count, expected, detail)


def check_driver_version(snapshot: dict, expect: Expectations) -> Check:
    name, pin = "driver_version", expect.driver_version
    if pin is None:
        return _ok(name, snapshot.get("driver_version"), None, "no driver pin set")
    missing = _missing(name, snapshot, "driver_version", pin, safety=True)
    if missing:
        return missing
    version = str(snapshot["driver_version"])
    if "." in pin:
        if version == pin:
            return _ok(name, version, pin)
        return Check(
            name, Status.CRIT, version, pin, f"Install NVIDIA driver {pin} and reboot.", f"{version}, pinned {pin}"
        )
    if version.split(".", maxsplit=1)[0] == pin:
        return _ok(name, version, pin, f"branch {pin}")
    remedy = f"Install an NVIDIA driver of branch {pin} and reboot."
    return Check(name, Status.CRIT, version, pin, remedy, f"{version}, expected branch {pin}")


def check_driver_branch(snapshot: dict, expect: Expectations) -> Check:
    """WARN when the running driver's branch is past NVIDIA's end of life (or not supported at all), naming the
    supported branches; the node still trains, but gets no security fixes."""
    name, today = "driver_branch", expect.today
    if today is None:
        return _ok(name, snapshot.get("driver_version"), "supported", "no date to judge the branch's end of life by")
    missing = _missing(name, snapshot, "driver_version", "supported", safety=False)
    if missing:
        return missing
    version = str(snapshot["driver_version"])
    try:
        state = drivers.lifecycle(version, today)
    except ValueError:
        return Check(name, Status.UNKNOWN, version, "supported", REMEDY_QUERY_FAILED, "not a driver version")
    value = {"branch": state["branch"], "status": state["status"], "end_of_life": state["end_of_life"]}
    if state["status"] == "end_of_life":
        supported = ", ".join(f"R{b}" for b in state["supported"]) or "a supported branch"
        remedy = f"Plan a driver bump to a supported branch ({supported}) with the rollout playbook."
        return Check(name, Status.WARN, value, "supported", remedy, state["warning"])
    return _ok(name, value, "supported", state["describe"])


def driver_for_cuda(cuda: str) -> str:
    """The remedy's words for the driver that `cuda` needs."""
    minimum = CUDA_MIN_DRIVER.get(cuda)
    if minimum is None:
        return f"a driver that supports CUDA {cuda}"
    return f"driver branch {minimum.split('.')[0]} or newer (CUDA {cuda} needs >= {minimum})"


def check_cuda_driver(snapshot: dict, expect: Expectations) -> Check:
    name, needed = "cuda_driver_version", expect.min_cuda_driver
    if needed is None:
        return _ok(name, snapshot.get("cuda_driver_version"), None, "no minimum CUDA version set")
    missing = _missing(name, snapshot, "cuda_driver_version", needed, safety=True)
    if missing:
        return missing
    supported = str(snapshot["cuda_driver_version"])
    have, want = _version(supported), _version(needed)
    if have is None or want is None:
        detail = f"cannot compare CUDA {supported} with {needed}"
        return Check(name, Status.UNKNOWN, supported, needed, REMEDY_QUERY_FAILED, detail)
    if have >= want:
        return _ok(name, supported, needed)
    remedy = f"Install {driver_for_cuda(needed)} and reboot."
    return Check(
        name, Status.CRIT, supported, needed, remedy, f"driver supports CUDA {supported}, stack needs {needed}"
    )


# --- per-GPU checks ---------------------------------------------------------------------------------------------


def check_gpu_model(gpu: dict, expect: Expectations, name: str) -> Check:
    want = expect.model_substring
    missing = _missing(name, gpu, "name", want, safety=True)
    if missing:
        return missing
    gpu_name = gpu["name"]
    remedy = f"Move this node to an inventory group for {gpu_name} GPUs."
    if want.lower() != ANY_HOPPER:
        if want in gpu_name:
            return _ok(name, gpu_name, want, _sku_detail(gpu_name))
        return Check(name, Status.CRIT, gpu_name, want, remedy, f"{gpu_name}, expected {want}")
    missing = _missing(name, gpu, "compute_capability", want, safety=True)
    if missing:
        return missing
    cc = gpu["compute_capability"]
    if cc != HOPPER_COMPUTE_CAPABILITY:
        detail = f"{gpu_name} (compute capability {cc}) is not a Hopper GPU ({HOPPER_COMPUTE_CAPABILITY})"
        return Check(name, Status.CRIT, gpu_name, want, remedy, detail)
    return _ok(name, gpu_name, want, _sku_detail(gpu_name))


def _sku_detail(gpu_name: str) -> str:
    sku = sku_of(gpu_name)
    if sku is not None:
        return f"{sku.label}: thresholds from the SKU table"
    return "not in the SKU table: the table's lowest thresholds apply"


def check_compute_capability(gpu: dict, expect: Expectations, name: str) -> Check:
    want = expect.compute_capability
    missing = _missing(name, gpu, "compute_capability", want, safety=True)
    if missing:
        return missing
    have = gpu["compute_capability"]
    if have == want:
        return _ok(name, have, want)
    remedy = f"Build the stack for compute capability {have} or move the node to an inventory group for it."
    return Check(name, Status.CRIT, have, want, remedy, f"{have}, expected {want}")


def check_persistence(gpu: dict, expect: Expectations, name: str) -> Check:
    missing = _missing(name, gpu, "persistence_mode", True, safety=False)
    if missing:
        return missing
    if gpu["persistence_mode"] or not expect.require_persistence:
        return _ok(name, gpu["persistence_mode"], expect.require_persistence)
    remedy = "Enable persistence mode: systemctl enable --now nvidia-persistenced."
    return Check(name, Status.WARN, False, True, remedy, "persistence mode off: every job pays the driver's init time")


def check_ecc_mode(gpu: dict, expect: Expectations, name: str) -> Check:
    missing = _missing(name, gpu, "ecc_enabled", True, safety=True)
    if missing:
        return missing
    if gpu["ecc_enabled"]:
        return _ok(name, True, True)
    remedy = f"Enable ECC (nvidia-smi -i {gpu.get('index')} -e 1), then reset the GPU or reboot."
    return Check(name, Status.CRIT, False, True, remedy, "ECC disabled: memory errors would corrupt results silently")


def check_ecc_volatile(gpu: dict, expect: Expectations, name: str) -> Check:
    missing = _missing(name, gpu, "ecc_uncorrectable_volatile", 0, safety=True)
    if missing:
        return missing
    count = gpu["ecc_uncorrectable_volatile"]
    if count == 0:
        return _ok(name, 0, 0)
    remedy = f"Drain the node and reset the GPU (nvidia-smi -r -i {gpu.get('index')}); RMA it if errors recur."
    return Check(name, Status.CRIT, count, 0, remedy)


def check_ecc_aggregate(gpu: dict, expect: Expectations, name: str) -> Check:
    missing = _missing(name, gpu, "ecc_uncorrectable_aggregate", 0, safety=True)
    if missing:
        return missing
    count = gpu["ecc_uncorrectable_aggregate"]
    if count == 0:
        return _ok(name, 0, 0)
    remedy = "Watch this GPU: RMA it if the count grows or row remapping fails."
    return Check(name, Status.WARN, count, 0, remedy)


def check_remapped_rows(gpu: dict, expect: Expectations, name: str) -> Check:
    threshold = {"pending": False, "failure": False}
    missing = _missing(name, gpu, "remapped_rows", threshold, safety=True)
    if missing:
        return missing
    rows = gpu["remapped_rows"]
    if rows.get("failure"):
        remedy = "Drain the node and RMA the GPU: a row remapping failed."
        return Check(name, Status.CRIT, rows, threshold, remedy, "row remapping failure")
    if rows.get("pending"):
        remedy = f"Reset the GPU (nvidia-smi -r -i {gpu.get('index')}) or reboot to apply the pending row remapping."
        return Check(name, Status.WARN, rows, threshold, remedy, "row remapping pending")
    return _ok(name, rows, threshold)


def decode_clock_event_reasons(mask: int) -> list[tuple[str, Status]]:
    """The active reasons in `mask`, in bit order; bits NVML has not named are WARN as 'unknown_0x...'."""
    active = [(reason, status) for bit, reason, status in CLOCK_EVENT_REASONS if mask & bit]
    unknown = mask & ~sum(bit for bit, _, _ in CLOCK_EVENT_REASONS)
    bit = 1
    while bit <= unknown:
        if unknown & bit:
            active.append((f"unknown_{bit:#x}", Status.WARN))
        bit <<= 1
    return active


def check_clock_event_reasons(gpu: dict, expect: Expectations, name: str) -> Check:
    missing = _missing(name, gpu, "clock_event_reasons", [], safety=False)
    if missing:
        return missing
    active = decode_clock_event_reasons(gpu["clock_event_reasons"])
    reasons = [reason for reason, _ in active]
    status = worst(s for _, s in active)
    if status is Status.OK:
        return _ok(name, reasons, [])
    first = next(reason for reason, s in active if s is status)
    remedy = CLOCK_EVENT_REMEDIES.get(first, "Check the GPU's clocks with nvidia-smi -q -d PERFORMANCE.")
    return Check(name, status, reasons, [], remedy)


def check_pcie_generation(gpu: dict, expect: Expectations, name: str) -> Check:
    missing = _missing(name, gpu, "pcie_link_gen_max", gpu.get("pcie_link_gen_gpu_max"), safety=False)
    if missing:
        return missing
    link, device, current = gpu["pcie_link_gen_max"], gpu.get("pcie_link_gen_gpu_max"), gpu.get("pcie_link_gen_current")
    # Below the link's maximum now is normal: GPUs drop the link speed when idle.
    now = f"; gen {current} now" if current is not None else ""
    if device is None:
        sku = sku_of(gpu.get("name"))
        if sku is None:
            return _ok(name, link, None, f"link max gen {link}{now}; the GPU's own maximum not reported")
        device = sku.pcie_gen  # the datasheet's, when NVML does not report the GPU's own
    if link < device:
        remedy = "Check the slot, riser and BIOS PCIe settings: the link cannot reach the GPU's generation."
        return Check(name, Status.CRIT, link, device, remedy, f"link max gen {link} of the GPU's gen {device}{now}")
    return _ok(name, link, device, f"link max gen {link} of the GPU's gen {device}{now}")


def check_pcie_width(gpu: dict, expect: Expectations, name: str) -> Check:
    want = expect.pcie_link_width or int(sku_threshold(gpu.get("name"), "pcie_width"))
    missing = _missing(name, gpu, "pcie_link_width_max", want, safety=False)
    if missing:
        return missing
    link, current = gpu["pcie_link_width_max"], gpu.get("pcie_link_width_current")
    now = f"; x{current} now" if current is not None else ""
    if link < want:
        remedy = "Reseat the GPU or its riser and check the slot: the link trained narrower than the GPU."
        return Check(name, Status.CRIT, link, want, remedy, f"link max x{link} of x{want}{now}")
    return _ok(name, link, want, f"link max x{link} of x{want}{now}")


def check_temperature(gpu: dict, expect: Expectations, name: str) -> Check:
    slowdown = gpu.get("temperature_slowdown_c")
    missing = _missing(name, gpu, "temperature_c", slowdown, safety=False)
    if missing:
        return missing
    temp = gpu["temperature_c"]
    if slowdown is None:
        return _ok(name, temp, None, f"{temp} C; slowdown threshold not reported")
    headroom = slowdown - temp
    detail = f"{temp} C, {headroom} C below slowdown at {slowdown} C"
    if headroom <= 0:
        remedy = "Drain the node and fix the GPU's cooling: it is at its slowdown temperature."
        return Check(name, Status.CRIT, temp, slowdown, remedy, f"{temp} C, at or above slowdown at {slowdown} C")
    if headroom < expect.max_temp_headroom_c:
        remedy = "Check the GPU's cooling: fans, airflow and inlet temperature."
        return Check(name, Status.WARN, temp, slowdown, remedy, detail)
    return _ok(name, temp, slowdown, detail)


def check_power(gpu: dict, expect: Expectations, name: str) -> Check:
    limit = gpu.get("power_limit_w")
    missing = _missing(name, gpu, "power_usage_w", limit, safety=False)
    if missing:
        return missing
    draw = gpu["power_usage_w"]
    if not limit:
        return _ok(name, draw, None, f"{draw:g} W; power limit not reported")
    detail = f"{draw:g} W of {limit:g} W limit ({draw / limit:.0%})"
    sku = sku_of(gpu.get("name"))
    if sku is not None and limit < sku.min_power_w:
        remedy = f"Raise the power limit (nvidia-smi -i {gpu.get('index')} -pl {sku.max_power_w:g}): clocks are capped."
        detail += f"; the limit is below the {sku.label}'s {sku.min_power_w:g} W"
        return Check(name, Status.WARN, draw, limit, remedy, detail)
    if draw >= expect.power_warn_fraction * limit:
        remedy = "Find what keeps the GPU at its power limit (nvidia-smi pmon); clocks are capped while it lasts."
        return Check(name, Status.WARN, draw, limit, remedy, detail)
    return _ok(name, draw, limit, detail)


# Per-GPU checks in report order: name prefix, function.
GPU_CHECKS: tuple[tuple[str, Callable[[dict, Expectations, str], Check]], ...] = (
    ("gpu_model", check_gpu_model),
    ("compute_capability", check_compute_capability),
    ("persistence_mode", check_persistence),
    ("ecc_mode", check_ecc_mode),
    ("ecc_uncorrectable_volatile", check_ecc_volatile),
    ("ecc_uncorrectable_aggregate", check_ecc_aggregate),
    ("remapped_rows", check_remapped_rows),
    ("clock_event_reasons", check_clock_event_reasons),
    ("pcie_link_generation", check_pcie_generation),
    ("pcie_link_width", check_pcie_width),
    ("temperature", check_temperature),
    ("power_draw", check_power),
)


def gpu_checks(gpu: dict, expect: Expectations) -> list[Check]:
    """All checks of one GPU, named like 'ecc_uncorrectable_volatile[3]'. A GPU that NVML counts but cannot open
    gets one CRIT check instead: nothing else about it can be known, and it cannot run a job."""
    index = gpu.get("index")
    handle_error = (gpu.get("errors") or {}).get("handle")
    if handle_error is not None:
        remedy = "Drain the node, check dmesg for Xid errors and reboot; RMA the GPU if it stays inaccessible."
        return [
            Check(
                f"gpu_accessible[{index}]", Status.CRIT, f"NVML cannot open GPU {index}: {handle_error}", None, remedy
            )
        ]
    return [check(gpu, expect, f"{prefix}[{index}]") for prefix, check in GPU_CHECKS]


def evaluate(snapshot: Any, expect: Expectations | None = None) -> list[Check]:
    """Every check of the node. Without a visible GPU only `nvidia_gpu_visible` (CRIT): the others would just
    repeat it. Never raises on an error snapshot."""
    expect = expect if expect is not None else Expectations()
    visible = check_gpu_visible(snapshot)
    if visible.status is not Status.OK:
        return [visible]
    gpus = gpus_of(snapshot)
    result = [
        visible,
        check_gpu_count(gpus, expect),
        check_driver_version(snapshot, expect),
        *([check_driver_branch(snapshot, expect)] if expect.today is not None else []),
        check_cuda_driver(snapshot, expect),
    ]
    for gpu in gpus:
        result.extend(gpu_checks(gpu, expect))
    return result
