"""Package index queries for the stack rules: which releases exist, which files they ship, their core metadata.

Talks to a PEP 691 simple index (PyPI by default). Wheel metadata comes from the PEP 658 ``.metadata`` file when the
index serves one, else from the wheel itself through HTTP range requests (the zip's central directory and the one
METADATA member: a few kilobytes, not the wheel). Answers are cached on disk per (package, version).
"""

from __future__ import annotations

import email.parser
import io
import json
import os
import re
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from h100fleet.node.lockfile import normalize

DEFAULT_INDEX = "https://pypi.org/simple"
_ACCEPT = "application/vnd.pypi.simple.v1+json"


@dataclass(frozen=True)
class Release:
    """What the rules need of one release of one package."""

    name: str
    version: str
    files: tuple[str, ...] = ()
    requires_dist: tuple[str, ...] = ()
    requires_python: str | None = None
    extra_files: dict[str, str] = field(default_factory=dict, compare=False)
    has_metadata: bool = True  # False: only what the index page says (files, Requires-Python)

    @property
    def has_wheel(self) -> bool:
        return any(f.endswith(".whl") for f in self.files)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "files": list(self.files),
            "requires_dist": list(self.requires_dist),
            "requires_python": self.requires_python,
            "extra_files": self.extra_files,
            "has_metadata": self.has_metadata,
        }

    @classmethod
    def from_json(cls, data: dict) -> Release:
        return cls(
            name=data["name"],
            version=data["version"],
            files=tuple(data.get("files", ())),
            requires_dist=tuple(data.get("requires_dist", ())),
            requires_python=data.get("requires_python"),
            extra_files=dict(data.get("extra_files", {})),
            has_metadata=bool(data.get("has_metadata", True)),
        )


class Index:
    """Interface of the index the rules consult (PyPI through HTTP, or recorded answers)."""

    def versions(self, name: str) -> list[str]:
        raise NotImplementedError

    def release(self, name: str, version: str, metadata: bool = True) -> Release | None:
        """One release; metadata=False may skip reading the wheel's METADATA (Requires-Dist)."""
        raise NotImplementedError


