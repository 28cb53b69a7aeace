"""Atomic writes leave either the old file or the complete new one."""
import os

import pytest

from micronet.errors import UsageError
from micronet.fileio import atomic_write_text


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "sub" / "report.json"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temporary left


def test_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "report.csv"
    path.write_text("old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(UsageError, match=r"cannot write .*report.csv: disk full \(hint"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]


def test_unwritable_place_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot write"):
        atomic_write_text(blocker / "report.json", "x")
