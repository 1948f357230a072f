"""Unit tests for h100fleet.probes.nvml: snapshot() driven by a fake pynvml module.

The fake takes its constants and exception classes from the real pynvml (which imports without a GPU; only nvmlInit
fails), and every call it receives is checked against the real function's signature, so it cannot drift from the
API that runs on the nodes.
"""

from __future__ import annotations

import ctypes
import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from h100fleet.probes import nvml

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvml"

# An HGX H100 board as NVML names its PCI functions: 8-digit domain, upper-case hex.
BUS_IDS = (
    "00000000:18:00.0",
    "00000000:2A:00.0",
    "00000000:3A:00.0",
    "00000000:5D:00.0",
    "00000000:9A:00.0",
    "00000000:AB:00.0",
    "00000000:BA:00.0",
    "00000000:DB:00.0",
)
H100_MEMORY = 81559 * 1024 * 1024  # "81559MiB" in nvidia-smi


def uuid(index: int) -> str:
    return f"GPU-5f0c2d8a-7b3e-4c19-a6d2-{index:012x}"


@dataclass
class FakeGPU:
    """One GPU as the NVML calls of the fake report it (raw NVML units: milliwatts, encoded enums)."""

    index: int = 0
    name: str = "NVIDIA H100 80GB HBM3"
    cc: tuple[int, int] = (9, 0)
    memory_total: int = H100_MEMORY
    persistence: int = pynvml.NVML_FEATURE_ENABLED
    ecc_mode: tuple[int, int] = (pynvml.NVML_FEATURE_ENABLED, pynvml.NVML_FEATURE_ENABLED)
    ecc_volatile: int = 0
    ecc_aggregate: int = 0
    remapped_rows: tuple[int, int, int, int] = (0, 0, 0, 0)
    clock_events: int = pynvml.nvmlClocksEventReasonGpuIdle
    pcie_gen: tuple[int, int, int] = (5, 5, 5)  # current, link max, GPU max
    pcie_width: tuple[int, int] = (16, 16)  # current, link max
    temperature: int = 35
    slowdown: int = 87
    shutdown: int = 92
    power_mw: int = 70000
    limit_mw: int = 700000
    raises: dict[str, Exception] = field(default_factory=dict)  # NVML function name -> what it raises

    @property
    def uuid(self) -> str:
        return uuid(self.index)

    @property
    def bus_id(self) -> str:
        return BUS_IDS[self.index % len(BUS_IDS)]


def h100s(count: int = 8, **changes) -> list[FakeGPU]:
    return [FakeGPU(index=i, **changes) for i in range(count)]


def _init(init_error: Exception | None):
    def init():
        if init_error is not None:
            raise init_error

    return init


def _handle(gpus: list[FakeGPU]):
    def handle(index):
        gpu = gpus[index]
        if "nvmlDeviceGetHandleByIndex" in gpu.raises:
            raise gpu.raises["nvmlDeviceGetHandleByIndex"]
        return gpu

    return handle


def _ecc_errors(gpu: FakeGPU, error_type: int, counter_type: int) -> int:
    assert error_type == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    return {pynvml.NVML_VOLATILE_ECC: gpu.ecc_volatile, pynvml.NVML_AGGREGATE_ECC: gpu.ecc_aggregate}[counter_type]


def _temperature(gpu: FakeGPU, sensor: int) -> int:
    assert sensor == pynvml.NVML_TEMPERATURE_GPU
    return gpu.temperature


def _temperature_threshold(gpu: FakeGPU, threshold: int) -> int:
    return {
        pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: gpu.slowdown,
        pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: gpu.shutdown,
    }[threshold]


