"""The test fleet's SSH data: ports, the files a node gets, known_hosts, the key, and the inventories that use them."""

from __future__ import annotations

import configparser
import io
import os
import socket
import stat
import tarfile
from pathlib import Path

import pytest
import yaml

from h100fleet.testfleet import images, ssh

REPO = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBuZ9Ajq1r0s8fGgJ8rQe7bXkVt3bY6p2H1Vv0R4yYbT"


def test_up_gives_node_i_port_base_plus_i():
    assert ssh.up_ports("h100-node", 3) == {"h100-node-1": 2201, "h100-node-2": 2202, "h100-node-3": 2203}
    assert ssh.up_ports("n", 99)["n-99"] == 2299


@pytest.mark.parametrize("count", [0, 100, -1])
def test_up_refuses_a_node_count_without_ports(count):
    with pytest.raises(ValueError, match=rf"--nodes {count}: expected 1 to 99"):
        ssh.up_ports("h100-node", count)


def test_node_specs_name_or_name_and_port():
    assert ssh.parse_node_specs(["a", "b:2301", "c:2302"]) == {"a": None, "b": 2301, "c": 2302}


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["a:ssh"], r"node 'a:ssh': the SSH port after ':' must be a number, got 'ssh'"),
        ([":2301"], r"node ':2301': expected NAME or NAME:PORT"),
        (["a:2301", "a:2302"], r"node a: given twice"),
        (["a:2301", "b:2301"], r"nodes a and b: both given SSH port 2301; each needs its own"),
        (["a:22"], r"node a: SSH port 22 is not a port number in 1024..65535"),
        (["a:70000"], r"node a: SSH port 70000 is not a port number in 1024..65535"),
    ],
    ids=["not-a-number", "no-name", "name-twice", "port-twice", "privileged", "too-high"],
)
def test_node_specs_refuse_bad_input_naming_the_node(specs, message):
    with pytest.raises(ValueError, match=message):
        ssh.parse_node_specs(specs)


def test_sshd_config_is_loopback_keys_only_for_the_one_user():
    conf = ssh.sshd_config(2201).splitlines()
    for line in [
        "Port 2201",
        "ListenAddress 127.0.0.1",
        "AllowUsers ops",
        "PermitRootLogin no",
        "PasswordAuthentication no",
        "AuthorizedKeysFile /etc/ssh/authorized_keys/%u",
    ]:
        assert line in conf


def test_node_archive_holds_the_sshd_settings_and_the_key_root_owned():
    with tarfile.open(fileobj=io.BytesIO(ssh.node_archive(2202, KEY + " me@control\n"))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {
            "etc/ssh/authorized_keys",
            "etc/ssh/authorized_keys/ops",
            "etc/ssh/sshd_config.d/h100fleet-testfleet.conf",
        }
        assert all(m.uid == 0 and m.gid == 0 for m in members.values())
        assert members["etc/ssh/authorized_keys"].isdir() and members["etc/ssh/authorized_keys"].mode == 0o755
        key = tar.extractfile(members["etc/ssh/authorized_keys/ops"]).read().decode()
        conf = tar.extractfile(members["etc/ssh/sshd_config.d/h100fleet-testfleet.conf"]).read().decode()
    assert key == KEY + " me@control\n"
    assert conf == ssh.sshd_config(2202)
    assert members["etc/ssh/authorized_keys/ops"].mode == 0o644


def test_the_image_runs_sshd_only_where_the_harness_wrote_its_settings():
    script = images.SETUP_SCRIPT.read_text()
    assert f"ConditionPathExists={ssh.SSHD_CONFIG}" in script
    assert "ExecStartPre=/usr/bin/ssh-keygen -A" in script
    assert "rm -f /etc/ssh/ssh_host_*" in script  # each node makes its own host keys
    assert "ln -sf /dev/null /etc/systemd/system/ssh.socket" in script  # no listener on port 22
    assert "openssh-server" in images.BASE_PACKAGES
    assert images.recipe("trixie").user == ssh.USER


def test_known_hosts_entries_replace_a_port_and_keep_the_others():
    text = "[127.0.0.1]:2201 ssh-ed25519 OLD1\n[127.0.0.1]:2202 ssh-ed25519 OLD2\n"
    merged = ssh.merge_known_hosts(text, {2201: "ssh-ed25519 NEW1 root@h100-node-1\n", 2203: "ssh-ed25519 NEW3"})
    assert merged.splitlines() == [
        "[127.0.0.1]:2202 ssh-ed25519 OLD2",
        "[127.0.0.1]:2201 ssh-ed25519 NEW1",
        "[127.0.0.1]:2203 ssh-ed25519 NEW3",
    ]


def test_known_hosts_refuses_what_is_no_host_key():
    with pytest.raises(ValueError, match=r"port 2201: not an SSH public host key: 'cat: No such file'"):
        ssh.known_hosts_entry(2201, "cat: No such file")


def test_record_host_keys_writes_known_hosts(tmp_path):
    path = ssh.record_host_keys({2301: "ssh-ed25519 K1 root@x"}, tmp_path)
    ssh.record_host_keys({2302: "ssh-ed25519 K2 root@y"}, tmp_path)
    assert path == tmp_path / "ssh" / "known_hosts"
    assert path.read_text() == "[127.0.0.1]:2301 ssh-ed25519 K1\n[127.0.0.1]:2302 ssh-ed25519 K2\n"


def test_ensure_key_generates_one_key_pair_and_keeps_it(tmp_path):
    key = ssh.ensure_key(tmp_path)
    assert key == ssh.key_path(tmp_path) == tmp_path / "ssh" / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    public = ssh.public_key(tmp_path)
    assert public.startswith("ssh-ed25519 ")
    ssh.ensure_key(tmp_path)
    assert ssh.public_key(tmp_path) == public


def test_ssh_argv_uses_the_key_and_checks_host_keys(tmp_path):
    argv = ssh.ssh_argv(2201, ["sudo", "-n", "true"], tmp_path)
    assert argv[0] == "ssh" and argv[-4:] == ["ops@127.0.0.1", "sudo", "-n", "true"]
    assert ["-i", str(tmp_path / "ssh" / "id_ed25519")] == argv[1:3]
    assert f"UserKnownHostsFile={tmp_path / 'ssh' / 'known_hosts'}" in argv
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert argv[argv.index("-p") + 1] == "2201"


def test_port_in_use_sees_a_listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert ssh.port_in_use(sock.getsockname()[1]) is True


def test_the_state_directory_is_never_committed():
    assert ssh.STATE_DIR == REPO / ".state" / "testfleet"
    assert "/.state/" in (REPO / ".gitignore").read_text().splitlines()


def _inventory_hostvars(source: Path) -> dict[str, dict]:
    """Every host's variables as Ansible templates them for the connection (inventory_dir and all)."""
    from ansible.inventory.manager import InventoryManager  # noqa: PLC0415
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
    from ansible.template import Templar  # noqa: PLC0415
    from ansible.vars.manager import VariableManager  # noqa: PLC0415

    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(source)])
    manager = VariableManager(loader=loader, inventory=inventory)
    rendered = {}
    for host in inventory.get_hosts("h100s"):
        hostvars = manager.get_vars(host=host)
        templar = Templar(loader=loader, variables=hostvars)
        rendered[host.name] = {k: templar.template(v) for k, v in hostvars.items() if k.startswith("ansible_")}
    return rendered


