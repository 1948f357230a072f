"""Which role files differ from their installed copies (the gpu_validate probe copy's comparison)."""

from __future__ import annotations

import hashlib

import pytest

from h100fleet.fleet import files


def entry(path, data: bytes, mode="0644", owner="root", group="root"):
    return {
        "path": str(path),
        "checksum": hashlib.sha1(data).hexdigest(),
        "mode": mode,
        "pw_name": owner,
        "gr_name": group,
    }


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "a.py").write_bytes(b"a = 1\n")
    (d / "b.py").write_bytes(b"b = 2\n")
    return d


def test_nothing_differs(src):
    found = {"files": [entry("/opt/x/a.py", b"a = 1\n"), entry("/opt/x/b.py", b"b = 2\n")]}
    assert files.stale_files(["a.py", "b.py"], str(src), found) == []


def test_missing_changed_content_mode_owner_and_group_differ(src):
    (src / "c.py").write_bytes(b"c\n")
    (src / "d.py").write_bytes(b"d\n")
    (src / "e.py").write_bytes(b"e\n")
    found = {
        "files": [
            entry("/opt/x/b.py", b"b = 3\n"),
            entry("/opt/x/c.py", b"c\n", mode="0755"),
            entry("/opt/x/d.py", b"d\n", owner="nobody"),
            entry("/opt/x/e.py", b"e\n", group="staff"),
        ]
    }
    assert files.stale_files(["a.py", "b.py", "c.py", "d.py", "e.py"], str(src), found) == [
        "a.py",
        "b.py",
        "c.py",
        "d.py",
        "e.py",
    ]


def test_no_installed_directory_yet(src):
    assert files.stale_files(["a.py"], str(src), {"files": [], "skipped_paths": {"/opt/x": "not found"}}) == ["a.py"]
    assert files.stale_files(["a.py"], str(src), {}) == ["a.py"]


def test_a_module_missing_from_the_role_is_an_error(src):
    with pytest.raises(FileNotFoundError, match=r"nope\.py: no such file"):
        files.stale_files(["nope.py"], str(src), {"files": []})


def test_checksum_is_what_ansible_reports(src):
    assert files.sha1(src / "a.py") == hashlib.sha1(b"a = 1\n").hexdigest()