# What each per-GPU NVML function of the fake returns, in pynvml's own shapes (tuples, lists, structs).
GPU_BODIES = {
    "nvmlDeviceGetName": lambda gpu: gpu.name,
    "nvmlDeviceGetUUID": lambda gpu: gpu.uuid,
    "nvmlDeviceGetPciInfo": lambda gpu: SimpleNamespace(busId=gpu.bus_id, busIdLegacy=gpu.bus_id.lower()),
    "nvmlDeviceGetCudaComputeCapability": lambda gpu: gpu.cc,
    "nvmlDeviceGetMemoryInfo": lambda gpu: SimpleNamespace(total=gpu.memory_total, free=gpu.memory_total, used=0),
    "nvmlDeviceGetPersistenceMode": lambda gpu: gpu.persistence,
    "nvmlDeviceGetEccMode": lambda gpu: list(gpu.ecc_mode),
    "nvmlDeviceGetTotalEccErrors": _ecc_errors,
    "nvmlDeviceGetRemappedRows": lambda gpu: gpu.remapped_rows,
    "nvmlDeviceGetCurrentClocksEventReasons": lambda gpu: gpu.clock_events,
    "nvmlDeviceGetCurrentClocksThrottleReasons": lambda gpu: gpu.clock_events,
    "nvmlDeviceGetCurrPcieLinkGeneration": lambda gpu: gpu.pcie_gen[0],
    "nvmlDeviceGetMaxPcieLinkGeneration": lambda gpu: gpu.pcie_gen[1],
    "nvmlDeviceGetGpuMaxPcieLinkGeneration": lambda gpu: gpu.pcie_gen[2],
    "nvmlDeviceGetCurrPcieLinkWidth": lambda gpu: gpu.pcie_width[0],
    "nvmlDeviceGetMaxPcieLinkWidth": lambda gpu: gpu.pcie_width[1],
    "nvmlDeviceGetTemperatureV": _temperature,
    "nvmlDeviceGetTemperature": _temperature,
    "nvmlDeviceGetTemperatureThreshold": _temperature_threshold,
    "nvmlDeviceGetPowerUsage": lambda gpu: gpu.power_mw,
    "nvmlDeviceGetEnforcedPowerLimit": lambda gpu: gpu.limit_mw,
}


def fake_nvml(
    gpus: list[FakeGPU],
    *,
    driver: str = "550.163.01",
    cuda: int = 12040,
    init_error: Exception | None = None,
    raises: dict[str, Exception] | None = None,
    missing: tuple[str, ...] = (),
) -> SimpleNamespace:
    """A stand-in for the pynvml module. `raises` makes system-level functions raise, FakeGPU.raises per-GPU ones;
    `missing` leaves functions out, as an older pynvml would. `calls` records (name, args) of every call."""
    calls: list[tuple[str, tuple]] = []
    system_raises = raises or {}
    bodies = {
        "nvmlInit": _init(init_error),
        "nvmlShutdown": lambda: None,
        "nvmlSystemGetDriverVersion": lambda: driver,
        "nvmlSystemGetCudaDriverVersion_v2": lambda: cuda,
        "nvmlSystemGetNVMLVersion": lambda: f"{cuda // 1000}.{driver}",
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": _handle(gpus),
        **GPU_BODIES,
    }

    def recorded(name, body):
        def call(*args):
            calls.append((name, args))
            if name in system_raises:
                raise system_raises[name]
            if args and isinstance(args[0], FakeGPU) and name in args[0].raises:
                raise args[0].raises[name]
            return body(*args)

        return call

    module = SimpleNamespace(calls=calls)
    for name in dir(pynvml):  # constants and exception classes, exactly as the real module has them
        if name.startswith(("NVML_", "NVMLError")):
            setattr(module, name, getattr(pynvml, name))
    for name, body in bodies.items():
        if name not in missing:
            setattr(module, name, recorded(name, body))
    return module


def called(module: SimpleNamespace) -> list[str]:
    return [name for name, _ in module.calls]


