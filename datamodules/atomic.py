"""Files and folders that are either the old version or the new one, never half-written (a kill -9, a full disk).

Every writer of the project goes through here: the bytes go to a temporary name in the destination's own directory
(same filesystem, so the rename is atomic), are fsynced, are renamed over the destination, and the directory is
fsynced so the rename itself survives a power cut. On any error the temporary is removed and the old file stays.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


def _temp_name(path: Path) -> Path:
    # the real suffix stays last: np.save, savefig and PyAV choose the format from it
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def fsync_dir(path: PathLike) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # a platform without directory fds: the rename is still atomic, only less durable
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """`with atomic_path(p) as tmp: write tmp` — p is replaced by tmp's content only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: PathLike, data: Union[str, bytes]) -> None:
    """Replace `path` with `data` (str as UTF-8) atomically and durably."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


@contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """`with atomic_dir(d) as tmp: fill tmp` — the folder d is replaced as a whole, only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        for folder, _, files in os.walk(tmp):
            for name in files:
                _fsync_file(Path(folder) / name)
            fsync_dir(folder)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_create(path: PathLike, data: Union[str, bytes]) -> bool:
    """Create `path` holding `data`, complete, only if it does not exist yet: False (nothing written) if it does.

    The bytes go to a temporary, are fsynced, and are hard-linked to `path` (link fails if `path` exists), so two
    processes racing for the same name cannot both win and nobody ever reads a half-written file (lock files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        _fsync_file(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, then write (not atomic in content)
            try:
                fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(tmp.read_bytes())
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(path.parent)
        return True
    finally:
        if tmp.exists():
            tmp.unlink()
