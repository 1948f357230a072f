"""The test fleet's pure parts: image recipes and their hash, container options, apt proxy configuration."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
import yaml

from h100fleet.testfleet import images, nodes, services, ssh

REPO = Path(__file__).resolve().parents[2]


def test_recipe_hash_is_stable_and_tag_carries_it():
    r = images.recipe("trixie")
    assert r.digest() == images.recipe("trixie").digest()
    assert r.tag == f"h100fleet/node:trixie-{r.digest()[:12]}"
    assert r.alias == "h100fleet/node:trixie"


def test_suites_differ_in_components():
    assert images.recipe("bookworm").components == ("main",)
    assert images.recipe("trixie").components == ("main", "contrib", "non-free", "non-free-firmware")
    assert images.recipe("bookworm").digest() != images.recipe("trixie").digest()


@pytest.mark.parametrize(
    "change",
    [
        {"packages": (*images.BASE_PACKAGES, "vim")},
        {"mirror": "http://mirror.example/debian"},
        {"components": ("main", "contrib")},
        {"variant": "buildd"},
        {"user": "admin"},
    ],
    ids=["packages", "mirror", "components", "variant", "user"],
)
def test_any_recipe_field_changes_the_hash(change):
    base = images.recipe("trixie")
    assert dataclasses.replace(base, **change).digest() != base.digest()


def test_setup_script_content_changes_the_hash(tmp_path):
    base = images.recipe("bookworm")
    script = tmp_path / "setup-node.sh"
    script.write_bytes(base.setup_script.read_bytes())
    same = dataclasses.replace(base, setup_script=script)
    assert same.digest() == base.digest()
    script.write_bytes(script.read_bytes() + b"\n# changed\n")
    assert same.digest() != base.digest()


def test_unknown_suite_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown node image suite 'bullseye': expected one of bookworm, trixie"):
        images.recipe("bullseye")


def test_debootstrap_argv():
    r = images.recipe("trixie")
    argv = images.debootstrap_argv(r, Path("/tmp/root"))
    assert argv == [
        "debootstrap",
        "--variant=minbase",
        "--components=main,contrib,non-free,non-free-firmware",
        "--include=" + ",".join(images.BASE_PACKAGES),
        "trixie",
        "/tmp/root",
        "http://deb.debian.org/debian",
    ]
    assert images.import_changes(r)[0] == 'CMD ["/sbin/init"]'
    assert f"org.h100fleet.recipe={r.digest()}" in images.import_changes(r)[-1]


def test_docker_create_argv_has_every_container_option():
    argv = nodes.docker_create_argv("h100-node-1", "h100fleet/node:trixie")
    assert argv[:2] == ["docker", "create"]
    assert argv[-2:] == ["h100fleet/node:trixie", "/sbin/init"]
    for expected in [
        "--hostname",
        "--cap-add=SYS_ADMIN",
        "--security-opt=seccomp=unconfined",
        "--security-opt=apparmor=unconfined",
        "--cgroupns=host",
        "--network=host",
        "--tmpfs=/run",
        "--tmpfs=/run/lock",
        "--volume=/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--stop-signal=SIGRTMIN+3",
    ]:
        assert expected in argv
    assert "--privileged" not in argv


def molecule_platforms():
    for path in sorted((REPO / "molecule").glob("*/molecule.yml")):
        for platform in yaml.safe_load(path.read_text())["platforms"]:
            yield pytest.param(platform, id=f"{path.parent.name}/{platform['name']}")


@pytest.mark.parametrize("platform", list(molecule_platforms()))
def test_molecule_platforms_name_a_local_image_and_nothing_else(platform):
    """Molecule's nodes start as `h100fleet testfleet up` starts the demo's: the shared create step applies
    CONTAINER_OPTIONS, so a platform that carried its own options would be ignored or drift."""
    assert set(platform) <= {"name", "image", "groups"}, f"{platform['name']}: {sorted(platform)}"
    assert platform["image"] in {r.alias for r in images.RECIPES.values()}


def test_molecule_scenarios_create_and_destroy_nodes_through_the_test_fleet():
    base = yaml.safe_load((REPO / ".config" / "molecule" / "config.yml").read_text())
    playbooks = base["provisioner"]["playbooks"]
    assert playbooks == {
        "create": "${MOLECULE_PROJECT_DIRECTORY}/.config/molecule/create.yml",
        "destroy": "${MOLECULE_PROJECT_DIRECTORY}/.config/molecule/destroy.yml",
    }
    create = (REPO / ".config" / "molecule" / "create.yml").read_text()
    assert "'testfleet', 'start'" in create
    for path in sorted((REPO / "molecule").glob("*/molecule.yml")):
        scenario = yaml.safe_load(path.read_text())
        assert "playbooks" not in scenario.get("provisioner", {}), f"{path}: overrides the shared create/destroy"


def test_start_runs_the_fleet_options_for_named_nodes(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(
        nodes,
        "run",
        lambda argv, check=True: calls.append(argv) or subprocess.CompletedProcess(argv, 0, "running\n", ""),
    )
    copied, logins = [], []
    monkeypatch.setattr(ssh, "run", lambda argv, check=True: subprocess.CompletedProcess(argv, 0, "", ""))
    monkeypatch.setattr(ssh, "port_in_use", lambda port: False)
    monkeypatch.setattr(ssh, "copy_into", lambda name, archive: copied.append((name, archive)))
    monkeypatch.setattr(ssh, "check_login", lambda name, port, state_dir: logins.append((name, port)))
    monkeypatch.setattr(ssh, "ensure_key", ssh.key_path)
    monkeypatch.setattr(ssh, "public_key", lambda state_dir: "ssh-ed25519 AAAAkey test")
    monkeypatch.setattr(ssh, "record_host_keys", lambda keys, state_dir: calls.append(["known_hosts", sorted(keys)]))
    states = nodes.up({"a": None, "b": 2301}, "h100fleet/node:trixie", state_dir=tmp_path)
    assert states == {"a": "running", "b": "running"}
    assert [argv for argv in calls if argv[:2] == ["docker", "create"]] == [
        nodes.docker_create_argv("a", "h100fleet/node:trixie"),
        nodes.docker_create_argv("b", "h100fleet/node:trixie"),
    ]
    # Only the node with a port gets sshd settings and a key, before it starts; its host key is recorded after boot.
    assert [name for name, _ in copied] == ["b"]
    assert calls.index(["docker", "start", "b"]) > calls.index(nodes.docker_create_argv("b", "h100fleet/node:trixie"))
    assert ["docker", "exec", "b", "cat", ssh.HOST_KEY] in calls
    assert ["known_hosts", [2301]] in calls
    assert logins == [("b", 2301)]


def test_start_refuses_a_port_in_use_before_creating_anything(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(nodes, "run", lambda argv, check=True: calls.append(argv))
    monkeypatch.setattr(ssh, "ensure_key", ssh.key_path)
    monkeypatch.setattr(ssh, "port_in_use", lambda port: port == 2302)
    with pytest.raises(RuntimeError, match=r"node y: port 127.0.0.1:2302 for its sshd is already in use"):
        nodes.up({"x": 2301, "y": 2302}, "h100fleet/node:trixie", state_dir=tmp_path)
    assert not [argv for argv in calls if argv[:2] in (["docker", "create"], ["docker", "start"])]


def test_acng_config_points_at_the_reachable_mirror(tmp_path):
    files = services.acng_config(tmp_path / "cache", tmp_path / "log", port=3999)
    conf = files["acng.conf"]
    assert f"CacheDir: {tmp_path / 'cache'}" in conf
    assert "Port: 3999" in conf
    assert "BindAddress: 127.0.0.1" in conf
    assert files["backends_debian"] == "http://deb.debian.org/debian/\n"


def test_apt_proxy_answers_false_when_nothing_listens():
    # Port 9 (discard) on loopback: nothing of ours listens there.
    assert services.apt_proxy_answers("127.0.0.1", 9) is False


def test_host_ca_certificates_change_the_hash(tmp_path):
    base = dataclasses.replace(images.recipe("trixie"), ca_dir=tmp_path)
    empty = base.digest()
    (tmp_path / "proxy-ca.crt").write_text("-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n")
    with_ca = base.digest()
    assert with_ca != empty
    (tmp_path / "proxy-ca.crt").write_text("-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n")
    assert base.digest() not in {empty, with_ca}
    assert base.ca_certificates() == [tmp_path / "proxy-ca.crt"]


def test_start_refuses_an_image_of_an_older_recipe(monkeypatch):
    current = images.recipe("bookworm").digest()
    label = {"h100fleet/node:bookworm": current, "old": "0" * 64}
    monkeypatch.setattr(
        images, "run", lambda argv, check=True: subprocess.CompletedProcess(argv, 0, label[argv[-1]] + "\n", "")
    )
    images.check_current("h100fleet/node:bookworm")
    with pytest.raises(RuntimeError, match=r"image old was built from an older recipe: run `h100fleet testfleet"):
        images.check_current("old")