def expected_gpu(index: int, **changes) -> dict:
    """The snapshot record of FakeGPU(index) with `changes`."""
    record = {
        "index": index,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": uuid(index),
        "pci_bus_id": BUS_IDS[index],
        "compute_capability": "9.0",
        "memory_total_bytes": 85520809984,
        "persistence_mode": True,
        "ecc_enabled": True,
        "ecc_uncorrectable_volatile": 0,
        "ecc_uncorrectable_aggregate": 0,
        "remapped_rows": {"corrected": 0, "uncorrected": 0, "pending": False, "failure": False},
        "clock_event_reasons": 1,
        "pcie_link_gen_current": 5,
        "pcie_link_gen_max": 5,
        "pcie_link_gen_gpu_max": 5,
        "pcie_link_width_current": 16,
        "pcie_link_width_max": 16,
        "temperature_c": 35,
        "temperature_slowdown_c": 87,
        "temperature_shutdown_c": 92,
        "power_usage_w": 70.0,
        "power_limit_w": 700.0,
        "not_supported": [],
        "errors": {},
    }
    record.update(changes)
    return record


def only_gpu(module: SimpleNamespace) -> dict:
    snap = nvml.snapshot(module)
    [gpu] = snap["gpus"]
    return gpu


# --- the real pynvml ---------------------------------------------------------------------------------------------

PROBE_FUNCTIONS = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlSystemGetDriverVersion",
    "nvmlSystemGetCudaDriverVersion_v2",
    "nvmlSystemGetNVMLVersion",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetPciInfo",
    "nvmlDeviceGetCudaComputeCapability",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetPersistenceMode",
    "nvmlDeviceGetEccMode",
    "nvmlDeviceGetTotalEccErrors",
    "nvmlDeviceGetRemappedRows",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
    "nvmlDeviceGetCurrPcieLinkGeneration",
    "nvmlDeviceGetMaxPcieLinkGeneration",
    "nvmlDeviceGetGpuMaxPcieLinkGeneration",
    "nvmlDeviceGetCurrPcieLinkWidth",
    "nvmlDeviceGetMaxPcieLinkWidth",
    "nvmlDeviceGetTemperatureV",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetTemperatureThreshold",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
)
PROBE_NAMES = (
    "NVMLError",
    "NVMLError_NotSupported",
    "NVMLError_FunctionNotFound",
    "NVMLError_LibraryNotFound",
    "NVMLError_DriverNotLoaded",
    "NVMLError_NoPermission",
    "NVMLError_LibRmVersionMismatch",
    "NVML_FEATURE_ENABLED",
    "NVML_MEMORY_ERROR_TYPE_UNCORRECTED",
    "NVML_VOLATILE_ECC",
    "NVML_AGGREGATE_ECC",
    "NVML_TEMPERATURE_GPU",
    "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN",
    "NVML_TEMPERATURE_THRESHOLD_SHUTDOWN",
)


@pytest.mark.parametrize("name", PROBE_FUNCTIONS + PROBE_NAMES)
def test_real_pynvml_has_the_names_the_probe_uses(name: str):
    assert hasattr(pynvml, name)


def test_the_fake_implements_exactly_the_probe_functions():
    module = fake_nvml(h100s(1))
    assert sorted(n for n in vars(module) if n.startswith("nvml")) == sorted(PROBE_FUNCTIONS)


def test_every_query_the_probe_names_is_a_probe_function():
    assert set(nvml.CLOCK_EVENT_QUERIES) | set(nvml.TEMPERATURE_QUERIES) <= set(PROBE_FUNCTIONS)


def test_fake_calls_fit_the_real_signatures():
    module = fake_nvml(h100s(2))
    nvml.snapshot(module)
    assert module.calls
    for name, args in module.calls:
        inspect.signature(getattr(pynvml, name)).bind(*args)  # raises TypeError on a mismatch


def test_constants_the_fake_relies_on():
    # The NVML values the recorded fixtures were taken with: a change here means re-recording them.
    assert (pynvml.NVML_FEATURE_DISABLED, pynvml.NVML_FEATURE_ENABLED) == (0, 1)
    assert (pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC) == (0, 1)
    assert pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED == 1
    assert pynvml.NVML_TEMPERATURE_GPU == 0
    assert (pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN) == (0, 1)


