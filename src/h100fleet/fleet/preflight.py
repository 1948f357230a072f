"""The fleet preflight's report: every problem of every targeted host, found before anything changed.

Each role's tasks/preflight.yml collects its problems on a host in a list (the filters h100fleet_problem,
h100fleet_clean and h100fleet_refusal, plugins/filter) and refuses once at its end, naming every problem.
Fed by roles/fleet_preflight: each host collects messages (its fleet pins' and each role's settings problems from
h100fleet.fleet.settings, and every problem of each role's own preflight) in the fact __fleet_preflight_problems;
this module turns them into one document and one message that names them all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence


def problem(problems: Sequence[Mapping[str, str]], variable: str, message: str) -> list[dict[str, str]]:
    """The problem list of a role's preflight with one more: the variable (or fact) to change and the message."""
    return [*problems, {"variable": variable, "setting": variable, "message": " ".join(str(message).split())}]


def clean(problems: Sequence[Mapping[str, str]], *variables: str | Sequence[str]) -> bool:
    """Whether no problem found so far names any of these variables (names, or lists of names): a check that
    reads a variable runs only when its shape (and each earlier check of it) passed, so a bad value is refused
    once, by its own name, and never reaches a comparison that cannot read it."""
    wanted = {name for v in variables for name in ([v] if isinstance(v, str) else v)}
    named = {p.get("variable") for p in problems} | {p.get("setting") for p in problems}
    return not named.intersection(wanted)


def refusal(problems: Sequence[Mapping[str, str] | str]) -> str:
    """One line per problem, for the task that refuses the role's run (fleet_preflight reads one per line)."""
    return "\n".join(str(p["message"] if isinstance(p, Mapping) else p) for p in problems)


def messages(failed_result: Mapping[str, object], role: str) -> list[dict[str, str]]:
    """The problems a role's failed preflight task reported: one per line of its message."""
    msg = str(failed_result.get("msg") or "the preflight failed without a message")
    return [{"role": role, "message": line.strip()} for line in msg.splitlines() if line.strip()]


def _entry(item: object, default_role: str) -> dict[str, str]:
    if isinstance(item, Mapping):
        return {"role": str(item.get("role", default_role)), "message": str(item.get("message", ""))}
    return {"role": default_role, "message": str(item)}


def _key(message: str) -> str:
    """What makes two problems the same: the variable a settings problem names first (a fleet pin's problem is
    found by every role that takes its default from the pin), else the whole message."""
    first = message.split(" ", 1)[0]
    return first if re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)+", first) else message


def report(all_hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, object]]) -> dict:
    """{"hosts": {host: {"status", "problems": [{role, message}]}}, "problems": [{host, role, message}]}.

    A host without the fact __fleet_preflight_problems was never checked (unreachable, or its facts could not be
    gathered): that is a problem too, since nothing can be said of its settings."""
    hosts: dict[str, dict] = {}
    flat: list[dict[str, str]] = []
    for host in all_hosts:
        raw = hostvars.get(host, {}).get("__fleet_preflight_problems")
        if raw is None:
            found = [{"role": "-", "message": "could not be checked (unreachable, or gathering its facts failed)"}]
        else:
            found = [_entry(item, "fleet pins") for item in raw]  # type: ignore[union-attr]
        seen: set[str] = set()
        unique = []
        for entry in found:
            text = entry["message"].removeprefix(f"{host}: ")
            if _key(text) not in seen:
                seen.add(_key(text))
                unique.append({"role": entry["role"], "message": text})
        hosts[host] = {"status": "refused" if unique else "ok", "problems": unique}
        flat.extend({"host": host, **entry} for entry in unique)
    return {"hosts": hosts, "problems": flat}


def message(doc: Mapping[str, object]) -> str:
    """One line per problem, host and role first; or the count of hosts checked."""
    problems = doc["problems"]
    hosts = doc["hosts"]
    if not problems:
        return f"Preflight: {len(hosts)} of {len(hosts)} hosts ok; nothing was changed by this check."  # type: ignore[arg-type]
    refused = sorted({p["host"] for p in problems})  # type: ignore[index,union-attr]
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")  # type: ignore[arg-type]
    lines = [
        f"Preflight refused {len(refused)} of {len(hosts)} hosts ({count}); "  # type: ignore[arg-type]
        "nothing was changed. Fix these and run again:"
    ]
    lines += [f"- {p['host']} [{p['role']}]: {p['message']}" for p in problems]  # type: ignore[index,union-attr]
    return "\n".join(lines)
