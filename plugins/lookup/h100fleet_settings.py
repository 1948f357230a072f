"""lookup('h100fleet_settings', role, ...): the problems in a role's settings as the role sees them on this host.

A thin shim over h100fleet.fleet.settings (unit-tested there): reads the role's meta/argument_specs.yml and
defaults, templates each setting in the calling task's context (role defaults, inventory, -e) and returns one
message per problem ([] when every setting has the shape its spec declares). Options:
  spec_role: the role whose argument specs to use (default: the role calling the lookup);
  prefixes: variable-name prefixes that belong to the role (default: "<role>_"), for finding typos;
  outputs: variables with such a prefix that the role itself sets for later plays (not typos);
  detail: true to return each problem as {variable, setting, message} (the problem list a role's preflight
    collects, h100fleet.fleet.preflight) instead of its message.
"""

from __future__ import annotations

from pathlib import Path

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

try:
    from h100fleet.fleet import settings
except ImportError as exc:  # pragma: no cover - only without the project's environment
    raise ImportError(
        "h100fleet_settings needs the h100fleet package: run ansible-playbook from the project's environment"
    ) from exc


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        variables = variables or {}
        if len(terms) != 1:
            raise AnsibleError("h100fleet_settings takes one role name")
        role = str(terms[0])
        roles_dir = Path(str(variables.get("role_path", ""))).parent
        if not (roles_dir / role / "meta" / "argument_specs.yml").exists():
            roles_dir = Path(__file__).resolve().parents[2] / "roles"
        spec = settings.Spec.load(roles_dir / role)
        prefixes = tuple(kwargs.get("prefixes") or ())
        wanted = [name for name in spec.options if name in variables]
        host = str(variables.get("inventory_hostname", "localhost"))
        values, broken = {}, []
        for name in wanted:
            try:
                values[name] = self._templar.template(variables[name])
            except AnsibleError as exc:
                broken.append(settings.Problem(name, f"{host}: {name} cannot be evaluated ({exc.message})."))
        problems = broken + settings.check(
            spec, variables, values, host, prefixes=prefixes, outputs=tuple(kwargs.get("outputs") or ())
        )
        if kwargs.get("detail"):
            return [[p.as_dict() for p in problems]]
        return [[str(p) for p in problems]]