def test_real_pynvml_error_texts():
    # snapshot()'s plain reasons quote these.
    assert str(pynvml.NVMLError_DriverNotLoaded()) == "Driver Not Loaded"
    assert str(pynvml.NVMLError_NoPermission()) == "Insufficient Permissions"
    assert str(pynvml.NVMLError_NotSupported()) == "Not Supported"
    assert str(pynvml.NVMLError_GpuIsLost()) == "GPU is lost"
    assert isinstance(pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED), pynvml.NVMLError_NotSupported)


def _libnvidia_ml_loads() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_libnvidia_ml_loads(), reason="an NVIDIA driver is installed here")
def test_real_pynvml_without_a_driver():
    assert nvml.snapshot() == {"error": "libnvidia-ml.so not found: no NVIDIA driver installed"}


# --- the snapshot -------------------------------------------------------------------------------------------------


def test_snapshot_exact():
    module = fake_nvml(h100s(2))
    assert nvml.snapshot(module) == {
        "schema": 1,
        "driver_version": "550.163.01",
        "cuda_driver_version": "12.4",
        "nvml_version": "12.550.163.01",
        "gpus": [expected_gpu(0), expected_gpu(1)],
        "not_supported": [],
        "errors": {},
    }


def test_snapshot_key_order_is_fixed():
    snap = nvml.snapshot(fake_nvml(h100s(1)))
    assert list(snap) == ["schema", *nvml.SYSTEM_FIELDS, "gpus", "not_supported", "errors"]
    assert list(snap["gpus"][0]) == ["index", *nvml.GPU_FIELDS, "not_supported", "errors"]


def test_snapshot_round_trips_through_json():
    snap = nvml.snapshot(fake_nvml(h100s(8)))
    assert json.loads(json.dumps(snap)) == snap


def test_snapshot_queries_in_order_and_shuts_down():
    module = fake_nvml(h100s(1))
    nvml.snapshot(module)
    names = called(module)
    assert names[:5] == [
        "nvmlInit",
        "nvmlSystemGetDriverVersion",
        "nvmlSystemGetCudaDriverVersion_v2",
        "nvmlSystemGetNVMLVersion",
        "nvmlDeviceGetCount",
    ]
    assert names[-1] == "nvmlShutdown"
    assert names.count("nvmlShutdown") == 1
    # The newer queries answered, so their deprecated fallbacks were never asked.
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" not in names
    assert "nvmlDeviceGetTemperature" not in names


def test_queries_get_the_nvml_enums():
    gpu = FakeGPU()
    module = fake_nvml([gpu])
    nvml.snapshot(module)
    args = {(name, a[1:]) for name, a in module.calls if a and a[0] is gpu}
    assert ("nvmlDeviceGetTotalEccErrors", (1, 0)) in args  # uncorrected, volatile
    assert ("nvmlDeviceGetTotalEccErrors", (1, 1)) in args  # uncorrected, aggregate
    assert ("nvmlDeviceGetTemperatureV", (0,)) in args  # GPU sensor
    assert ("nvmlDeviceGetTemperatureThreshold", (1,)) in args  # slowdown
    assert ("nvmlDeviceGetTemperatureThreshold", (0,)) in args  # shutdown


def test_zero_gpus():
    module = fake_nvml([])
    snap = nvml.snapshot(module)
    assert snap["gpus"] == []
    assert (snap["driver_version"], snap["errors"]) == ("550.163.01", {})
    assert called(module)[-1] == "nvmlShutdown"


@pytest.mark.parametrize(
    ("encoded", "text"),
    [(12040, "12.4"), (12020, "12.2"), (12080, "12.8"), (11080, "11.8"), (13000, "13.0"), (12090, "12.9")],
)
def test_cuda_version(encoded: int, text: str):
    assert nvml.cuda_version(encoded) == text
    assert nvml.snapshot(fake_nvml([], cuda=encoded))["cuda_driver_version"] == text


