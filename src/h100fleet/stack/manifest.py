"""Stack manifests: what a stack is, validated field by field with errors that name the field and what is expected."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from h100fleet.node.lockfile import Pin, lock_hash, parse_pins

DEFAULT_PLATFORM = "x86_64-manylinux_2_28"
_DRIVER = re.compile(r"^\d{3}(\.\d+){1,2}$")
_PYTHON = re.compile(r"^3\.\d{1,2}$")
_ID = re.compile(r"^[a-z0-9][a-z0-9.+_-]*$")


class ManifestError(ValueError):
    """A manifest field is missing or malformed."""


@dataclass(frozen=True)
class Deviation:
    package: str
    specified: str
    shipped: str
    reason: str


@dataclass(frozen=True)
class FlashAttn:
    version: str
    wheels: dict[str, str]  # Python version -> wheel file name
    url: str = ""  # template with {version} and {wheel}; empty: the wheelhouse or a source build


@dataclass
class Stack:
    """One stack directory: manifest, requirements input, per-Python locks."""

    path: Path
    id: str
    description: str
    python: list[str]
    min_driver: str
    cuda_runtime: str
    exclude_newer: str | None
    platform: str = DEFAULT_PLATFORM
    index_url: str | None = None
    imports: list[str] = field(default_factory=list)
    gpu_imports: list[str] = field(default_factory=list)
    flash_attn: FlashAttn | None = None
    deviations: list[Deviation] = field(default_factory=list)
    verified: list[dict] = field(default_factory=list)

    @property
    def requirements_path(self) -> Path:
        return self.path / "requirements.in"

    @property
    def constraints_path(self) -> Path:
        """Optional constraints.txt: versions the lock keeps where the resolution allows (a verified environment)."""
        return self.path / "constraints.txt"

    def lock_path(self, python: str) -> Path:
        return self.path / f"lock-py{python}.txt"

    def requirements_text(self) -> str:
        return self.requirements_path.read_text()

    def input_pins(self) -> dict[str, Pin]:
        return parse_pins(self.requirements_text())

    def lock_pins(self, python: str) -> dict[str, Pin] | None:
        path = self.lock_path(python)
        return parse_pins(path.read_text()) if path.is_file() else None

    def lock_hashes(self) -> dict[str, str]:
        return {py: lock_hash(self.lock_path(py)) for py in self.python if self.lock_path(py).is_file()}


def _require(data: dict, key: str, where: str, kind: type, expected: str):
    if key not in data or data[key] is None:
        raise ManifestError(f"{where}: field '{key}' is missing: expected {expected}")
    value = data[key]
    if not isinstance(value, kind):
        raise ManifestError(f"{where}: field '{key}' is {value!r}: expected {expected}")
    return value


def load(path: Path) -> Stack:
    """Load and validate ``<stack dir>/manifest.yml`` (or the manifest file itself)."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    manifest = directory / "manifest.yml"
    where = str(manifest)
    if not manifest.is_file():
        raise ManifestError(f"{where}: no such file (a stack directory holds manifest.yml and requirements.in)")
    data = yaml.safe_load(manifest.read_text()) or {}
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a mapping of fields, got {type(data).__name__}")

    stack_id = _require(data, "id", where, str, "the stack id, equal to the directory name")
    if not _ID.match(stack_id) or stack_id != directory.name:
        raise ManifestError(
            f"{where}: field 'id' is {stack_id!r}: expected lower-case letters, digits and .+_- "
            f"equal to the directory name {directory.name!r}"
        )
    python = _require(data, "python", where, list, 'a list of Python versions like ["3.10", "3.11"]')
    python = [str(v) for v in python]
    bad = [v for v in python if not _PYTHON.match(v)]
    if not python or bad:
        raise ManifestError(f"{where}: field 'python' is {python!r}: expected a non-empty list like ['3.10', '3.11']")
    min_driver = str(_require(data, "min_driver", where, (str, int), "a driver version like '550.54.15'"))
    if not _DRIVER.match(min_driver):
        raise ManifestError(f"{where}: field 'min_driver' is {min_driver!r}: expected a driver version like 550.54.15")
    cuda = str(_require(data, "cuda_runtime", where, (str, float), "the CUDA runtime of the wheels, like '12.1'"))
    if not re.match(r"^\d{2}\.\d$", cuda):
        raise ManifestError(f"{where}: field 'cuda_runtime' is {cuda!r}: expected major.minor like '12.1'")
    exclude_newer = data.get("exclude_newer")
    if exclude_newer is not None:
        exclude_newer = str(exclude_newer)
        try:
            dt.date.fromisoformat(exclude_newer)
        except ValueError:
            raise ManifestError(
                f"{where}: field 'exclude_newer' is {exclude_newer!r}: expected a date like 2024-08-31"
            ) from None

    flash_attn = _flash_attn(data.get("flash_attn"), where)
    deviations = _deviations(data.get("deviations") or [], where)

    stack = Stack(
        path=directory,
        id=stack_id,
        description=str(data.get("description", "")),
        python=python,
        min_driver=min_driver,
        cuda_runtime=cuda,
        exclude_newer=exclude_newer,
        platform=str(data.get("platform", DEFAULT_PLATFORM)),
        index_url=data.get("index_url"),
        imports=[str(m) for m in data.get("imports") or []],
        gpu_imports=[str(m) for m in data.get("gpu_imports") or []],
        flash_attn=flash_attn,
        deviations=deviations,
        verified=list(data.get("verified") or []),
    )
    if not stack.requirements_path.is_file():
        raise ManifestError(f"{stack.requirements_path}: no such file (the stack's requirements input)")
    return stack


def _flash_attn(flash, where: str) -> FlashAttn | None:
    if flash is None:
        return None
    if not isinstance(flash, dict) or "version" not in flash or not isinstance(flash.get("wheels") or {}, dict):
        raise ManifestError(f"{where}: field 'flash_attn' is {flash!r}: expected a mapping of version, wheels and url")
    wheels = {str(k): str(v) for k, v in (flash.get("wheels") or {}).items()}
    return FlashAttn(str(flash["version"]), wheels, str(flash.get("url") or ""))


def _deviations(items, where: str) -> list[Deviation]:
    deviations = []
    for i, item in enumerate(items):
        missing = [
            k for k in ("package", "specified", "shipped", "reason") if not isinstance(item, dict) or not item.get(k)
        ]
        if missing:
            raise ManifestError(
                f"{where}: field 'deviations[{i}]' lacks {', '.join(missing)}: every deviation from the "
                "specification names the package, the specified and the shipped requirement, and the reason"
            )
        deviations.append(
            Deviation(str(item["package"]), str(item["specified"]), str(item["shipped"]), str(item["reason"]))
        )
    return deviations


def discover(root: Path) -> dict[str, Stack]:
    """Every stack under a directory of stack directories, by id."""
    return {d.name: load(d) for d in sorted(Path(root).iterdir()) if (d / "manifest.yml").is_file()}
