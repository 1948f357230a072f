"""Unit tests for h100fleet.node.facts (the `h100fleet_node` local fact), driven by fake sysfs trees."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from h100fleet.node import facts

KERNEL = "6.1.0-28-amd64"

# An HGX H100 8-GPU board: 8 SXM5 GPUs on two NUMA nodes, 4 NVSwitches.
GPU_ADDRESSES = (
    "0000:18:00.0",
    "0000:2a:00.0",
    "0000:3a:00.0",
    "0000:5d:00.0",
    "0000:9a:00.0",
    "0000:ab:00.0",
    "0000:ba:00.0",
    "0000:db:00.0",
)
NVSWITCH_ADDRESSES = ("0000:05:00.0", "0000:06:00.0", "0000:07:00.0", "0000:08:00.0")

PCI_IDS = (
    "#\n"
    "#\tList of PCI ID's\n"
    "#\n"
    "10dd  Evans & Sutherland\n"
    "\t0100  Lightning 1200\n"
    "10de  NVIDIA Corporation\n"
    "\t22a3  GH100 [H100 NVSwitch]\n"
    "\t2330  GH100 [H100 SXM5 80GB]\n"
    "\t\t10de 16c1  H100 SXM5 80GB\n"
    "\n"
    "\t2331  GH100 [H100 PCIe]\n"
    "10df  Emulex Corporation\n"
    "\t2330  Not an NVIDIA device\n"
    "\t0720  OneConnect NIC (Skyhawk)\n"
)
NVIDIA_NAMES = {
    0x22A3: "GH100 [H100 NVSwitch]",
    0x2330: "GH100 [H100 SXM5 80GB]",
    0x2331: "GH100 [H100 PCIe]",
}


def make_pci_device(
    root: Path,
    address: str,
    vendor: str | None,
    device: str | None,
    pci_class: str | None,
    *,
    driver: str | None = None,
    numa: str | None = None,
) -> Path:
    """A PCI function laid out as on a real kernel: a directory under sys/devices, linked from sys/bus/pci/devices,
    whose `driver` is a relative link to sys/bus/pci/drivers/<driver>. A None value leaves that file out."""
    dev = root / "sys/devices/pci0000:00" / address
    dev.mkdir(parents=True)
    for name, value in (("vendor", vendor), ("device", device), ("class", pci_class), ("numa_node", numa)):
        if value is not None:
            (dev / name).write_text(f"{value}\n")
    if driver is not None:
        (root / "sys/bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
        (dev / "driver").symlink_to(f"../../../bus/pci/drivers/{driver}")
    link = root / "sys/bus/pci/devices" / address
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(f"../../../devices/pci0000:00/{address}")
    return dev


def write_pci_ids(root: Path, rel: str = "usr/share/misc/pci.ids", text: str = PCI_IDS) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_hgx_node(root: Path) -> None:
    """The HGX H100 board plus what else sits on the bus, created in no particular order."""
    # Not NVIDIA: a ConnectX-7 and a host bridge.
    make_pci_device(root, "0000:29:00.0", "0x15b3", "0x1021", "0x020700", driver="mlx5_core", numa="0")
    make_pci_device(root, "0000:00:00.0", "0x8086", "0x09a2", "0x060000")
    for i, address in enumerate(reversed(GPU_ADDRESSES)):
        make_pci_device(root, address, "0x10de", "0x2330", "0x030200", driver="nvidia", numa="1" if i < 4 else "0")
        # The HDMI audio function of an NVIDIA card: an NVIDIA device, but no GPU.
        make_pci_device(root, address[:-1] + "1", "0x10de", "0x22ba", "0x040300", driver="snd_hda_intel", numa="0")
    # NVSwitches: firmware reports no NUMA affinity (-1) or none at all; one not bound to any driver.
    make_pci_device(root, NVSWITCH_ADDRESSES[2], "0x10de", "0x22a3", "0x068000", driver="nvidia", numa="-1")
    make_pci_device(root, NVSWITCH_ADDRESSES[0], "0x10de", "0x22a3", "0x068000", driver="nvidia", numa="-1")
    make_pci_device(root, NVSWITCH_ADDRESSES[3], "0x10de", "0x22a3", "0x068000", driver=None, numa="-1")
    make_pci_device(root, NVSWITCH_ADDRESSES[1], "0x10de", "0x22a3", "0x068000", driver="nvidia", numa=None)


def expected_hgx_devices(gpu_name: str, nvswitch_name: str) -> list[dict]:
    nvswitches = [
        {
            "kind": "nvswitch",
            "pci_address": address,
            "device_id": "0x22a3",
            "name": nvswitch_name,
            "driver": None if address == "0000:08:00.0" else "nvidia",
            "numa_node": None if address == "0000:06:00.0" else -1,
        }
        for address in NVSWITCH_ADDRESSES
    ]
    gpus = [
        {
            "kind": "gpu",
            "pci_address": address,
            "device_id": "0x2330",
            "name": gpu_name,
            "driver": "nvidia",
            "numa_node": 0 if i < 4 else 1,
        }
        for i, address in enumerate(GPU_ADDRESSES)
    ]
    return nvswitches + gpus


@pytest.fixture
def hgx(tmp_path: Path) -> Path:
    make_hgx_node(tmp_path)
    return tmp_path


# --- PCI devices -------------------------------------------------------------------------------------------


def test_hgx_devices_exact(hgx: Path):
    assert facts.pci_devices(str(hgx)) == expected_hgx_devices("NVIDIA device 0x2330", "NVIDIA device 0x22a3")


def test_hgx_devices_sorted_by_pci_address(hgx: Path):
    addresses = [d["pci_address"] for d in facts.pci_devices(str(hgx))]
    assert addresses == [*NVSWITCH_ADDRESSES, *GPU_ADDRESSES]


def test_hgx_collect_counts(hgx: Path):
    fact = facts.collect(str(hgx), kernel=KERNEL)
    assert fact["gpu_count"] == 8
    assert fact["nvswitch_count"] == 4
    assert fact["gpu_models"] == {"NVIDIA device 0x2330": 8}
    assert len(fact["devices"]) == 12
    # The audio functions and the non-NVIDIA devices are not in the fact.
    assert not [d for d in fact["devices"] if d["pci_address"].endswith(".1")]
    assert {d["kind"] for d in fact["devices"]} == {"gpu", "nvswitch"}


def test_hgx_collect_with_pci_ids_names(hgx: Path):
    write_pci_ids(hgx)
    fact = facts.collect(str(hgx), kernel=KERNEL)
    assert fact["gpu_models"] == {"GH100 [H100 SXM5 80GB]": 8}
    assert fact["devices"] == expected_hgx_devices("GH100 [H100 SXM5 80GB]", "GH100 [H100 NVSwitch]")


@pytest.mark.parametrize(
    ("pci_class", "kind"),
    [
        ("0x030200", "gpu"),  # 3D controller: H100 SXM/PCIe
        ("0x030000", "gpu"),  # VGA-compatible controller
        ("0x068000", "nvswitch"),  # other bridge: NVSwitch
        ("0x040300", None),  # HD audio function of a card
        ("0x0c0330", None),  # USB xHCI controller of a card
        ("0x0c8000", None),  # serial bus controller (USB-C UCSI) of a card
        ("0x060400", None),  # PCI bridge
        ("0x038000", None),  # other display controller
    ],
)
def test_device_kind_from_class(tmp_path: Path, pci_class: str, kind: str | None):
    make_pci_device(tmp_path, "0000:01:00.0", "0x10de", "0x2330", pci_class)
    devices = facts.pci_devices(str(tmp_path))
    assert [d["kind"] for d in devices] == ([kind] if kind else [])


def test_non_nvidia_device_with_gpu_class_is_ignored(tmp_path: Path):
    make_pci_device(tmp_path, "0000:01:00.0", "0x1002", "0x74a1", "0x030200", driver="amdgpu")  # AMD MI300X
    assert facts.pci_devices(str(tmp_path)) == []
    assert facts.collect(str(tmp_path), kernel=KERNEL)["gpu_count"] == 0


def test_uppercase_and_unprefixed_hex_are_read(tmp_path: Path):
    make_pci_device(tmp_path, "0000:01:00.0", "10DE", "2330", "30200", numa="3")
    assert facts.pci_devices(str(tmp_path)) == [
        {
            "kind": "gpu",
            "pci_address": "0000:01:00.0",
            "device_id": "0x2330",
            "name": "NVIDIA device 0x2330",
            "driver": None,
            "numa_node": 3,
        }
    ]


@pytest.mark.parametrize(("numa", "expected"), [("0", 0), ("1", 1), ("-1", -1), ("7", 7), (None, None)])
def test_numa_node(tmp_path: Path, numa: str | None, expected: int | None):
    make_pci_device(tmp_path, "0000:01:00.0", "0x10de", "0x2330", "0x030200", numa=numa)
    [device] = facts.pci_devices(str(tmp_path))
    assert device["numa_node"] == expected


@pytest.mark.parametrize("driver", ["nvidia", "vfio-pci", "nouveau"])
def test_driver_is_the_name_the_link_points_to(tmp_path: Path, driver: str):
    make_pci_device(tmp_path, "0000:01:00.0", "0x10de", "0x2330", "0x030200", driver=driver)
    [device] = facts.pci_devices(str(tmp_path))
    assert device["driver"] == driver


def test_driver_link_that_points_nowhere_is_none(tmp_path: Path):
    dev = make_pci_device(tmp_path, "0000:01:00.0", "0x10de", "0x2330", "0x030200")
    (dev / "driver").symlink_to("../../../bus/pci/drivers/gone")
    [device] = facts.pci_devices(str(tmp_path))
    assert device["driver"] is None


# --- device names from pci.ids --------------------------------------------------------------------------


def test_nvidia_device_names_from_misc_pci_ids(tmp_path: Path):
    write_pci_ids(tmp_path)
    # Exactly NVIDIA's devices: not the subsystem line, not the vendors before or after.
    assert facts.nvidia_device_names(str(tmp_path)) == NVIDIA_NAMES


def test_nvidia_device_names_from_hwdata_pci_ids(tmp_path: Path):
    write_pci_ids(tmp_path, "usr/share/hwdata/pci.ids")
    assert facts.nvidia_device_names(str(tmp_path)) == NVIDIA_NAMES


def test_misc_pci_ids_wins_over_hwdata(tmp_path: Path):
    write_pci_ids(tmp_path, "usr/share/misc/pci.ids", "10de  NVIDIA Corporation\n\t2330  from misc\n")
    write_pci_ids(tmp_path, "usr/share/hwdata/pci.ids", "10de  NVIDIA Corporation\n\t2330  from hwdata\n")
    assert facts.nvidia_device_names(str(tmp_path)) == {0x2330: "from misc"}


def test_no_pci_ids(tmp_path: Path):
    assert facts.nvidia_device_names(str(tmp_path)) == {}


def test_pci_ids_without_nvidia(tmp_path: Path):
    write_pci_ids(tmp_path, text="10dd  Evans & Sutherland\n\t0100  Lightning 1200\n10df  Emulex Corporation\n")
    assert facts.nvidia_device_names(str(tmp_path)) == {}


def test_pci_ids_with_nvidia_last_in_file(tmp_path: Path):
    write_pci_ids(tmp_path, text="10dd  Evans & Sutherland\n\t0100  Lightning 1200\n10de  NVIDIA\n\t2330  H100\n")
    assert facts.nvidia_device_names(str(tmp_path)) == {0x2330: "H100"}


@pytest.mark.parametrize("rel", ["usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids"])
def test_device_name_from_pci_ids(tmp_path: Path, rel: str):
    write_pci_ids(tmp_path, rel)
    make_pci_device(tmp_path, "0000:01:00.0", "0x10de", "0x2330", "0x030200")
    [device] = facts.pci_devices(str(tmp_path))
    assert device["name"] == "GH100 [H100 SXM5 80GB]"


def test_device_missing_from_pci_ids_gets_fallback_name(tmp_path: Path):
    write_pci_ids(tmp_path)
    make_pci_device(tmp_path, "0000:01:00.0", "0x10de", "0x2335", "0x030200")  # H200: newer than this pci.ids
    [device] = facts.pci_devices(str(tmp_path))
    assert device["name"] == "NVIDIA device 0x2335"
    assert device["device_id"] == "0x2335"


@pytest.mark.parametrize(("device_file", "device_id"), [("0x2330", "0x2330"), ("0x0ff2", "0x0ff2"), ("0x1b", "0x001b")])
def test_fallback_name_without_pci_ids(tmp_path: Path, device_file: str, device_id: str):
    make_pci_device(tmp_path, "0000:01:00.0", "0x10de", device_file, "0x030200")
    [device] = facts.pci_devices(str(tmp_path))
    assert (device["device_id"], device["name"]) == (device_id, f"NVIDIA device {device_id}")


def test_gpu_models_counts_each_model(tmp_path: Path):
    write_pci_ids(tmp_path)
    make_pci_device(tmp_path, "0000:01:00.0", "0x10de", "0x2330", "0x030200")
    make_pci_device(tmp_path, "0000:02:00.0", "0x10de", "0x2331", "0x030200")
    make_pci_device(tmp_path, "0000:03:00.0", "0x10de", "0x2330", "0x030200")
    make_pci_device(tmp_path, "0000:04:00.0", "0x10de", "0x2335", "0x030200")
    fact = facts.collect(str(tmp_path), kernel=KERNEL)
    assert fact["gpu_count"] == 4
    assert fact["gpu_models"] == {
        "GH100 [H100 SXM5 80GB]": 2,
        "GH100 [H100 PCIe]": 1,
        "NVIDIA device 0x2335": 1,
    }


# --- nothing there -------------------------------------------------------------------------------------------


def test_empty_root(tmp_path: Path):
    assert facts.pci_devices(str(tmp_path)) == []
    assert facts.collect(str(tmp_path), kernel=KERNEL) == {
        "schema": 1,
        "kernel": KERNEL,
        "secure_boot": "unknown",
        "gpu_count": 0,
        "gpu_models": {},
        "nvswitch_count": 0,
        "devices": [],
        "nvidia_module_version": None,
        "nvidia_module_loaded": False,
        "nouveau_loaded": False,
    }


def test_pci_bus_without_nvidia(tmp_path: Path):
    make_pci_device(tmp_path, "0000:00:00.0", "0x8086", "0x09a2", "0x060000")
    make_pci_device(tmp_path, "0000:29:00.0", "0x15b3", "0x1021", "0x020700", driver="mlx5_core")
    make_pci_device(tmp_path, "0000:03:00.0", "0x1a03", "0x2000", "0x030000", driver="ast")  # BMC VGA
    fact = facts.collect(str(tmp_path), kernel=KERNEL)
    assert (fact["gpu_count"], fact["nvswitch_count"], fact["gpu_models"], fact["devices"]) == (0, 0, {}, [])


def test_empty_pci_devices_directory(tmp_path: Path):
    (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
    assert facts.pci_devices(str(tmp_path)) == []


# --- malformed sysfs -----------------------------------------------------------------------------------------


def test_malformed_devices_are_skipped(tmp_path: Path):
    make_pci_device(tmp_path, "0000:01:00.0", "garbage", "0x2330", "0x030200")
    make_pci_device(tmp_path, "0000:02:00.0", "0x10de", "0x2330", None)  # no class file
    make_pci_device(tmp_path, "0000:03:00.0", None, "0x2330", "0x030200")  # no vendor file
    make_pci_device(tmp_path, "0000:04:00.0", "0x10de", "0x2330", "not-a-class")
    make_pci_device(tmp_path, "0000:05:00.0", "", "0x2330", "0x030200")  # empty vendor file
    make_pci_device(tmp_path, "0000:06:00.0", "0x10de", "0x2330", "")  # empty class file
    (tmp_path / "sys/bus/pci/devices/stray-file").write_text("0x10de\n")  # not a device directory
    make_pci_device(tmp_path, "0000:07:00.0", "0x10de", "0x2330", "0x030200", numa="0")  # the one good GPU
    fact = facts.collect(str(tmp_path), kernel=KERNEL)
    assert fact["gpu_count"] == 1
    assert [d["pci_address"] for d in fact["devices"]] == ["0000:07:00.0"]


@pytest.mark.parametrize("device", [None, "", "garbage"])
def test_unreadable_device_id(tmp_path: Path, device: str | None):
    write_pci_ids(tmp_path)
    make_pci_device(tmp_path, "0000:01:00.0", "0x10de", device, "0x030200")
    [gpu] = facts.pci_devices(str(tmp_path))
    assert (gpu["device_id"], gpu["name"]) == (None, "unknown")


@pytest.mark.parametrize("numa", ["", "abc", "1.5", "0x1", "-"])
def test_malformed_numa_node_is_none(tmp_path: Path, numa: str):
    make_pci_device(tmp_path, "0000:01:00.0", "0x10de", "0x2330", "0x030200", numa=numa)
    [device] = facts.pci_devices(str(tmp_path))
    assert device["numa_node"] is None


def test_numa_node_with_two_minus_signs_is_none(tmp_path: Path):
    make_pci_device(tmp_path, "0000:01:00.0", "0x10de", "0x2330", "0x030200", numa="--1")
    [device] = facts.pci_devices(str(tmp_path))
    assert device["numa_node"] is None


@pytest.mark.parametrize("name", ["vendor", "class"])
def test_binary_garbage_in_vendor_or_class_is_skipped(tmp_path: Path, name: str):
    dev = make_pci_device(tmp_path, "0000:01:00.0", "0x10de", "0x2330", "0x030200")
    (dev / name).write_bytes(b"\xff\xfe\n")
    assert facts.pci_devices(str(tmp_path)) == []


@pytest.mark.parametrize(("name", "key"), [("device", "device_id"), ("numa_node", "numa_node")])
def test_binary_garbage_in_device_or_numa_node_is_none(tmp_path: Path, name: str, key: str):
    dev = make_pci_device(tmp_path, "0000:01:00.0", "0x10de", "0x2330", "0x030200", numa="0")
    (dev / name).write_bytes(b"\xff\xfe\n")
    [device] = facts.pci_devices(str(tmp_path))
    assert device[key] is None


# --- Secure Boot ---------------------------------------------------------------------------------------------


def write_secure_boot(root: Path, data: bytes) -> None:
    var = root / "sys/firmware" / facts.SECURE_BOOT_VAR
    var.parent.mkdir(parents=True)
    var.write_bytes(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x06\x00\x00\x00\x01", "enabled"),
        (b"\x06\x00\x00\x00\x00", "disabled"),
        (b"\x06\x00\x00\x00\x02", "disabled"),
        (b"\x06\x00\x00\x00", "disabled"),  # attributes only, no value
        (b"", "disabled"),
    ],
)
def test_secure_boot_from_efivar(tmp_path: Path, data: bytes, expected: str):
    write_secure_boot(tmp_path, data)
    assert facts.secure_boot(str(tmp_path)) == expected


def test_secure_boot_var_is_the_global_variable_guid():
    assert facts.SECURE_BOOT_VAR == "efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


def test_secure_boot_not_uefi(tmp_path: Path):
    (tmp_path / "sys/firmware/acpi").mkdir(parents=True)
    assert facts.secure_boot(str(tmp_path)) == "not_uefi"


def test_secure_boot_efivars_without_the_variable(tmp_path: Path):
    (tmp_path / "sys/firmware/efi/efivars").mkdir(parents=True)
    (tmp_path / "sys/firmware/efi/efivars/BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c").write_bytes(
        b"\x07\x00\x00\x00\x01\x00"
    )
    assert facts.secure_boot(str(tmp_path)) == "disabled"


def test_secure_boot_efi_without_efivars(tmp_path: Path):
    # efivarfs not mounted: nothing to tell.
    (tmp_path / "sys/firmware/efi").mkdir(parents=True)
    assert facts.secure_boot(str(tmp_path)) == "unknown"


def test_secure_boot_without_sys_firmware(tmp_path: Path):
    (tmp_path / "sys").mkdir()
    assert facts.secure_boot(str(tmp_path)) == "unknown"


def test_secure_boot_in_collect(tmp_path: Path):
    write_secure_boot(tmp_path, b"\x06\x00\x00\x00\x01")
    assert facts.collect(str(tmp_path), kernel=KERNEL)["secure_boot"] == "enabled"


# --- loaded kernel modules -----------------------------------------------------------------------------------


def test_nvidia_module_loaded(tmp_path: Path):
    (tmp_path / "sys/module/nvidia").mkdir(parents=True)
    (tmp_path / "sys/module/nvidia/version").write_text("550.163.01\n")
    assert facts.loaded_modules(str(tmp_path)) == {
        "nvidia_module_version": "550.163.01",
        "nvidia_module_loaded": True,
        "nouveau_loaded": False,
    }


def test_nouveau_loaded(tmp_path: Path):
    (tmp_path / "sys/module/nouveau").mkdir(parents=True)
    (tmp_path / "sys/module/drm").mkdir(parents=True)
    assert facts.loaded_modules(str(tmp_path)) == {
        "nvidia_module_version": None,
        "nvidia_module_loaded": False,
        "nouveau_loaded": True,
    }


def test_no_gpu_module_loaded(tmp_path: Path):
    (tmp_path / "sys/module/ext4").mkdir(parents=True)
    assert facts.loaded_modules(str(tmp_path)) == {
        "nvidia_module_version": None,
        "nvidia_module_loaded": False,
        "nouveau_loaded": False,
    }


def test_nvidia_module_without_version_file(tmp_path: Path):
    (tmp_path / "sys/module/nvidia").mkdir(parents=True)
    assert facts.loaded_modules(str(tmp_path)) == {
        "nvidia_module_version": None,
        "nvidia_module_loaded": True,
        "nouveau_loaded": False,
    }


def test_nvidia_modeset_alone_is_not_nvidia(tmp_path: Path):
    (tmp_path / "sys/module/nvidia_modeset").mkdir(parents=True)
    (tmp_path / "sys/module/nvidia_modeset/version").write_text("550.163.01\n")
    modules = facts.loaded_modules(str(tmp_path))
    assert (modules["nvidia_module_version"], modules["nvidia_module_loaded"]) == (None, False)


# --- collect() and main() ------------------------------------------------------------------------------------


def test_collect_full_node(hgx: Path):
    write_pci_ids(hgx)
    write_secure_boot(hgx, b"\x06\x00\x00\x00\x01")
    (hgx / "sys/module/nvidia").mkdir(parents=True)
    (hgx / "sys/module/nvidia/version").write_text("550.163.01\n")
    assert facts.collect(str(hgx), kernel=KERNEL) == {
        "schema": 1,
        "kernel": KERNEL,
        "secure_boot": "enabled",
        "gpu_count": 8,
        "gpu_models": {"GH100 [H100 SXM5 80GB]": 8},
        "nvswitch_count": 4,
        "devices": expected_hgx_devices("GH100 [H100 SXM5 80GB]", "GH100 [H100 NVSwitch]"),
        "nvidia_module_version": "550.163.01",
        "nvidia_module_loaded": True,
        "nouveau_loaded": False,
    }


def test_collect_schema_and_kernel(tmp_path: Path):
    fact = facts.collect(str(tmp_path), kernel="6.1.0-28-amd64")
    assert fact["schema"] == 1 == facts.SCHEMA
    assert fact["kernel"] == "6.1.0-28-amd64"


def test_collect_defaults_to_the_running_kernel(tmp_path: Path):
    assert facts.collect(str(tmp_path))["kernel"] == os.uname().release


def test_main_prints_json(hgx: Path, capsys: pytest.CaptureFixture[str]):
    (hgx / "sys/module/nouveau").mkdir(parents=True)
    assert facts.main([str(hgx)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.endswith("}\n")
    fact = json.loads(out)
    assert fact == facts.collect(str(hgx))
    assert fact["schema"] == 1
    assert fact["kernel"] == os.uname().release
    assert (fact["gpu_count"], fact["nvswitch_count"], fact["nouveau_loaded"]) == (8, 4, True)
    assert list(fact) == sorted(fact)


def test_main_reads_root_from_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    make_pci_device(tmp_path, "0000:01:00.0", "0x10de", "0x2330", "0x030200")
    monkeypatch.setattr(sys, "argv", ["h100fleet_node.fact", str(tmp_path)])
    assert facts.main() == 0
    assert json.loads(capsys.readouterr().out)["gpu_count"] == 1