def test_the_demo_inventory_reaches_the_nodes_up_starts_over_ssh():
    hostvars = _inventory_hostvars(REPO / "inventory" / "local")
    assert {name: v["ansible_port"] for name, v in hostvars.items()} == ssh.up_ports("h100-node", 3)
    for v in hostvars.values():
        assert v.get("ansible_connection", "ssh") == "ssh"
        assert v["ansible_host"] == ssh.LISTEN
        assert v["ansible_user"] == ssh.USER
        assert v["ansible_become"] is True
        assert v["ansible_ssh_private_key_file"] == str(ssh.key_path())
        assert v["ansible_ssh_common_args"].split() == ssh.ssh_options()[2:]


def test_ansible_cfg_pipelines_and_persists_connections():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "ansible.cfg")
    assert cfg.getboolean("ssh_connection", "pipelining")
    args = cfg.get("ssh_connection", "ssh_args").split()
    assert "ControlMaster=auto" in args and any(a.startswith("ControlPersist=") for a in args)


def test_the_ssh_molecule_scenario_connects_as_the_demo_does():
    scenario = yaml.safe_load((REPO / "molecule" / "node_baseline" / "molecule.yml").read_text())
    provisioner = scenario["provisioner"]
    options = {
        k: v.replace("${MOLECULE_PROJECT_DIRECTORY}", str(REPO)) if isinstance(v, str) else v
        for k, v in provisioner["connection_options"].items()
    }
    assert options["ansible_connection"] == "ssh"
    assert options["ansible_host"] == ssh.LISTEN
    assert options["ansible_user"] == ssh.USER
    assert options["ansible_become"] is True
    assert options["ansible_ssh_private_key_file"] == str(ssh.key_path())
    assert options["ansible_ssh_common_args"].split() == ssh.ssh_options()[2:]
    # Molecule writes its own ansible.cfg: the scenario carries ansible.cfg's SSH settings, host keys checked.
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "ansible.cfg")
    ssh_connection = provisioner["config_options"]["ssh_connection"]
    assert ssh_connection["ssh_args"] == cfg.get("ssh_connection", "ssh_args")
    assert ssh_connection["pipelining"] is cfg.getboolean("ssh_connection", "pipelining")
    assert provisioner["config_options"]["defaults"]["host_key_checking"] is True
    # Every platform has its own port, outside the range `testfleet up` uses; the create step passes it on.
    ports = {name: v["ansible_port"] for name, v in provisioner["inventory"]["host_vars"].items()}
    assert set(ports) == {p["name"] for p in scenario["platforms"]}
    ssh.check_ports(ports)
    assert all(port > ssh.PORT_BASE + ssh.MAX_UP_NODES for port in ports.values())
    create = (REPO / ".config" / "molecule" / "create.yml").read_text()
    assert "map(attribute='ansible_port', default='')" in create


def test_keys_made_under_sudo_belong_to_the_invoking_user(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    monkeypatch.setenv("SUDO_UID", "4242")
    monkeypatch.setenv("SUDO_GID", "4343")
    key = ssh.ensure_key(tmp_path / "state")
    for path in (key, key.with_suffix(".pub"), key.parent, tmp_path / "state"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4242, 4343)
