"""Host services the test fleet needs: a Docker engine and a caching apt proxy.

Both are started only when they are not already there, so a developer's running engine is used as it is; on a
fresh machine (CI) this module starts them in the background. The engine gets no bridge network and no iptables
rules: every test container uses host networking.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import time
from pathlib import Path

from h100fleet._proc import run

CACHE_ROOT = Path(os.environ.get("H100FLEET_CACHE", "/var/cache/h100fleet"))
LOG_ROOT = Path(os.environ.get("H100FLEET_LOGS", "/var/log/h100fleet"))
APT_PROXY_HOST = "127.0.0.1"
APT_PROXY_PORT = 3142
APT_PROXY_URL = f"http://{APT_PROXY_HOST}:{APT_PROXY_PORT}"
DEBIAN_BACKEND = "http://deb.debian.org/debian/"
DOCKERD_ARGV = ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false"]


def docker_reachable() -> bool:
    return shutil.which("docker") is not None and run(["docker", "info"], check=False).returncode == 0


def _wait(predicate, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.5)


def _spawn(argv: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def ensure_docker(timeout: float = 60) -> bool:
    """Start dockerd unless an engine already answers. Returns True when this call started it."""
    if docker_reachable():
        return False
    if shutil.which("dockerd") is None:
        raise FileNotFoundError("no Docker engine answers and dockerd is not installed: run scripts/bootstrap-host")
    log = LOG_ROOT / "dockerd.log"
    _spawn(DOCKERD_ARGV, log)
    _wait(docker_reachable, f"dockerd (log: {log})", timeout)
    return True


def apt_proxy_answers(host: str = APT_PROXY_HOST, port: int = APT_PROXY_PORT) -> bool:
    """True when an apt-cacher-ng answers on host:port (its report page is the cheapest request it serves)."""
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", "/acng-report.html")
        resp = conn.getresponse()
        return resp.status == 200 and b"apt-cacher" in resp.read(65536).lower()
    except OSError:
        return False
    finally:
        conn.close()


def acng_config(cache_dir: Path, log_dir: Path, port: int = APT_PROXY_PORT) -> dict[str, str]:
    """Files of a self-contained apt-cacher-ng configuration directory (name -> content).

    Debian's stock configuration maps deb.debian.org onto ftp.debian.org; only deb.debian.org is reachable from
    the machines this project is tested on, so the backends file names it.
    """
    return {
        "acng.conf": "\n".join(
            [
                f"CacheDir: {cache_dir}",
                f"LogDir: {log_dir}",
                "SupportDir: /usr/lib/apt-cacher-ng",
                f"Port: {port}",
                f"BindAddress: {APT_PROXY_HOST}",
                "Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian",
                "Remap-secdeb: security.debian.org deb.debian.org/debian-security /debian-security ;"
                " deb.debian.org/debian-security",
                "ReportPage: acng-report.html",
                "ExThreshold: 4",
                "",
            ]
        ),
        "backends_debian": DEBIAN_BACKEND + "\n",
    }


def ensure_apt_proxy(timeout: float = 30) -> bool:
    """Start a caching apt proxy on 127.0.0.1:3142 unless one answers. Returns True when this call started it.

    Every image build and test container fetches Debian packages through it, so a package (the 1.9 GB CUDA
    toolkit, say) is downloaded once per machine, not once per container or scenario.
    """
    if apt_proxy_answers():
        return False
    if shutil.which("apt-cacher-ng") is None:
        raise FileNotFoundError("apt-cacher-ng is not installed: run scripts/bootstrap-host")
    conf_dir = CACHE_ROOT / "acng-conf"
    cache_dir, log_dir = CACHE_ROOT / "apt", LOG_ROOT / "apt-cacher-ng"
    for d in (conf_dir, cache_dir, log_dir):
        d.mkdir(parents=True, exist_ok=True)
    for name, content in acng_config(cache_dir, log_dir).items():
        (conf_dir / name).write_text(content)
    # Foreground mode under our own session: no daemon fork, no pid file to manage.
    _spawn(["apt-cacher-ng", "-c", str(conf_dir), "ForeGround=1"], log_dir / "stdout.log")
    _wait(apt_proxy_answers, f"apt-cacher-ng (logs: {log_dir})", timeout)
    return True


def wheel_cache_dir() -> Path:
    """The host's Python wheel cache (uv's cache format), shared read-write by every test container."""
    path = CACHE_ROOT / "uv"
    path.mkdir(parents=True, exist_ok=True)
    return path
