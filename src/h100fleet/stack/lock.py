"""Locking a stack with uv: one hash-locked requirements file per Python version, for linux x86_64."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from h100fleet.stack.manifest import Stack


def find_uv() -> str:
    """uv from $H100FLEET_UV, the PATH, or the repository's pinned copy (.tools/uv, made by scripts/bootstrap-host)."""
    candidates = [os.environ.get("H100FLEET_UV"), shutil.which("uv")]
    candidates.append(str(Path(__file__).resolve().parents[3] / ".tools" / "uv" / "bin" / "uv"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise FileNotFoundError("uv not found: set H100FLEET_UV or run scripts/bootstrap-host (pins uv in .tools/uv)")


def compile_argv(stack: Stack, python: str, output: Path | None, uv: str, hashes: bool = True) -> list[str]:
    """The uv pip compile command that (re)creates a stack's lock for one Python version."""
    argv = [
        uv,
        "pip",
        "compile",
        str(stack.requirements_path),
        "--python-version",
        python,
        "--python-platform",
        stack.platform,
        "--no-header",
        "--quiet",
    ]
    if hashes:
        argv.append("--generate-hashes")
    if stack.exclude_newer:
        argv += ["--exclude-newer", stack.exclude_newer]
    if stack.index_url:
        argv += ["--index-url", stack.index_url]
    if stack.constraints_path.is_file():
        argv += ["--constraint", str(stack.constraints_path)]
    argv += ["-o", str(output)] if output else ["-o", os.devnull]
    return argv


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    return env


def lock(stack: Stack, uv: str | None = None) -> dict[str, Path]:
    """Write lock-py<X.Y>.txt for every Python version of the stack; each file is replaced only when uv succeeds."""
    uv = uv or find_uv()
    written = {}
    for python in stack.python:
        target = stack.lock_path(python)
        header = (
            f"# Lock of stack {stack.id} for Python {python} on {stack.platform}, made by\n"
            f"#   h100fleet stack lock {stack.id}\n"
            f"# (uv pip compile --generate-hashes --exclude-newer {stack.exclude_newer}). Do not edit.\n"
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / target.name
            proc = subprocess.run(
                compile_argv(stack, python, out, uv), env=_env(), capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{stack.id}: uv pip compile for Python {python} failed:\n{proc.stderr.strip()}")
            partial = target.with_suffix(".txt.partial")
            partial.write_text(header + out.read_text())
            partial.replace(target)
        written[python] = target
    return written


def resolve_errors(stack: Stack, uv: str | None = None) -> dict[str, str | None]:
    """For each Python version: None when the requirements resolve, else the resolver's explanation."""
    uv = uv or find_uv()
    errors: dict[str, str | None] = {}
    for python in stack.python:
        proc = subprocess.run(
            compile_argv(stack, python, None, uv, hashes=False), env=_env(), capture_output=True, text=True, check=False
        )
        errors[python] = None if proc.returncode == 0 else (proc.stderr.strip() or f"uv exited {proc.returncode}")
    return errors
