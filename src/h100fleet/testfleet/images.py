"""Node images built locally from the Debian mirror, cached by a hash of their recipe.

No image registry is reachable where this project is tested, so a node image is a debootstrapped Debian root with
systemd, python3, sudo and an SSH server, turned into an image by `docker import`. The image tag carries the recipe
hash: an image is rebuilt only when its recipe (suite, components, packages, mirror, login user or the in-chroot setup
script) changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from h100fleet._proc import CommandError, run
from h100fleet.testfleet import ssh

REPOSITORY = "h100fleet/node"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Bump when the build procedure itself changes in a way the recipe fields do not show.
BUILD_FORMAT = 1
SETUP_SCRIPT = Path(__file__).resolve().parents[3] / "files" / "images" / "setup-node.sh"

# What a freshly provisioned server has before Ansible touches it: an init system, Python for Ansible's modules,
# python3-apt for its apt module, sudo for `become`, and an SSH server (the login user is the recipe's `user`).
# Certificate authorities this host trusts beyond Debian's bundle (a TLS-intercepting proxy's, a company CA):
# copied into every node image so that nodes reach PyPI and the mirrors the way the host does.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-apt",
    "sudo",
    "ca-certificates",
    "openssh-server",
)
DEBIAN_NONFREE = ("main", "contrib", "non-free", "non-free-firmware")


@dataclass(frozen=True)
class ImageRecipe:
    suite: str
    components: tuple[str, ...]
    packages: tuple[str, ...] = BASE_PACKAGES
    mirror: str = DEFAULT_MIRROR
    variant: str = "minbase"
    # The unprivileged login user with passwordless sudo that Ansible connects as.
    user: str = ssh.USER
    setup_script: Path = field(default=SETUP_SCRIPT, compare=False)
    ca_dir: Path = field(default=HOST_CA_DIR, compare=False)

    def ca_certificates(self) -> list[Path]:
        return sorted(self.ca_dir.glob("*.crt")) if self.ca_dir.is_dir() else []

    def digest(self) -> str:
        """A stable hash of everything that decides the image's contents."""
        fields = asdict(self)
        fields["setup_script"] = hashlib.sha256(self.setup_script.read_bytes()).hexdigest()
        fields["ca_dir"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.ca_certificates()}
        fields["build_format"] = BUILD_FORMAT
        canonical = json.dumps(fields, sort_keys=True, default=list).encode()
        return hashlib.sha256(canonical).hexdigest()

    @property
    def tag(self) -> str:
        """The content-addressed tag: REPOSITORY:<suite>-<12 hex digits of the recipe hash>."""
        return f"{REPOSITORY}:{self.suite}-{self.digest()[:12]}"

    @property
    def alias(self) -> str:
        """The stable tag that molecule scenarios and the demo fleet use."""
        return f"{REPOSITORY}:{self.suite}"


RECIPES: dict[str, ImageRecipe] = {
    # Debian 12: main only, as a stock install has it; node_baseline adds contrib and non-free.
    "bookworm": ImageRecipe("bookworm", ("main",)),
    # Debian 13: with the non-free components, where nvidia-driver 550 and nvidia-cuda-toolkit 12.4 live.
    "trixie": ImageRecipe("trixie", DEBIAN_NONFREE),
}


def recipe(suite: str) -> ImageRecipe:
    try:
        return RECIPES[suite]
    except KeyError:
        known = ", ".join(sorted(RECIPES))
        raise ValueError(f"unknown node image suite {suite!r}: expected one of {known}") from None


def image_exists(ref: str) -> bool:
    return run(["docker", "image", "inspect", ref], check=False).returncode == 0


def check_current(ref: str) -> None:
    """Refuse an image that no current recipe built (an older one has no sshd, say), naming the fix."""
    proc = run(["docker", "image", "inspect", "--format", '{{ index .Config.Labels "org.h100fleet.recipe" }}', ref])
    if proc.stdout.strip() not in {r.digest() for r in RECIPES.values()}:
        raise RuntimeError(f"image {ref} was built from an older recipe: run `h100fleet testfleet images` first")


def debootstrap_argv(r: ImageRecipe, root: Path) -> list[str]:
    return [
        "debootstrap",
        f"--variant={r.variant}",
        f"--components={','.join(r.components)}",
        f"--include={','.join(r.packages)}",
        r.suite,
        str(root),
        r.mirror,
    ]


def import_changes(r: ImageRecipe) -> list[str]:
    """Dockerfile instructions applied by `docker import --change` (the daemon accepts no STOPSIGNAL there)."""
    return [
        'CMD ["/sbin/init"]',
        "ENV container=docker",
        f"LABEL org.h100fleet.recipe={r.digest()} org.h100fleet.suite={r.suite}",
    ]


def build(r: ImageRecipe, *, proxy: str | None = None, workdir: Path | None = None) -> float:
    """Build the image for a recipe and tag it (content tag and alias). Returns the build time in seconds."""
    if os.geteuid() != 0:
        raise PermissionError("building node images needs root (debootstrap and chroot)")
    if shutil.which("debootstrap") is None:
        raise FileNotFoundError("debootstrap is not installed: run scripts/bootstrap-host")
    env = dict(os.environ)
    if proxy:
        env["http_proxy"] = proxy
    started = time.monotonic()
    base = workdir or Path(os.environ.get("TMPDIR", "/var/tmp"))
    with tempfile.TemporaryDirectory(prefix=f"h100fleet-{r.suite}-", dir=base) as tmp:
        root = Path(tmp) / "root"
        run(debootstrap_argv(r, root), env=env)
        shutil.copy(r.setup_script, root / "tmp" / "setup-node.sh")
        for cert in r.ca_certificates():
            shutil.copy(cert, root / "usr" / "local" / "share" / "ca-certificates" / cert.name)
        run(["chroot", str(root), "/bin/sh", "/tmp/setup-node.sh", r.suite, " ".join(r.components), r.mirror, r.user])
        (root / "tmp" / "setup-node.sh").unlink()
        argv = ["docker", "import"]
        for change in import_changes(r):
            argv += ["--change", change]
        argv += ["-", r.tag]
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        importer = subprocess.Popen(argv, stdin=tar.stdout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert tar.stdout is not None
        tar.stdout.close()  # the importer holds the read end now: tar gets SIGPIPE if it exits early
        output = importer.communicate()[0].decode(errors="replace")
        if tar.wait() != 0 or importer.returncode != 0:
            raise CommandError(argv, importer.returncode or tar.returncode, output)
    run(["docker", "tag", r.tag, r.alias])
    return time.monotonic() - started


def ensure(r: ImageRecipe, *, proxy: str | None = None) -> tuple[str, float | None]:
    """Make sure the image for this recipe exists and the alias points at it.

    Returns (tag, seconds spent building) where the time is None when the cached image was reused.
    """
    if image_exists(r.tag):
        run(["docker", "tag", r.tag, r.alias])
        return r.tag, None
    return r.tag, build(r, proxy=proxy)
