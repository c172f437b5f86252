"""datamodules.atomic: the destination is the old version or the new one, never half-written."""
import os

import numpy as np
import pytest

from datamodules.atomic import atomic_dir, atomic_path, atomic_write


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "sub" / "metrics.json"
    atomic_write(p, "old")
    atomic_write(p, b"new")
    assert p.read_text() == "new" and os.listdir(p.parent) == ["metrics.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "table.json"
    atomic_write(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["table.json"]


def test_temporary_keeps_the_suffix_that_picks_the_format(tmp_path):
    p = tmp_path / "emb.npy"
    with atomic_path(p) as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path
        np.save(tmp, np.arange(3))      # np.save would append .npy to any other name
    assert np.load(p).tolist() == [0, 1, 2]


def test_atomic_dir_replaces_a_folder_whole(tmp_path):
    d = tmp_path / "index"
    with atomic_dir(d) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(d) as tmp:
            (tmp / "b.txt").write_text("2")
            raise ValueError("bad input")
    assert sorted(os.listdir(d)) == ["a.txt"]
    with atomic_dir(d) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(os.listdir(d)) == ["b.txt"] and sorted(os.listdir(tmp_path)) == ["index"]