class RecordedIndex(Index):
    """Answers recorded from a real index into a directory of JSON files (tests, offline checks)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _load(self, name: str) -> dict:
        path = self.directory / f"{normalize(name)}.json"
        if not path.is_file():
            return {"versions": [], "releases": {}}
        return json.loads(path.read_text())

    def versions(self, name: str) -> list[str]:
        return list(self._load(name)["versions"])

    def release(self, name: str, version: str, metadata: bool = True) -> Release | None:
        data = self._load(name)["releases"].get(version)
        return Release.from_json(data) if data else None


class RecordingIndex(Index):
    """Passes queries to another index and writes every answer as a RecordedIndex directory (test fixtures)."""

    def __init__(self, inner: Index, directory: Path):
        self.inner, self.directory = inner, Path(directory)

    def _update(self, name: str, change) -> None:
        path = self.directory / f"{normalize(name)}.json"
        data = json.loads(path.read_text()) if path.is_file() else {"versions": [], "releases": {}}
        change(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")

    def versions(self, name: str) -> list[str]:
        versions = self.inner.versions(name)
        self._update(name, lambda d: d.__setitem__("versions", versions))
        return versions

    def release(self, name: str, version: str, metadata: bool = True) -> Release | None:
        release = self.inner.release(name, version, metadata)
        if release is not None:

            def store(d):
                old = d["releases"].get(version)
                if old is None or not old.get("has_metadata") or release.has_metadata:
                    d["releases"][version] = release.to_json()
                if not d["versions"]:
                    d["versions"] = self.inner.versions(name)

            self._update(name, store)
        return release


class _RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file that fetches only the byte ranges read."""

    def __init__(self, url: str, opener):
        self.url, self._open, self.pos = url, opener, 0
        with self._open(urllib.request.Request(url, method="HEAD")) as response:
            self.size = int(response.headers["Content-Length"])

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        if end <= self.pos:
            return b""
        request = urllib.request.Request(self.url, headers={"Range": f"bytes={self.pos}-{end - 1}"})
        with self._open(request) as response:
            data = response.read()
        self.pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class PyPIIndex(Index):
    """A PEP 691 simple index with an on-disk cache of the answers."""

    def __init__(self, url: str = DEFAULT_INDEX, cache_dir: Path | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "h100fleet" / "index")
        self.timeout = timeout
        self._projects: dict[str, dict] = {}

    def _open(self, request):
        return urllib.request.urlopen(request, timeout=self.timeout)

    def _project(self, name: str) -> dict:
        key = normalize(name)
        if key not in self._projects:
            request = urllib.request.Request(f"{self.url}/{key}/", headers={"Accept": _ACCEPT})
            try:
                with self._open(request) as response:
                    self._projects[key] = json.load(response)
            except urllib.error.HTTPError as error:
                if error.code != 404:
                    raise
                self._projects[key] = {"files": [], "versions": []}
        return self._projects[key]

    def versions(self, name: str) -> list[str]:
        return list(self._project(name).get("versions", []))

    def release(self, name: str, version: str, metadata: bool = True) -> Release | None:
        cache = self.cache_dir / f"{normalize(name)}-{version}.json"
        if cache.is_file():
            cached = Release.from_json(json.loads(cache.read_text()))
            if cached.has_metadata or not metadata:
                return cached
        if version not in self.versions(name):
            return None
        files = [f for f in self._project(name)["files"] if _file_version(f["filename"], name) == version]
        release = self._read_release(name, version, files, metadata)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(release.to_json(), indent=1))
        return release

    def _read_release(self, name: str, version: str, files: list[dict], metadata: bool) -> Release:
        names = tuple(f["filename"] for f in files)
        wheels = sorted((f for f in files if f["filename"].endswith(".whl")), key=_wheel_preference)
        requires_dist: tuple[str, ...] = ()
        requires_python = next((f.get("requires-python") for f in files if f.get("requires-python")), None)
        extra: dict[str, str] = {}
        if wheels and metadata:
            wheel = wheels[0]
            text, extra = self._wheel_metadata(wheel)
            message = email.parser.Parser().parsestr(text)
            requires_dist = tuple(message.get_all("Requires-Dist") or ())
            requires_python = message.get("Requires-Python") or requires_python
        return Release(
            name, version, names, requires_dist, requires_python, extra, bool(wheels and metadata) or not wheels
        )

    def _wheel_metadata(self, wheel: dict) -> tuple[str, dict[str, str]]:
        """METADATA of a wheel, plus small build-info members that some packages ship (xformers' cpp_lib.json)."""
        extra: dict[str, str] = {}
        with zipfile.ZipFile(_RangeFile(wheel["url"], self._open)) as archive:
            members = archive.namelist()
            metadata = next(m for m in members if m.endswith(".dist-info/METADATA") and m.count("/") == 1)
            text = archive.read(metadata).decode()
            for member in members:
                if member.endswith("xformers/cpp_lib.json"):
                    extra[member] = archive.read(member).decode()
        return text, extra


def _file_version(filename: str, name: str) -> str | None:
    """The version in a wheel or sdist file name (None when the file is another project's)."""
    stem = filename[: -len(".whl")] if filename.endswith(".whl") else re.sub(r"\.(tar\.gz|zip|tar\.bz2)$", "", filename)
    prefix = re.sub(r"[-_.]+", "_", name).lower() + "-"
    if re.sub(r"[-_.]+", "_", stem.split("-")[0]).lower() + "-" != prefix:
        return None
    parts = stem.split("-")
    return parts[1] if len(parts) > 1 else None


def _wheel_preference(file: dict) -> tuple[int, str]:
    """Linux x86_64 wheels first: their metadata is the one the fleet installs."""
    name = file["filename"]
    return (0 if ("manylinux" in name and "x86_64" in name) or name.endswith("-any.whl") else 1, name)
