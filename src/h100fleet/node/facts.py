#!/usr/bin/python3
"""Ansible local fact `h100fleet_node`: the node's NVIDIA hardware as the kernel sees it.

Installed by the node_baseline role as /etc/ansible/facts.d/h100fleet_node.fact and run at every fact
gathering, so later roles decide from the hardware (GPUs present? NVSwitches for fabric manager? Secure Boot?)
rather than from inventory flags. Reads sysfs only: it works before any NVIDIA driver is installed, never needs a
GPU, and uses nothing but the standard library of the node's system Python (3.7+).
"""

from __future__ import annotations

import json
import os
import sys

NVIDIA_VENDOR = 0x10DE
# PCI class codes (base class, subclass): display controllers and the "other bridge" class of NVSwitch.
GPU_CLASSES = {(0x03, 0x00), (0x03, 0x02)}  # VGA-compatible, 3D controller (data-centre GPUs)
NVSWITCH_CLASS = (0x06, 0x80)
SECURE_BOOT_VAR = "efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
PCI_IDS_PATHS = ("usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids")
SCHEMA = 1


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _hex(value: str | None) -> int | None:
    try:
        return int(value, 16) if value is not None else None
    except ValueError:
        return None


def nvidia_device_names(root: str = "/") -> dict[int, str]:
    """NVIDIA device id -> name from the node's pci.ids (installed with pciutils), or {} when there is none."""
    for rel in PCI_IDS_PATHS:
        try:
            with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as fh:
                return _parse_pci_ids(fh)
        except OSError:
            continue
    return {}


def _parse_pci_ids(lines) -> dict[int, str]:
    names: dict[int, str] = {}
    in_nvidia = False
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        if not line.startswith("\t"):
            in_nvidia = line[:4].lower() == "10de"
            if names and not in_nvidia:
                break
        elif in_nvidia and not line.startswith("\t\t"):
            dev_id, _, name = line.strip().partition(" ")
            device = _hex(dev_id)
            if device is not None:
                names[device] = name.strip()
    return names


def pci_devices(root: str = "/") -> list[dict]:
    """NVIDIA GPUs and NVSwitches on the PCI bus, sorted by address."""
    base = os.path.join(root, "sys/bus/pci/devices")
    try:
        addresses = sorted(os.listdir(base))
    except OSError:
        return []
    names = None
    found = []
    for address in addresses:
        dev = os.path.join(base, address)
        if _hex(_read(os.path.join(dev, "vendor"))) != NVIDIA_VENDOR:
            continue
        pci_class = _hex(_read(os.path.join(dev, "class")))
        if pci_class is None:
            continue
        cls = (pci_class >> 16, (pci_class >> 8) & 0xFF)
        if cls in GPU_CLASSES:
            kind = "gpu"
        elif cls == NVSWITCH_CLASS:
            kind = "nvswitch"
        else:
            continue
        device = _hex(_read(os.path.join(dev, "device")))
        if names is None:
            names = nvidia_device_names(root)
        driver = os.path.join(dev, "driver")
        numa = _read(os.path.join(dev, "numa_node"))
        found.append(
            {
                "kind": kind,
                "pci_address": address,
                "device_id": f"0x{device:04x}" if device is not None else None,
                "name": names.get(device) or (f"NVIDIA device 0x{device:04x}" if device is not None else "unknown"),
                "driver": os.path.basename(os.path.realpath(driver)) if os.path.exists(driver) else None,
                "numa_node": _int(numa),
            }
        )
    return found


def secure_boot(root: str = "/") -> str:
    """'enabled', 'disabled', 'not_uefi' (legacy BIOS boot: no Secure Boot) or 'unknown'."""
    firmware = os.path.join(root, "sys/firmware")
    if not os.path.isdir(os.path.join(firmware, "efi")):
        return "not_uefi" if os.path.isdir(firmware) else "unknown"
    try:
        with open(os.path.join(firmware, SECURE_BOOT_VAR), "rb") as fh:
            data = fh.read()
    except OSError:
        # UEFI without the variable: firmware without Secure Boot support.
        return "disabled" if os.path.isdir(os.path.join(firmware, "efi/efivars")) else "unknown"
    # efivarfs: 4 bytes of attributes, then the value (1 = enabled).
    return "enabled" if len(data) >= 5 and data[4] == 1 else "disabled"


def loaded_modules(root: str = "/") -> dict:
    """Versions of the NVIDIA kernel modules that are loaded now, and whether nouveau is."""
    module = os.path.join(root, "sys/module")
    return {
        "nvidia_module_version": _read(os.path.join(module, "nvidia/version")),
        "nvidia_module_loaded": os.path.isdir(os.path.join(module, "nvidia")),
        "nouveau_loaded": os.path.isdir(os.path.join(module, "nouveau")),
    }


def collect(root: str = "/", kernel: str | None = None) -> dict:
    devices = pci_devices(root)
    gpus = [d for d in devices if d["kind"] == "gpu"]
    models: dict[str, int] = {}
    for gpu in gpus:
        models[gpu["name"]] = models.get(gpu["name"], 0) + 1
    fact = {
        "schema": SCHEMA,
        "kernel": kernel if kernel is not None else os.uname().release,
        "secure_boot": secure_boot(root),
        "gpu_count": len(gpus),
        "gpu_models": models,
        "nvswitch_count": sum(1 for d in devices if d["kind"] == "nvswitch"),
        "devices": devices,
    }
    fact.update(loaded_modules(root))
    return fact


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = args[0] if args else "/"
    json.dump(collect(root), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
