"""Checkpoint files that are either the old version or the new one, never half-written.

Lightning's default CheckpointIO goes through an fsspec transaction, which writes a temporary file in the system
temp directory and `shutil.move`s it into place: where /tmp is another file system (a tmpfs, a node-local disk) the
move is a copy into the destination, and a kill -9 during it leaves a truncated last.ckpt that the next run cannot
resume from. Here the bytes go through datamodules.atomic: a temporary file next to the destination, fsynced, swapped in
with `os.replace` (atomic on POSIX within one directory), directory fsynced. A leftover temporary from a killed
write (a dot-file with the writer's pid) is never read. A save that fails (full disk, RLIMIT_FSIZE, read-only
run directory) raises `CheckpointSaveError` naming the file, and the previous checkpoint stays complete.

Loading (resume) is always `torch.load(weights_only=True)`: a checkpoint holding pickled objects other than tensors
and plain containers is refused, and a file that cannot be read is a CheckpointError naming it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from milnce.checkpoint import CheckpointError
from datamodules.atomic import atomic_path


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (disk full, file-size limit, read-only directory): names the file; the
    previous version of that file is left as it was."""


def atomic_torch_save(obj: Any, path: os.PathLike | str) -> None:
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(obj, f)
    except Exception as err:  # EFBIG/ENOSPC/EROFS, or torch's zip writer reporting them as RuntimeError
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise CheckpointSaveError(f"{path}: cannot write the checkpoint ({type(err).__name__}: {first}); the "
                                  "previous version of this file, if any, is intact. Free space (or lift the "
                                  "limit) and rerun the same command to resume from it.") from err


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO for local paths whose saves are atomic (datamodules.atomic)."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        if "://" in str(path):  # remote file systems: Lightning's own (object stores are atomic per object)
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Optional[Any] = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:

        if weights_only is False:
            raise CheckpointError(f"{path}: refusing weights_only=False (checkpoints are loaded as plain data only)")
        if not Path(path).is_file() and "://" not in str(path):
            raise CheckpointError(f"{path}: checkpoint file not found")
        try:
            obj = super().load_checkpoint(path, map_location=map_location, weights_only=True)
        except Exception as err:  # truncated zip, not a torch file, a pickle weights_only refuses
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            kind = ("not plain data (torch.load(weights_only=True) refused it)" if "eights only" in str(err)
                    else "cannot be read (truncated or not a checkpoint)")
            raise CheckpointError(f"{path}: {kind}: {type(err).__name__}: {first}. Move it away to resume "
                                  "from an earlier checkpoint or to start over.") from err
        if not isinstance(obj, dict) or "state_dict" not in obj:
            raise CheckpointError(f"{path}: not a Lightning training checkpoint (no 'state_dict' entry)")
        return obj
