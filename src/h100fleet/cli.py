"""`h100fleet`: the project's command line (a thin layer over the package's modules)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from h100fleet._proc import CommandError
from h100fleet.stack import commands as stack_commands
from h100fleet.testfleet import images, nodes, services


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
    names = [f"{args.prefix}-{i}" for i in range(1, args.nodes + 1)]
    for name, state in nodes.up(names, r.alias).items():
        print(f"{name}: {r.alias}, systemd {state}")
    return 0


def _testfleet_start(args: argparse.Namespace) -> int:
    for name, state in nodes.up(args.names, args.image).items():
        print(f"{name}: {args.image}, systemd {state}")
    return 0


def _testfleet_down(args: argparse.Namespace) -> int:
    removed = nodes.down(args.names or None)
    print("removed: " + (", ".join(removed) if removed else "nothing"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="h100fleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    tf = sub.add_parser("testfleet", help="the offline local test fleet (systemd containers)")
    tf_sub = tf.add_subparsers(dest="action", required=True)

    p = tf_sub.add_parser("services", help="start dockerd and the apt proxy unless they already run")
    p.set_defaults(func=_testfleet_services)

    p = tf_sub.add_parser("images", help="build node images whose recipe changed (cached by recipe hash)")
    p.add_argument("--suite", action="append", help="bookworm or trixie (repeatable; default: all)")
    p.add_argument("--rebuild", action="store_true", help="build even when the cached image matches")
    p.set_defaults(func=_testfleet_images)

    p = tf_sub.add_parser("up", help="start N nodes for the demo inventory")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default: 3)")
    p.add_argument("--suite", default="trixie", help="node image suite (default: trixie)")
    p.add_argument("--prefix", default="h100-node", help="container name prefix (default: h100-node)")
    p.set_defaults(func=_testfleet_up)

    p = tf_sub.add_parser("start", help="start the named nodes from a built image (molecule's create step)")
    p.add_argument("--image", required=True, help="a node image built by `testfleet images`")
    p.add_argument("names", nargs="+")
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
