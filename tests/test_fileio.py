"""Atomic writes: a target is either its old complete self or its new complete self, never half of either."""

import json

import pytest

from pretrain import fileio
from pretrain.fileio import atomic_output, checksum, staging_path, write_json, write_text


def test_a_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "result.json"
    with atomic_output(target) as staged:
        staged.write_text("half")
        assert not target.exists() and staged.parent == target.parent
    assert target.read_text() == "half" and not staged.exists()
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}


def test_a_failed_write_leaves_the_old_version_and_no_staging(tmp_path):
    target = tmp_path / "config.yaml"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_output(target) as staged:
        staged.write_text("new, half written")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and not staging_path(target).exists()


def test_a_directory_replaces_the_old_one_and_a_crashed_staging_is_cleared(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "stale.bin").write_text("from the previous export")
    leftover = staging_path(target)
    leftover.mkdir()
    (leftover / "junk").write_text("a crashed writer's")
    with atomic_output(target, directory=True) as staged:
        assert list(staged.iterdir()) == []  # the crashed writer's files are gone
        (staged / "model.safetensors").write_text("new")
    assert [p.name for p in target.iterdir()] == ["model.safetensors"] and not leftover.exists()


def test_the_digest_is_over_blocks_and_any_change_moves_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "CHECKSUM_BLOCK", 1000)  # several blocks, hashed in parallel
    path = tmp_path / "f"
    data = bytearray(bytes(range(256)) * 50)
    path.write_bytes(data)
    first = checksum(path)
    assert first["bytes"] == len(data) and first == checksum(path)  # the same every time, thread timing aside
    data[4321] ^= 1
    path.write_bytes(data)
    assert checksum(path)["digest"] != first["digest"]
    path.write_bytes(b"")
    assert checksum(path)["bytes"] == 0