def test_power_milliwatts_to_watts():
    gpu = only_gpu(fake_nvml([FakeGPU(power_mw=69871, limit_mw=699000)]))
    assert (gpu["power_usage_w"], gpu["power_limit_w"]) == (69.871, 699.0)


def test_remapped_rows_flags_are_bools():
    gpu = only_gpu(fake_nvml([FakeGPU(remapped_rows=(3, 1, 1, 0))]))
    assert gpu["remapped_rows"] == {"corrected": 3, "uncorrected": 1, "pending": True, "failure": False}


@pytest.mark.parametrize(
    ("persistence", "ecc_mode", "expected"),
    [
        (1, (1, 1), (True, True)),
        (0, (0, 0), (False, False)),
        (1, (0, 1), (True, False)),  # ECC enabled pending a reset: not protecting anything yet
        (0, (1, 0), (False, True)),  # ECC disabled pending a reset: still on now
    ],
)
def test_persistence_and_current_ecc_mode(persistence: int, ecc_mode: tuple[int, int], expected: tuple):
    gpu = only_gpu(fake_nvml([FakeGPU(persistence=persistence, ecc_mode=ecc_mode)]))
    assert (gpu["persistence_mode"], gpu["ecc_enabled"]) == expected


def test_bytes_from_an_older_pynvml_are_decoded():
    module = fake_nvml([FakeGPU()], driver="550.163.01")
    module.nvmlDeviceGetName = lambda gpu: b"NVIDIA H100 80GB HBM3"
    module.nvmlSystemGetDriverVersion = lambda: b"550.163.01"
    module.nvmlDeviceGetPciInfo = lambda gpu: SimpleNamespace(busId=b"00000000:18:00.0")
    snap = nvml.snapshot(module)
    assert (snap["driver_version"], snap["gpus"][0]["name"], snap["gpus"][0]["pci_bus_id"]) == (
        "550.163.01",
        "NVIDIA H100 80GB HBM3",
        "00000000:18:00.0",
    )


# --- fields that cannot be read ---------------------------------------------------------------------------------


def test_not_supported_fields_are_none_and_listed():
    gpu = FakeGPU(
        raises={
            "nvmlDeviceGetEccMode": pynvml.NVMLError_NotSupported(),
            "nvmlDeviceGetTotalEccErrors": pynvml.NVMLError_NotSupported(),
            "nvmlDeviceGetRemappedRows": pynvml.NVMLError_NotSupported(),
            "nvmlDeviceGetPowerUsage": pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED),
        }
    )
    assert only_gpu(fake_nvml([gpu])) == expected_gpu(
        0,
        ecc_enabled=None,
        ecc_uncorrectable_volatile=None,
        ecc_uncorrectable_aggregate=None,
        remapped_rows=None,
        power_usage_w=None,
        not_supported=[
            "ecc_enabled",
            "ecc_uncorrectable_volatile",
            "ecc_uncorrectable_aggregate",
            "remapped_rows",
            "power_usage_w",
        ],
    )


def test_other_nvml_errors_are_none_with_the_error_text():
    gpu = FakeGPU(
        raises={
            "nvmlDeviceGetTemperatureV": pynvml.NVMLError_GpuIsLost(),
            "nvmlDeviceGetUUID": pynvml.NVMLError_NoPermission(),
            "nvmlDeviceGetRemappedRows": pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT),
        }
    )
    module = fake_nvml([gpu])
    assert only_gpu(module) == expected_gpu(
        0,
        uuid=None,
        remapped_rows=None,
        temperature_c=None,
        errors={"uuid": "Insufficient Permissions", "remapped_rows": "Timeout", "temperature_c": "GPU is lost"},
    )
    # An error is an answer: the deprecated temperature query is not asked instead.
    assert "nvmlDeviceGetTemperature" not in called(module)


