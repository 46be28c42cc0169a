"""Atomic writes: a target is either its old complete self or its new complete self, never half of either, and
is published with the modes a new file gets under the umask."""

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pretrain import fileio
from pretrain.fileio import atomic_output, checksum, staging_path, write_json, write_text


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


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


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_what_is_published_has_the_modes_of_a_new_file_under_the_umask(tmp_path, mask):
    """Whoever wrote the staged files: safetensors stages its own mkstemp file (mode 600) and renames it."""
    with umask(mask):
        assert fileio.umask() == mask
        (tmp_path / "fresh_file").touch()
        (tmp_path / "fresh_dir").mkdir()
        new_file, new_dir = mode(tmp_path / "fresh_file"), mode(tmp_path / "fresh_dir")
        with atomic_output(tmp_path / "weights.safetensors") as staged:
            save_file({"w": torch.zeros(2)}, staged)
        with atomic_output(tmp_path / "export", directory=True) as staged:
            save_file({"w": torch.zeros(2)}, staged / "model.safetensors")
            (staged / "private").mkdir(mode=0o700)
            (staged / "private" / "wide.json").write_text("{}")
            (staged / "private" / "wide.json").chmod(0o666)
            (staged / "run.sh").write_text("#!/bin/sh\n")
            (staged / "run.sh").chmod(0o700)  # an executable stays one (DeepSpeed's zero_to_fp32.py)
            (staged / "link").symlink_to("model.safetensors")
    export = tmp_path / "export"
    assert new_file == 0o666 & ~mask and mode(tmp_path / "weights.safetensors") == new_file
    assert {p.name: mode(p) for p in [export, *export.rglob("*")] if not p.is_symlink()} == {
        "export": new_dir, "model.safetensors": new_file, "private": new_dir, "wide.json": new_file,
        "run.sh": new_dir}  # a new executable file gets a directory's 777 less the umask


def test_special_bits_of_a_published_directory_are_kept(tmp_path):
    with umask(0o022), atomic_output(tmp_path / "shared", directory=True) as staged:
        staged.chmod(0o2700)  # setgid: files created inside keep the directory's group
    assert mode(tmp_path / "shared") == 0o2755
