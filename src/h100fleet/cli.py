"""`h100fleet`: the project's command line (a thin layer over the package's modules)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from h100fleet._proc import CommandError
from h100fleet.stack import commands as stack_commands
from h100fleet.testfleet import images, nodes, services, ssh


def _testfleet_services(_: argparse.Namespace) -> int:
    started = services.ensure_docker()
    print(f"docker engine: {'started' if started else 'already running'}")
    started = services.ensure_apt_proxy()
    print(f"apt proxy {services.APT_PROXY_URL}: {'started' if started else 'already running'}")
    print(f"wheel cache: {services.wheel_cache_dir()}")
    return 0


def _testfleet_images(args: argparse.Namespace) -> int:
    services.ensure_docker()
    services.ensure_apt_proxy()
    for suite in args.suite or sorted(images.RECIPES):
        r = images.recipe(suite)
        if args.rebuild:
            tag, seconds = r.tag, images.build(r, proxy=services.APT_PROXY_URL)
        else:
            tag, seconds = images.ensure(r, proxy=services.APT_PROXY_URL)
        how = "cached" if seconds is None else f"built in {seconds:.1f} s"
        print(f"{r.alias} -> {tag} ({how})")
    return 0


def _testfleet_up(args: argparse.Namespace) -> int:
    services.ensure_docker()
    services.ensure_apt_proxy()
    services.wheel_cache_dir()
    r = images.recipe(args.suite)
    images.ensure(r, proxy=services.APT_PROXY_URL)
    ports = ssh.up_ports(args.prefix, args.nodes)
    _print_started(nodes.up(ports, r.alias), ports, r.alias)
    return 0


def _testfleet_start(args: argparse.Namespace) -> int:
    specs = ssh.parse_node_specs(args.names)
    images.check_current(args.image)
    _print_started(nodes.up(specs, args.image), specs, args.image)
    return 0


def _print_started(states: dict[str, str], ports: dict[str, int | None], image: str) -> None:
    for name, state in states.items():
        login = f", ssh {ssh.USER}@{ssh.LISTEN} -p {ports[name]}" if ports.get(name) else ""
        print(f"{name}: {image}, systemd {state}{login}")
    if any(ports.values()):
        print(f"key: {ssh.key_path()}, known hosts: {ssh.known_hosts_path()}")


def _testfleet_down(args: argparse.Namespace) -> int:
    removed = nodes.down(args.names or None)
    print("removed: " + (", ".join(removed) if removed else "nothing"))
    return 0


# Every command a user or a role runs, in one place (`h100fleet --help` prints them; tests/unit/test_layers.py checks
# that each exists and that every module the roles, scripts, benchmarks and tests run with `python -m` is here).
MODULES: tuple[tuple[str, str], ...] = (
    ("h100fleet.probes", "node, stack venv: the GPU probes (gpu_validate, python_stack, the rollout's gate)"),
    ("h100fleet.probes.unsloth_check", "node, stack venv: Unsloth's own check, in a process of its own (the probes)"),
    ("h100fleet.trainer", "node, stack venv: the LoRA trainer (training_service; --check on the control node)"),
    ("h100fleet.trainer.launch", "node, stack venv: the trainer in several processes through torchrun"),
    ("h100fleet.node.verify", "node, stack venv: the venv holds exactly its lock and its modules import"),
    ("h100fleet.fleet.rollout", "control node: the rollout's report (the rollout role's last play)"),
    ("h100fleet.cli", "control node: this command (also installed as `h100fleet`)"),
    ("h100fleet.harness.train_bench", "benchmark: trainer throughput and smoke runs (build | bare | smoke | run)"),
    ("h100fleet.harness.carry", "GPU machine transfer: split, receive, missing, assemble (scripts/gpu/carry)"),
)
# Node-side programs installed as files and run by the node's system Python.
NODE_PROGRAMS: tuple[tuple[str, str], ...] = (
    ("src/h100fleet/node/facts.py", "the h100fleet_node local fact (node_baseline)"),
    ("src/h100fleet/node/rollout_guard.py", "/usr/local/libexec/h100fleet-rollout-guard (rollout)"),
)
SCRIPTS: tuple[tuple[str, str], ...] = (
    ("scripts/bootstrap-host", "install what the control node lacks and the control-node venv"),
    ("scripts/test", "the project's tests: lint, unit, molecule"),
    ("scripts/demo", "a local three-node fleet provisioned, trained on and rolled out"),
    ("scripts/gpu/carry", "carry files to a lent GPU machine in parts"),
    ("scripts/gpu/install-carried", "GPU machine: rebuild the carried files and install a stack from its lock"),
    ("scripts/gpu/verify-stack", "GPU machine: install carried wheels, verify the stack, run the probes"),
    ("scripts/gpu/user-checks", "GPU machine: a new user's checks of a stack"),
    ("scripts/gpu/train-checks", "GPU machine: user checks and the trainer's smoke runs"),
    ("scripts/gpu/flip-downtime", "GPU machine: time a rollout's flip"),
    ("scripts/gpu/image-checks", "GPU machine: the flip's probe and the automatic plan, in the image's own torch"),
    ("benchmarks/connection.py", "benchmark: the control node's cost per host over SSH and docker exec"),
    ("benchmarks/flip_downtime.py", "benchmark: a rollout flip's downtime"),
    ("benchmarks/foundation.py", "benchmark: node image builds, a fresh fleet's first converge, a re-run"),
    ("benchmarks/rerun.py", "benchmark: the demo's first converge and a re-run of site.yml"),
    ("benchmarks/rollout_scale.py", "benchmark: a rollout over N simulated hosts"),
    ("benchmarks/train_throughput.py", "benchmark: trainer throughput"),
    ("benchmarks/venv_build.py", "benchmark: building a stack venv"),
)


def commands_text() -> str:
    """The command list that `h100fleet --help` ends with."""
    lines = ["modules (python -m MODULE --help):"]
    lines += [f"  {name:36} {what}" for name, what in MODULES]
    lines += ["node programs (system Python):"]
    lines += [f"  {path:36} {what}" for path, what in NODE_PROGRAMS]
    lines += ["scripts (from the repository root):"]
    lines += [f"  {path:36} {what}" for path, what in SCRIPTS]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h100fleet",
        description=__doc__,
        epilog=commands_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    tf = sub.add_parser("testfleet", help="the offline local test fleet (systemd containers)")
    tf_sub = tf.add_subparsers(dest="action", required=True)

    p = tf_sub.add_parser("services", help="start dockerd and the apt proxy unless they already run")
    p.set_defaults(func=_testfleet_services)

    p = tf_sub.add_parser("images", help="build node images whose recipe changed (cached by recipe hash)")
    p.add_argument("--suite", action="append", help="bookworm or trixie (repeatable; default: all)")
    p.add_argument("--rebuild", action="store_true", help="build even when the cached image matches")
    p.set_defaults(func=_testfleet_images)

    up_help = f"start N nodes for the demo inventory (node i: sshd on {ssh.LISTEN}:{ssh.PORT_BASE}+i)"
    p = tf_sub.add_parser("up", help=up_help)
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default: 3)")
    p.add_argument("--suite", default="trixie", help="node image suite (default: trixie)")
    p.add_argument("--prefix", default="h100-node", help="container name prefix (default: h100-node)")
    p.set_defaults(func=_testfleet_up)

    p = tf_sub.add_parser("start", help="start the named nodes from a built image (molecule's create step)")
    p.add_argument("--image", required=True, help="a node image built by `testfleet images`")
    p.add_argument("names", nargs="+", metavar="NAME[:PORT]", help="a node; with :PORT, its sshd on 127.0.0.1:PORT")
    p.set_defaults(func=_testfleet_start)

    p = tf_sub.add_parser("down", help="remove test nodes (all of them unless names are given)")
    p.add_argument("names", nargs="*")
    p.set_defaults(func=_testfleet_down)

    stack_commands.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CommandError, OSError, TimeoutError, ValueError, RuntimeError) as exc:
        print(f"h100fleet: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
