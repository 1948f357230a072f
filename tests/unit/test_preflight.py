"""node_baseline stops bad input and unsupported nodes before it changes anything, with a message that says why.

Runs the role's argument validation and preflight tasks for real (ansible-playbook, connection local, tags
node_baseline_preflight) with the facts of a supported node given as extra vars, then breaks one thing at a time.
"""

from __future__ import annotations

import pytest
from helpers import flat, run_preflight


def preflight(extra: dict, facts: dict | None = None):
    return run_preflight("preflight.yml", "node_baseline_preflight", extra, facts)


def test_supported_node_with_defaults_passes():
    result = preflight({})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed=0" in result.stdout


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (
            {"distribution": "Fedora", "distribution_version": "40", "distribution_major_version": "40"},
            "runs Fedora 40, which node_baseline does not support",
        ),
        (
            {"distribution": "Debian", "distribution_version": "11.9", "distribution_major_version": "11"},
            "runs Debian 11.9, which node_baseline does not support",
        ),
        ({"architecture": "aarch64"}, "is aarch64; this project provisions x86_64 H100 nodes only"),
        ({"service_mgr": "sysvinit"}, "the service manager is sysvinit, expected systemd"),
    ],
    ids=["fedora", "debian-11", "aarch64", "no-systemd"],
)
def test_unsupported_node_is_refused(facts, expected):
    result = preflight({}, facts)
    assert result.returncode != 0
    assert expected in flat(result)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"node_baseline_package_proxy": "ftp://cache:3142"},
            "node_baseline_package_proxy is 'ftp://cache:3142'; expected an http:// or https:// URL",
        ),
        (
            {"node_baseline_debian_mirror": "deb.debian.org/debian"},
            "node_baseline_debian_mirror is 'deb.debian.org/debian'; expected an http:// or https:// URL",
        ),
        (
            {"node_baseline_debian_components": ["contrib", "non-free"]},
            "node_baseline_debian_components is ['contrib', 'non-free']; it must contain 'main'",
        ),
        ({"node_baseline_debian_components": ["main", "universe"]}, "and only names from"),
        ({"node_baseline_ntp_servers": []}, "node_baseline_ntp_servers is []; with node_baseline_time_sync true"),
        ({"node_baseline_ntp_servers": ["pool.ntp.org iburst"]}, "it must list at least one host name or address"),
        ({"node_baseline_facts_dir": "facts.d"}, "node_baseline_facts_dir is 'facts.d'; expected an absolute path"),
        # Types are checked by the role's argument_specs before any task runs.
        ({"node_baseline_ntp_servers": {"server": "pool.ntp.org"}}, "node_baseline_ntp_servers"),
        ({"node_baseline_kernel_headers": "maybe"}, "node_baseline_kernel_headers"),
    ],
    ids=[
        "proxy-scheme",
        "mirror-no-scheme",
        "no-main",
        "ubuntu-component",
        "no-ntp",
        "ntp-with-options",
        "relative-facts-dir",
        "ntp-not-a-list",
        "headers-not-bool",
    ],
)
def test_bad_setting_is_refused_by_name(extra, expected):
    result = preflight(extra)
    assert result.returncode != 0, result.stdout
    assert expected in flat(result)


def test_every_problem_of_the_node_and_the_settings_is_reported_at_once():
    result = preflight(
        {
            "node_baseline_package_proxy": "ftp://cache:3142",
            "node_baseline_debian_components": ["contrib"],
            "node_baseline_ntp_servers": ["pool.ntp.org iburst"],
            "node_baseline_facts_dir": "facts.d",
        },
        {"architecture": "aarch64", "service_mgr": "sysvinit"},
    )
    text = flat(result)
    assert result.returncode != 0, text
    assert "fatal: [localhost]" in text
    for expected in [
        "localhost is aarch64; this project provisions x86_64 H100 nodes only",
        "localhost: the service manager is sysvinit, expected systemd",
        "node_baseline_debian_components is ['contrib']; it must contain 'main'",
        "node_baseline_package_proxy is 'ftp://cache:3142'; expected an http:// or https:// URL",
        "node_baseline_ntp_servers is ['pool.ntp.org iburst']; with node_baseline_time_sync true",
        "node_baseline_facts_dir is 'facts.d'; expected an absolute path",
    ]:
        assert expected in text, (expected, text)
    assert "changed=0" in text


def test_a_value_of_the_wrong_shape_is_refused_by_name_and_the_other_checks_still_run():
    # A string where a list is meant: refused by the settings check, never iterated one character at a time.
    result = preflight({"node_baseline_ntp_servers": "pool.ntp.org", "node_baseline_facts_dir": "facts.d"})
    text = flat(result)
    assert result.returncode != 0, text
    assert "localhost: node_baseline_ntp_servers is 'pool.ntp.org'; expected a list" in text
    assert "with node_baseline_time_sync true" not in text  # the same setting is not refused twice
    assert "node_baseline_facts_dir is 'facts.d'; expected an absolute path" in text