def test_system_field_errors():
    module = fake_nvml(
        h100s(1),
        raises={
            "nvmlSystemGetCudaDriverVersion_v2": pynvml.NVMLError_Unknown(),
            "nvmlSystemGetNVMLVersion": pynvml.NVMLError_NotSupported(),
        },
    )
    snap = nvml.snapshot(module)
    assert (snap["driver_version"], snap["cuda_driver_version"], snap["nvml_version"]) == ("550.163.01", None, None)
    assert snap["errors"] == {"cuda_driver_version": "Unknown Error"}
    assert snap["not_supported"] == ["nvml_version"]
    assert snap["gpus"] == [expected_gpu(0)]


def test_function_missing_from_the_driver_is_not_supported():
    gpu = FakeGPU(raises={"nvmlDeviceGetGpuMaxPcieLinkGeneration": pynvml.NVMLError_FunctionNotFound()})
    assert only_gpu(fake_nvml([gpu])) == expected_gpu(
        0, pcie_link_gen_gpu_max=None, not_supported=["pcie_link_gen_gpu_max"]
    )


def test_function_missing_from_pynvml_is_not_supported():
    module = fake_nvml([FakeGPU()], missing=("nvmlDeviceGetGpuMaxPcieLinkGeneration",))
    assert only_gpu(module) == expected_gpu(0, pcie_link_gen_gpu_max=None, not_supported=["pcie_link_gen_gpu_max"])


@pytest.mark.parametrize(
    ("queries", "field", "value"),
    [
        (nvml.CLOCK_EVENT_QUERIES, "clock_event_reasons", 0x0C),
        (nvml.TEMPERATURE_QUERIES, "temperature_c", 85),
    ],
)
class TestFallbackToTheDeprecatedQuery:
    """Clock event reasons and temperature have a newer query and a deprecated one for older drivers."""

    @staticmethod
    def gpu(**raises) -> FakeGPU:
        return FakeGPU(clock_events=0x0C, temperature=85, raises=raises)

    def test_newer_query_missing_from_pynvml(self, queries, field, value):
        module = fake_nvml([self.gpu()], missing=(queries[0],))
        assert only_gpu(module)[field] == value
        assert queries[1] in called(module)

    def test_newer_query_missing_from_the_driver(self, queries, field, value):
        module = fake_nvml([self.gpu(**{queries[0]: pynvml.NVMLError_FunctionNotFound()})])
        gpu = only_gpu(module)
        assert (gpu[field], gpu["not_supported"], gpu["errors"]) == (value, [], {})
        assert called(module).count(queries[1]) == 1

    def test_neither_query_answers(self, queries, field, value):
        module = fake_nvml([self.gpu(**dict.fromkeys(queries, pynvml.NVMLError_NotSupported()))])
        gpu = only_gpu(module)
        assert (gpu[field], gpu["not_supported"], gpu["errors"]) == (None, [field], {})

    def test_neither_query_exists(self, queries, field, value):
        gpu = only_gpu(fake_nvml([self.gpu()], missing=queries))
        assert (gpu[field], gpu["not_supported"]) == (None, [field])


def test_gpu_that_cannot_be_opened():
    gpus = h100s(2)
    gpus[1].raises["nvmlDeviceGetHandleByIndex"] = pynvml.NVMLError_GpuIsLost()
    module = fake_nvml(gpus)
    snap = nvml.snapshot(module)
    lost = {"index": 1, **dict.fromkeys(nvml.GPU_FIELDS), "not_supported": [], "errors": {"handle": "GPU is lost"}}
    assert snap["gpus"] == [expected_gpu(0), lost]
    assert called(module)[-1] == "nvmlShutdown"


def test_device_count_failure_is_an_error_snapshot():
    module = fake_nvml(h100s(1), raises={"nvmlDeviceGetCount": pynvml.NVMLError_Unknown()})
    assert nvml.snapshot(module) == {"error": "NVML could not count the GPUs (NVML: Unknown Error)"}
    assert called(module)[-1] == "nvmlShutdown"


