"""Run the trainer under the training service's process restrictions where systemd cannot run it (a GPU machine
without systemd as PID 1): an unprivileged user, no capabilities, NoNewPrivileges, the unit's system-call allow list
(SystemCallFilter=@system-service, ~@privileged; denied calls fail with EPERM, as SystemCallErrorNumber=EPERM) and
its socket families (RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK), and optionally
MemoryDenyWriteExecute (the kernel's PR_SET_MDWE, which systemd 257+ uses too).

    python sandbox.py --backend unsloth [--mdwe] [--steps 6]

Builds a small random Llama and a dataset (as root, in a scratch directory), then trains it with
`python -m h100fleet.trainer` on the GPU inside the sandbox and prints a JSON verdict. The allow list is
unit-syscalls.json beside this file, expanded from `systemd-analyze syscall-filter` (systemd 252, Debian 12's).
Mount namespaces, DevicePolicy and the other namespace options need systemd itself: the molecule scenario runs those.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOBODY = 65534
PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
FAMILIES = [socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK]


def scmp_act_errno(errno: int) -> int:
    return 0x00050000 | (errno & 0xFFFF)


class ScmpArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


LIBSECCOMP = ctypes.CDLL("libseccomp.so.2", use_errno=True)  # loaded before the fork: no dlopen in the child
LIBC = ctypes.CDLL(None, use_errno=True)


def install_filter(allowed: list[str]) -> None:
    lib = LIBSECCOMP
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ScmpArgCmp),
    ]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(scmp_act_errno(1))  # EPERM
    for name in allowed:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0 or name == "socket":
            continue  # not a syscall on this architecture (or libseccomp's version)
        rc = lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 0, None)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add {name}")
    number = lib.seccomp_syscall_resolve_name(b"socket")
    for family in FAMILIES:
        cmp = ScmpArgCmp(0, SCMP_CMP_EQ, family, 0)
        rc = lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 1, ctypes.byref(cmp))
        if rc < 0:
            raise OSError(-rc, "seccomp_rule_add socket")
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, "seccomp_load")


def prctl(option: int, arg: int) -> None:
    if LIBC.prctl(option, arg, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}, {arg})")


def prepare(work: Path, backend: str, steps: int) -> Path:
    sys.path.insert(0, str(work / "src"))
    from h100fleet.trainer import tiny  # noqa: PLC0415 - from the copied source, after the path is set

    model = tiny.build_model(work / "model", size=tiny.SMALL, vocab=512)
    data = tiny.write_dataset(work / "train.jsonl", records=64)
    doc = {
        "stack_id": "sandbox",
        "model": {"path": str(model)},
        "data": {"path": str(data), "max_seq_length": 256},
        "train": {
            "backend": backend,
            "device": "cuda",
            "output_dir": str(work / "out"),
            "max_steps": steps,
            "batch_size": 2,
            "warmup_steps": 1,
        },
        "checkpoint": {"every_steps": 2, "keep_last": 2},
        "progress": {"every_steps": 1},
    }
    (work / "out").mkdir()
    return tiny.write_config(work / "trainer.yml", doc)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", default="unsloth", choices=["unsloth", "hf"])
    p.add_argument("--mdwe", action="store_true", help="also MemoryDenyWriteExecute (PR_SET_MDWE)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--src", default=str(HERE.parents[2] / "src"))
    args = p.parse_args()
    allowed = json.loads((HERE / "unit-syscalls.json").read_text())["allowed"]

    work = Path(tempfile.mkdtemp(prefix="sandbox-"))
    shutil.copytree(args.src, work / "src")
    config = prepare(work, args.backend, args.steps)
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(work)], check=True)
    os.chmod(work, 0o755)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "PYTHONPATH": os.pathsep.join(p for p in [str(work / "src"), os.environ.get("PYTHONPATH", "")] if p),
        "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH", ""),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0"),
    }
    argv = [sys.executable, "-m", "h100fleet.trainer", "--config", str(config)]

    def restrict() -> None:  # in the child, before exec: the order systemd uses
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)  # drops every capability
        os.umask(0o027)
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        if args.mdwe:
            prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)
        install_filter(allowed)

    proc = subprocess.run(argv, env=env, cwd=work, preexec_fn=restrict, capture_output=True, text=True, check=False)
    status_file = work / "out" / "status.json"
    status = json.loads(status_file.read_text()) if status_file.exists() else {}
    verdict = {
        "backend": args.backend,
        "mdwe": args.mdwe,
        "rc": proc.returncode,
        "state": status.get("state"),
        "step": status.get("step"),
        "device": status.get("device"),
        "gpu": status.get("gpu"),
        "versions": status.get("versions"),
        "tokens_per_second": status.get("tokens_per_second"),
        "ok": proc.returncode == 0 and status.get("state") == "finished" and status.get("step") == args.steps,
    }
    if not verdict["ok"]:
        print(proc.stderr[-6000:], file=sys.stderr)
    print(json.dumps(verdict))
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
