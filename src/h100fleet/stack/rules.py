"""The compatibility rules a stack must pass before it is locked, shipped or rolled out.

Each rule looks at one Python version of one stack: the lock's pins when the lock exists, else the pins of the
requirements input (so that a stack that does not resolve can still be told why). A finding names the packages
involved and the fix. Errors fail ``h100fleet stack check``; warnings are printed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from h100fleet.node.lockfile import Pin, normalize, requirement_names
from h100fleet.stack import knowledge as K
from h100fleet.stack.index import Index, Release
from h100fleet.stack.manifest import Stack
from h100fleet.stack.wheelhouse import wheel_rank

ERROR, WARN = "error", "warn"


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    message: str
    fix: str
    python: str | None = None

    def __str__(self) -> str:
        where = f" [py{self.python}]" if self.python else ""
        return f"{self.severity.upper()} {self.rule}{where}: {self.message}\n    fix: {self.fix}"

    def to_json(self) -> dict:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
            "python": self.python,
        }


@dataclass
class Context:
    """What the rules see of one stack for one Python version."""

    stack: Stack
    python: str
    index: Index
    resolve_error: str | None = None
    resolve_checked: bool = False  # the resolver ran for this Python version
    pins: dict[str, Pin] = field(default_factory=dict)
    locked: bool = False

    def __post_init__(self) -> None:
        lock = self.stack.lock_pins(self.python)
        self.locked = lock is not None
        self.pins = lock if lock is not None else self.stack.input_pins()

    def version(self, name: str) -> Version | None:
        pin = self.pins.get(normalize(name))
        if pin is None:
            return None
        try:
            return Version(pin.version)
        except InvalidVersion:
            return None

    def release(self, name: str) -> Release | None:
        pin = self.pins.get(normalize(name))
        return self.index.release(pin.name, pin.version) if pin else None

    def requirements_of(self, name: str) -> list[Requirement]:
        """The unconditional (or true-for-this-platform) requirements of a pinned package, extras excluded."""
        release = self.release(name)
        if release is None:
            return []
        env = {
            "python_version": self.python,
            "python_full_version": f"{self.python}.0",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "x86_64",
            "os_name": "posix",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "extra": "",
        }
        out = []
        for text in release.requires_dist:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate(env):
                out.append(req)
        return out

    def find(self, rule: str, severity: str, message: str, fix: str) -> Finding:
        return Finding(rule, severity, message, fix, self.python)


def _mm(version: Version) -> tuple[int, int]:
    return version.major, version.minor


def _exact_torch(requirements: list[Requirement]) -> str | None:
    for req in requirements:
        if normalize(req.name) == "torch":
            for spec in req.specifier:
                if spec.operator in ("==", "==="):
                    return spec.version
    return None


def xformers_built_for(release: Release) -> str | None:
    """The torch an xformers wheel was compiled against: an exact pin in its metadata, else its cpp_lib.json."""
    for text in release.requires_dist:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if normalize(req.name) == "torch" and not req.marker:
            exact = _exact_torch([req])
            if exact:
                return exact
    for member, content in release.extra_files.items():
        if member.endswith("cpp_lib.json"):
            match = re.search(r'"torch":\s*"([0-9.]+)', content)
            if match:
                return match[1]
    return None


# --- the rules ----------------------------------------------------------------------------------------------------


def rule_date_cutoff(ctx: Context) -> list[Finding]:
    if ctx.stack.exclude_newer:
        return []
    return [
        ctx.find(
            "date-cutoff",
            ERROR,
            "the stack has no resolution date cutoff: every unpinned transitive dependency resolves to today's release "
            "(a 2024 stack gets 2026 huggingface-hub, tyro, ...), which its pinned packages were never run with",
            "set exclude_newer in manifest.yml to the stack's era (e.g. the date of its newest pinned release)",
        )
    ]


def rule_release_exists(ctx: Context) -> list[Finding]:
    findings = []
    for pin in ctx.stack.input_pins().values():
        versions = ctx.index.versions(pin.name)
        if pin.version in versions:
            continue
        parsed = sorted((Version(v) for v in versions if _is_version(v)), reverse=False)
        later = [v for v in parsed if _is_version(pin.version) and v > Version(pin.version)]
        if not parsed:
            message, fix = f"{pin.name} is not on the index at all", f"remove {pin.name} or add the index that has it"
        else:
            message = f"{pin.name}=={pin.version} is not on the index: its releases run {parsed[0]} .. {parsed[-1]}" + (
                f" (first after {pin.version}: {later[0]})" if later else ""
            )
            fix = f"pin a release that exists, e.g. {pin.name}=={later[0] if later else parsed[-1]}"
        findings.append(ctx.find("release-exists", ERROR, message, fix))
    return findings


def rule_resolves(ctx: Context) -> list[Finding]:
    if not ctx.resolve_error:
        return []
    lines = [ln.strip() for ln in ctx.resolve_error.splitlines() if ln.strip() and "hint:" not in ln]
    essence = " ".join(lines[-4:])
    culprits = [
        n for n in requirement_names(ctx.stack.requirements_text()) if re.search(rf"\b{re.escape(n)}\b", essence)
    ]
    return [
        ctx.find(
            "resolves",
            ERROR,
            f"the requirements do not resolve for Python {ctx.python} on {ctx.stack.platform}: {essence}",
            "change the pins the resolver names" + (f" ({', '.join(culprits)})" if culprits else ""),
        )
    ]


def rule_lock(ctx: Context) -> list[Finding]:
    if not ctx.locked:
        if ctx.resolve_error or not (ctx.resolve_checked or ctx.stack.lock_hashes()):
            return []  # nothing to lock until it resolves (`resolves` says why), or never locked and not resolved
        return [
            ctx.find(
                "lock",
                ERROR,
                f"no lock for Python {ctx.python}: {ctx.stack.lock_path(ctx.python).name}",
                f"run `h100fleet stack lock {ctx.stack.id}`",
            )
        ]
    findings = []
    missing = sorted(str(p) for p in ctx.pins.values() if not p.hashes)
    if missing:
        findings.append(
            ctx.find(
                "lock",
                ERROR,
                f"pins without hashes: {', '.join(missing)}",
                "lock with --generate-hashes (`h100fleet stack lock`)",
            )
        )
    for want in ctx.stack.input_pins().values():
        have = ctx.pins.get(want.key)
        if have is None or have.version != want.version:
            got = have.version if have else "nothing"
            findings.append(
                ctx.find(
                    "lock",
                    ERROR,
                    f"requirements.in pins {want} but the lock has {want.name} {got}: the lock is stale",
                    f"run `h100fleet stack lock {ctx.stack.id}`",
                )
            )
    return findings


def rule_python_requires(ctx: Context) -> list[Finding]:
    findings = []
    for pin in ctx.pins.values():
        release = ctx.index.release(pin.name, pin.version, metadata=False)
        if release is None or not release.requires_python:
            continue
        try:
            spec = SpecifierSet(release.requires_python)
        except ValueError:
            continue
        if not spec.contains(f"{ctx.python}.0", prereleases=True) and not spec.contains(ctx.python, prereleases=True):
            findings.append(
                ctx.find(
                    "python-requires",
                    ERROR,
                    f"{pin} requires Python {release.requires_python}; the stack lists Python {ctx.python}",
                    f"drop Python {ctx.python} from the stack or pin a {pin.name} release that supports it",
                )
            )
    return findings


def rule_wheels(ctx: Context) -> list[Finding]:
    """Every locked release has a wheel a node of this Python on linux x86_64 can install: an sdist-only release
    means a source build on every node (for CUDA extensions such as xformers: torch and nvcc at install time)."""
    if not ctx.locked:
        return []
    findings = []
    for pin in ctx.pins.values():
        release = ctx.index.release(pin.name, pin.version, metadata=False)
        if release is None or not release.files:
            continue
        if not any(wheel_rank(f, ctx.python) is not None for f in release.files):
            kinds = "only an sdist" if not release.has_wheel else "wheels for other Pythons or platforms only"
            findings.append(
                ctx.find(
                    "wheels",
                    ERROR,
                    f"{pin} has no wheel for CPython {ctx.python} on linux x86_64 ({kinds}): every node would build it "
                    "from source, and python_stack's install fails where the build needs more than the lock",
                    f"drop Python {ctx.python} from the stack, or pin a {pin.name} release with a wheel for it",
                )
            )
    return findings


def rule_torch_triplet(ctx: Context) -> list[Finding]:
    torch = ctx.pins.get("torch")
    findings = []
    for name in ("torchvision", "torchaudio"):
        pin = ctx.pins.get(name)
        if pin is None:
            continue
        wanted = _exact_torch(ctx.requirements_of(name))
        if torch is None:
            findings.append(
                ctx.find(
                    "torch-triplet",
                    ERROR,
                    f"{pin} is pinned but torch is not",
                    f"pin torch=={wanted}" if wanted else "pin torch",
                )
            )
        elif wanted and Version(wanted) != Version(torch.version):
            findings.append(
                ctx.find(
                    "torch-triplet",
                    ERROR,
                    f"{pin} is built for torch=={wanted} but the stack pins {torch}",
                    f"pin the {name} release built for torch {torch.version}, or torch=={wanted}",
                )
            )
    return findings


def rule_xformers_torch(ctx: Context) -> list[Finding]:
    pin, torch = ctx.pins.get("xformers"), ctx.version("torch")
    if pin is None or torch is None:
        return []
    release = ctx.release("xformers")
    built = xformers_built_for(release) if release else None
    if built is None:
        return [
            ctx.find(
                "xformers-torch",
                WARN,
                f"cannot tell which torch {pin} was built for",
                "check `python -m xformers.info` on a node",
            )
        ]
    if Version(built).release == torch.release:
        return []
    unsloth = ctx.version("unsloth")
    optional = unsloth is not None and unsloth >= Version(K.UNSLOTH_XFORMERS_OPTIONAL_FROM)
    consequence = (
        "Unsloth falls back to PyTorch attention (measured with unsloth 2026.10.9)"
        if optional
        else "its C++ extensions fail to load"
    )
    return [
        ctx.find(
            "xformers-torch",
            WARN if optional else ERROR,
            f"{pin} was built for torch {built} but the stack pins torch {torch}: {consequence}",
            f"pin torch=={built} or the xformers release built for torch {torch}",
        )
    ]


def torchao_torch_floor(torchao: Version) -> Version | None:
    """The oldest torch a torchao release supports (knowledge.TORCHAO_TORCH_FLOOR); None for releases before the
    table."""
    floor = None
    for release, torch in K.TORCHAO_TORCH_FLOOR:
        if Version(release).release <= torchao.release[:2]:
            floor = Version(torch)
    return floor


def rule_torchao_torch(ctx: Context) -> list[Finding]:
    torchao, torch = ctx.version("torchao"), ctx.version("torch")
    if torchao is None or torch is None:
        return []
    floor = torchao_torch_floor(torchao)
    if floor is None or torch >= floor:
        return []
    return [
        ctx.find(
            "torchao-torch",
            ERROR,
            f"torchao=={torchao} needs torch >= {floor} but the stack pins torch {torch}: transformers and peft "
            "import torchao when it is installed, so no model loads",
            f"pin a torchao release for torch {torch} (or leave torchao out), or torch >= {floor}",
        )
    ]


def rule_flash_attn(ctx: Context) -> list[Finding]:
    findings = []
    pin = ctx.stack.input_pins().get("flash-attn")
    if pin is not None:
        release = ctx.index.release(pin.name, pin.version, metadata=False)
        if release is not None and not release.has_wheel:
            findings.append(
                ctx.find(
                    "flash-attn",
                    ERROR,
                    f"{pin} is an sdist only on the index: installing it compiles CUDA code against the installed "
                    "torch (needs nvcc and a long build on every node), and the flash-attn wheel index at "
                    "flashattn.github.io does not exist",
                    "remove flash-attn from requirements.in and name its prebuilt wheel in manifest.yml "
                    f"flash_attn.wheels (e.g. flash_attn-{pin.version}+cu122torch2.3cxx11abiFALSE-cp310-cp310-"
                    "linux_x86_64.whl) or let python_stack build it once into the wheelhouse",
                )
            )
    spec = ctx.stack.flash_attn
    if spec is None:
        return findings
    wheel = spec.wheels.get(ctx.python)
    if wheel is None:
        findings.append(
            ctx.find(
                "flash-attn",
                WARN,
                f"no prebuilt flash-attn {spec.version} wheel for Python "
                f"{ctx.python}: nodes on it build from source (MAX_JOBS)",
                f"add flash_attn.wheels['{ctx.python}'] to manifest.yml",
            )
        )
        return findings
    tags = parse_flash_attn_wheel(wheel)
    if tags is None:
        return [
            *findings,
            ctx.find(
                "flash-attn",
                ERROR,
                f"{wheel} is not a flash-attn wheel file name",
                "use the release asset's name: flash_attn-V+cuXYZtorchA.Bcxx11abiBOOL-cpXY-...",
            ),
        ]
    torch = ctx.version("torch")
    cuda = ctx.stack.cuda_runtime.split(".")[0]
    problems = []
    if tags["version"] != spec.version:
        problems.append(f"it is flash-attn {tags['version']}, the manifest says {spec.version}")
    if torch is not None and tags["torch"] != f"{torch.major}.{torch.minor}":
        problems.append(f"it is built for torch {tags['torch']}, the stack pins torch {torch}")
    if tags["cuda_major"] != cuda:
        problems.append(f"it is built with CUDA {tags['cuda']}, the torch wheels bring CUDA {ctx.stack.cuda_runtime}")
    if tags["python"] != ctx.python:
        problems.append(f"it is for Python {tags['python']}, this lock is for Python {ctx.python}")
    if torch is not None:
        abi = _mm(torch) >= K.TORCH_CXX11_ABI_FROM
        if tags["cxx11abi"] != abi:
            problems.append(
                f"its C++ ABI is cxx11abi{str(tags['cxx11abi']).upper()}, PyPI's torch {torch} uses "
                f"cxx11abi{str(abi).upper()} (undefined symbols at import)"
            )
    for problem in problems:
        findings.append(
            ctx.find(
                "flash-attn",
                ERROR,
                f"flash-attn wheel {wheel}: {problem}",
                "pick the release asset whose tags match torch, CUDA major, Python and C++ ABI",
            )
        )
    return findings


def parse_flash_attn_wheel(filename: str) -> dict | None:
    match = re.match(
        r"^flash_attn-(?P<version>[0-9.]+(?:\.post\d+)?)\+cu(?P<cuda>\d+)torch(?P<torch>\d+\.\d+)"
        r"cxx11abi(?P<abi>TRUE|FALSE)-cp(?P<py>\d)(?P<pyminor>\d+)-cp\d+-linux_x86_64\.whl$",
        filename,
    )
    if not match:
        return None
    cuda = match["cuda"]
    return {
        "version": match["version"],
        "cuda": cuda,
        "cuda_major": cuda[:2],
        "torch": match["torch"],
        "cxx11abi": match["abi"] == "TRUE",
        "python": f"{match['py']}.{match['pyminor']}",
    }


def cuda_runtime_of(ctx: Context) -> tuple[str, str] | None:
    """(package==version, major.minor) of the CUDA runtime the torch wheels bring."""
    for name in K.CUDA_RUNTIME_PACKAGES:
        pin = ctx.pins.get(name)
        if pin is not None:
            v = Version(pin.version)
            return str(pin), f"{v.major}.{v.minor}"
    for req in ctx.requirements_of("torch"):
        if normalize(req.name) in K.CUDA_RUNTIME_PACKAGES:
            exact = next((s.version for s in req.specifier if s.operator == "=="), None)
            if exact:
                v = Version(exact)
                return f"{req.name}=={exact}", f"{v.major}.{v.minor}"
    return None


def rule_cuda_driver(ctx: Context) -> list[Finding]:
    runtime = cuda_runtime_of(ctx)
    if runtime is None:
        return []
    package, cuda = runtime
    findings = []
    torch = ctx.pins.get("torch")
    if cuda != ctx.stack.cuda_runtime:
        findings.append(
            ctx.find(
                "cuda-driver",
                ERROR,
                f"manifest.yml says cuda_runtime {ctx.stack.cuda_runtime} but {torch or 'torch'} brings {package} "
                f"(CUDA {cuda})",
                f"set cuda_runtime: '{cuda}' in manifest.yml (and check min_driver)",
            )
        )
    major = cuda.split(".")[0]
    floor, native = K.CUDA_MAJOR_FLOOR.get(major), K.CUDA_MIN_DRIVER.get(cuda)
    have = K.driver_key(ctx.stack.min_driver)
    if floor and have < K.driver_key(floor):
        findings.append(
            ctx.find(
                "cuda-driver",
                ERROR,
                f"{torch or 'torch'} brings {package} (CUDA {cuda}), which needs driver >= {floor}; the stack declares "
                f"min_driver {ctx.stack.min_driver}",
                f"raise min_driver to >= {native or floor} (a driver bump: reboot) "
                f"or pin a torch built for CUDA {int(major) - 1}",
            )
        )
    elif native and have < K.driver_key(native):
        findings.append(
            ctx.find(
                "cuda-driver",
                WARN,
                f"{package} (CUDA {cuda}) runs on min_driver {ctx.stack.min_driver} only through CUDA minor-version "
                f"compatibility (native minimum {native}; no JIT of newer PTX)",
                f"raise min_driver to {native}",
            )
        )
    return findings


def rule_numpy(ctx: Context) -> list[Finding]:
    numpy, torch = ctx.version("numpy"), ctx.version("torch")
    if numpy is None:
        return []
    findings = []
    if torch is not None and numpy.major >= 2 and _mm(torch) < K.TORCH_NUMPY2_FROM:
        findings.append(
            ctx.find(
                "numpy",
                ERROR,
                f"numpy {numpy} with torch {torch}: torch before 2.4 was built against numpy 1.x",
                "pin numpy<2 (e.g. numpy==1.26.4) or torch>=2.4",
            )
        )
    for name in sorted(ctx.stack.input_pins()):
        if name == "numpy":
            continue
        for req in ctx.requirements_of(name):
            if normalize(req.name) == "numpy" and req.specifier and not req.specifier.contains(numpy, True):
                findings.append(
                    ctx.find(
                        "numpy",
                        ERROR,
                        f"{ctx.pins[name]} requires numpy{req.specifier}; the stack pins numpy {numpy}",
                        f"pin numpy to satisfy {req.specifier} or move {name}",
                    )
                )
    return findings


def rule_unsloth_guards(ctx: Context) -> list[Finding]:
    unsloth = ctx.version("unsloth")
    if unsloth is None or unsloth >= Version(K.UNSLOTH_STRICT_UNTIL):
        return []
    who = f"unsloth {unsloth}"
    findings = []
    xformers, trl, torch = ctx.version("xformers"), ctx.version("trl"), ctx.version("torch")
    if xformers is None:
        usable = _xformers_for_torch(ctx, torch) if torch else []
        note = ""
        if torch is not None:
            if not usable:
                note = f"; no xformers release is built for torch {torch}"
            elif all(v >= Version(K.UNSLOTH_STRICT_XFORMERS_BELOW) for v in usable):
                note = (
                    f"; the only xformers built for torch {torch} is {', '.join(map(str, usable))}, which {who} "
                    f"rejects (xformers >= {K.UNSLOTH_STRICT_XFORMERS_BELOW})"
                )
        findings.append(
            ctx.find(
                "unsloth-guards",
                ERROR,
                f"{who} imports xformers unconditionally and raises when its extensions do not load, but no "
                f"xformers is pinned{note}",
                f"use {K.UNSLOTH_STRICT_FIX}",
            )
        )
    elif xformers >= Version(K.UNSLOTH_STRICT_XFORMERS_BELOW):
        findings.append(
            ctx.find(
                "unsloth-guards",
                ERROR,
                f"{who} raises at import for xformers >= {K.UNSLOTH_STRICT_XFORMERS_BELOW} (the stack pins xformers "
                f"{xformers})",
                f"use {K.UNSLOTH_STRICT_FIX}",
            )
        )
    if trl is None:
        findings.append(
            ctx.find(
                "unsloth-guards",
                ERROR,
                f"{who} needs trl{K.UNSLOTH_STRICT_TRL} (SFTTrainer; its `huggingface` extra), but no trl is pinned",
                "pin trl==0.8.6",
            )
        )
    elif trl not in SpecifierSet(K.UNSLOTH_STRICT_TRL):
        findings.append(
            ctx.find(
                "unsloth-guards",
                ERROR,
                f"{who} raises at import for trl >= 0.9.0 (the stack pins trl {trl})",
                "pin trl==0.8.6",
            )
        )
    return findings


def _xformers_for_torch(ctx: Context, torch: Version) -> list[Version]:
    """xformers releases of the strict-Unsloth era built for exactly this torch (read from their wheels)."""
    found = []
    for v in ctx.index.versions("xformers"):
        if not _is_version(v) or not Version("0.0.26") <= Version(v) < Version("0.0.28"):
            continue
        release = ctx.index.release("xformers", v)
        built = xformers_built_for(release) if release else None
        if built and Version(built).release == torch.release:
            found.append(Version(v))
    return sorted(found)


def _is_version(text: str) -> bool:
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


RULES: dict[str, Callable[[Context], list[Finding]]] = {
    "date-cutoff": rule_date_cutoff,
    "release-exists": rule_release_exists,
    "resolves": rule_resolves,
    "lock": rule_lock,
    "python-requires": rule_python_requires,
    "wheels": rule_wheels,
    "torch-triplet": rule_torch_triplet,
    "xformers-torch": rule_xformers_torch,
    "torchao-torch": rule_torchao_torch,
    "flash-attn": rule_flash_attn,
    "cuda-driver": rule_cuda_driver,
    "numpy": rule_numpy,
    "unsloth-guards": rule_unsloth_guards,
}


def check(
    stack: Stack, index: Index, resolve_errors: dict[str, str | None] | None = None, rules: list[str] | None = None
) -> list[Finding]:
    """All findings for every Python version of the stack (deduplicated across versions)."""
    findings: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    for python in stack.python:
        ctx = Context(stack, python, index, (resolve_errors or {}).get(python), resolve_errors is not None)
        for name, rule in RULES.items():
            if rules and name not in rules:
                continue
            for finding in rule(ctx):
                key = (finding.rule, finding.message)
                if key not in seen:
                    seen.add(key)
                    findings.append(finding)
    return findings
