"""Record what NVML reports about the node's GPUs as a plain, JSON-serialisable snapshot.

Device state is read through NVML (the `nvidia-ml-py` package, module `pynvml`), never by parsing nvidia-smi text,
whose layout changes between driver branches. `snapshot` only records; `checks` judges. A snapshot is complete in
itself, so the same checks run on a live node and on snapshots recorded from other nodes (tests/fixtures/nvml).

Every per-field query is wrapped so that one failing query costs one field, not the probe: a field the GPU does
not support is None and listed in "not_supported"; a field whose query failed for another reason is None and its
error text is in "errors". When NVML cannot start at all the snapshot is {"error": "<plain reason>"}.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

SCHEMA = 1

SYSTEM_FIELDS = ("driver_version", "cuda_driver_version", "nvml_version")
GPU_FIELDS = (
    "name",
    "uuid",
    "pci_bus_id",
    "compute_capability",
    "memory_total_bytes",
    "persistence_mode",
    "ecc_enabled",
    "ecc_uncorrectable_volatile",
    "ecc_uncorrectable_aggregate",
    "remapped_rows",
    "clock_event_reasons",
    "pcie_link_gen_current",
    "pcie_link_gen_max",
    "pcie_link_gen_gpu_max",
    "pcie_link_width_current",
    "pcie_link_width_max",
    "temperature_c",
    "temperature_slowdown_c",
    "temperature_shutdown_c",
    "power_usage_w",
    "power_limit_w",
)

# The NVML query of each field, newest first: a query that this pynvml lacks, or that the driver's libnvidia-ml
# lacks (NVMLError_FunctionNotFound), falls through to the next one, and to "not supported" after the last.
CLOCK_EVENT_QUERIES = ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")
TEMPERATURE_QUERIES = ("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature")

# Init failures that have a plainer explanation than NVML's own message. The NVML text is kept in parentheses
# where it adds something; "NVML Shared Library Not Found" does not.
INIT_FAILURES = (
    ("NVMLError_LibraryNotFound", "libnvidia-ml.so not found: no NVIDIA driver installed"),
    ("NVMLError_DriverNotLoaded", "NVIDIA driver not loaded (NVML: {err})"),
    ("NVMLError_NoPermission", "no permission to open the NVIDIA devices (NVML: {err})"),
    (
        "NVMLError_LibRmVersionMismatch",
        "NVIDIA kernel module and libnvidia-ml.so are different versions: reboot after a driver change (NVML: {err})",
    ),
)


def _error_text(err: BaseException) -> str:
    try:
        text = str(err)
    except Exception:  # pynvml's __str__ calls into NVML for codes it does not know; never let that escape.
        text = ""
    return text or type(err).__name__


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cuda_version(encoded: int) -> str:
    """NVML's CUDA version integer as major.minor: 12040 -> '12.4' (1000 * major + 10 * minor)."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def init_failure(nvml: Any, err: BaseException) -> str:
    """The plain reason NVML could not start."""
    for class_name, template in INIT_FAILURES:
        cls = getattr(nvml, class_name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            return template.format(err=_error_text(err))
    return f"NVML could not initialise (NVML: {_error_text(err)})"


class _Recorder:
    """Fills one record (the system part, or one GPU) field by field, recording why a field is None."""

    def __init__(self, nvml: Any, record: dict):
        self.nvml = nvml
        self.record = record
        self._not_supported = tuple(
            cls
            for cls in (
                getattr(nvml, "NVMLError_NotSupported", None),
                getattr(nvml, "NVMLError_FunctionNotFound", None),
            )
            if isinstance(cls, type)
        )

    def query(
        self, field: str, queries: str | tuple[str, ...], *args: Any, convert: Callable[[Any], Any] | None = None
    ) -> Any:
        """Store the (converted) answer of the first of `queries` that answers as `field`. A query missing from
        pynvml or from the driver, or not supported by the GPU, passes to the next; an NVML error ends the search."""
        for name in (queries,) if isinstance(queries, str) else queries:
            fn = getattr(self.nvml, name, None)
            if fn is None:
                continue
            try:
                value = fn(*args)
            except self.nvml.NVMLError as err:
                if isinstance(err, self._not_supported):
                    continue
                self.record["errors"][field] = _error_text(err)
                return None
            self.record[field] = convert(value) if convert is not None else value
            return self.record[field]
        self.record["not_supported"].append(field)
        return None


def _remapped_rows(rows: Any) -> dict:
    corrected, uncorrected, pending, failure = rows
    return {
        "corrected": int(corrected),
        "uncorrected": int(uncorrected),
        "pending": bool(pending),
        "failure": bool(failure),
    }


def _gpu(nvml: Any, index: int) -> dict:
    record: dict = {"index": index, **dict.fromkeys(GPU_FIELDS), "not_supported": [], "errors": {}}
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except nvml.NVMLError as err:
        # A GPU NVML counts but cannot open ("GPU is lost" after an Xid 79): every field stays None.
        record["errors"]["handle"] = _error_text(err)
        return record
    rec = _Recorder(nvml, record)
    rec.query("name", "nvmlDeviceGetName", handle, convert=_str)
    rec.query("uuid", "nvmlDeviceGetUUID", handle, convert=_str)
    rec.query("pci_bus_id", "nvmlDeviceGetPciInfo", handle, convert=lambda info: _str(info.busId))
    rec.query(
        "compute_capability",
        "nvmlDeviceGetCudaComputeCapability",
        handle,
        convert=lambda cc: f"{cc[0]}.{cc[1]}",
    )
    rec.query("memory_total_bytes", "nvmlDeviceGetMemoryInfo", handle, convert=lambda mem: int(mem.total))
    enabled = nvml.NVML_FEATURE_ENABLED
    rec.query("persistence_mode", "nvmlDeviceGetPersistenceMode", handle, convert=lambda mode: mode == enabled)
    # [current, pending]: only the current mode protects the running job.
    rec.query("ecc_enabled", "nvmlDeviceGetEccMode", handle, convert=lambda modes: modes[0] == enabled)
    uncorrected = nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    rec.query("ecc_uncorrectable_volatile", "nvmlDeviceGetTotalEccErrors", handle, uncorrected, nvml.NVML_VOLATILE_ECC)
    rec.query(
        "ecc_uncorrectable_aggregate", "nvmlDeviceGetTotalEccErrors", handle, uncorrected, nvml.NVML_AGGREGATE_ECC
    )
    rec.query("remapped_rows", "nvmlDeviceGetRemappedRows", handle, convert=_remapped_rows)
    rec.query("clock_event_reasons", CLOCK_EVENT_QUERIES, handle, convert=int)
    rec.query("pcie_link_gen_current", "nvmlDeviceGetCurrPcieLinkGeneration", handle)
    rec.query("pcie_link_gen_max", "nvmlDeviceGetMaxPcieLinkGeneration", handle)
    rec.query("pcie_link_gen_gpu_max", "nvmlDeviceGetGpuMaxPcieLinkGeneration", handle)
    rec.query("pcie_link_width_current", "nvmlDeviceGetCurrPcieLinkWidth", handle)
    rec.query("pcie_link_width_max", "nvmlDeviceGetMaxPcieLinkWidth", handle)
    rec.query("temperature_c", TEMPERATURE_QUERIES, handle, nvml.NVML_TEMPERATURE_GPU)
    rec.query(
        "temperature_slowdown_c", "nvmlDeviceGetTemperatureThreshold", handle, nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
    )
    rec.query(
        "temperature_shutdown_c", "nvmlDeviceGetTemperatureThreshold", handle, nvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN
    )
    rec.query("power_usage_w", "nvmlDeviceGetPowerUsage", handle, convert=lambda mw: mw / 1000)
    rec.query("power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", handle, convert=lambda mw: mw / 1000)
    return record


def _load() -> Any:
    import pynvml

    return pynvml


def snapshot(nvml: Any = None) -> dict:
    """What NVML reports now, or {"error": reason} when NVML cannot start. Never raises an NVML error.

    `nvml` is the pynvml module, or a stand-in with the same names (the tests inject one)."""
    if nvml is None:
        try:
            nvml = _load()
        except ImportError as err:
            return {"error": f"pynvml (nvidia-ml-py) not importable: {err}"}
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as err:
        return {"error": init_failure(nvml, err)}
    try:
        system: dict = {"schema": SCHEMA, **dict.fromkeys(SYSTEM_FIELDS), "gpus": [], "not_supported": [], "errors": {}}
        rec = _Recorder(nvml, system)
        rec.query("driver_version", "nvmlSystemGetDriverVersion", convert=_str)
        rec.query("cuda_driver_version", "nvmlSystemGetCudaDriverVersion_v2", convert=cuda_version)
        rec.query("nvml_version", "nvmlSystemGetNVMLVersion", convert=_str)
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as err:
            return {"error": f"NVML could not count the GPUs (NVML: {_error_text(err)})"}
        system["gpus"] = [_gpu(nvml, index) for index in range(count)]
        return system
    finally:
        with contextlib.suppress(nvml.NVMLError):  # the snapshot is taken; a failed shutdown changes nothing in it
            nvml.nvmlShutdown()