# --- NVML that will not start --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (pynvml.NVMLError_LibraryNotFound(), "libnvidia-ml.so not found: no NVIDIA driver installed"),
        (pynvml.NVMLError_DriverNotLoaded(), "NVIDIA driver not loaded (NVML: Driver Not Loaded)"),
        (
            pynvml.NVMLError_NoPermission(),
            "no permission to open the NVIDIA devices (NVML: Insufficient Permissions)",
        ),
        (
            pynvml.NVMLError_LibRmVersionMismatch(),
            "NVIDIA kernel module and libnvidia-ml.so are different versions: reboot after a driver change "
            "(NVML: RM has detected an NVML/RM version mismatch.)",
        ),
        (pynvml.NVMLError_Unknown(), "NVML could not initialise (NVML: Unknown Error)"),
        (pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED), "NVIDIA driver not loaded (NVML: Driver Not Loaded)"),
    ],
)
def test_init_failure_is_a_plain_reason(error: Exception, reason: str):
    module = fake_nvml(h100s(8), init_error=error)
    assert nvml.snapshot(module) == {"error": reason}
    assert called(module) == ["nvmlInit"]  # no shutdown of what never started


def test_pynvml_not_importable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    snap = nvml.snapshot()
    assert list(snap) == ["error"]
    assert snap["error"].startswith("pynvml (nvidia-ml-py) not importable: ")


def test_shutdown_after_an_unexpected_exception():
    gpu = FakeGPU(raises={"nvmlDeviceGetName": RuntimeError("bug")})
    module = fake_nvml([gpu])
    with pytest.raises(RuntimeError, match="bug"):
        nvml.snapshot(module)
    assert called(module)[-1] == "nvmlShutdown"


def test_failed_shutdown_does_not_lose_the_snapshot():
    module = fake_nvml(h100s(1), raises={"nvmlShutdown": pynvml.NVMLError_Uninitialized()})
    assert nvml.snapshot(module)["gpus"] == [expected_gpu(0)]


def test_error_text_of_an_error_whose_text_fails():
    class Broken(pynvml.NVMLError):
        def __str__(self):
            raise RuntimeError("no NVML to ask")

    gpu = FakeGPU(raises={"nvmlDeviceGetUUID": Broken(999)})
    assert only_gpu(fake_nvml([gpu]))["errors"] == {"uuid": "Broken"}


# --- the recorded fixtures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.name)
def test_fixture_has_the_snapshot_format(path: Path):
    recorded = json.loads(path.read_text())
    if "error" in recorded:
        assert list(recorded) == ["error"]
        assert isinstance(recorded["error"], str)
        return
    live = nvml.snapshot(fake_nvml(h100s(1)))
    assert list(recorded) == list(live)
    assert recorded["schema"] == nvml.SCHEMA
    for gpu in recorded["gpus"]:
        assert list(gpu) == list(live["gpus"][0])
        assert [type(v) for v in gpu.values()] == [type(v) for v in live["gpus"][0].values()]
    assert [gpu["index"] for gpu in recorded["gpus"]] == list(range(len(recorded["gpus"])))


def test_fixtures_exist():
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == [
        "a100.json",
        "degraded_pcie.json",
        "ecc_errors.json",
        "h200.json",
        "healthy_h100_8gpu.json",
        "no_gpu.json",
        "throttled.json",
    ]


def test_no_gpu_fixture_is_what_a_node_without_a_loaded_driver_records():
    recorded = json.loads((FIXTURES / "no_gpu.json").read_text())
    assert nvml.snapshot(fake_nvml([], init_error=pynvml.NVMLError_DriverNotLoaded())) == recorded


def test_healthy_fixture_is_what_eight_fake_h100s_record():
    recorded = json.loads((FIXTURES / "healthy_h100_8gpu.json").read_text())
    assert nvml.snapshot(fake_nvml(h100s(8))) == recorded
