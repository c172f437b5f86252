"""The disk fails during a checkpoint save: a file-size limit (RLIMIT_FSIZE, in a child process) or a read-only run
directory. The save raises an error naming the file, the previous checkpoint stays complete and loadable, no
temporary is left behind, and once the space is back the same save (the rerun) succeeds."""
import os
import subprocess
import sys

import pytest
import torch

from milnce.train.checkpoint_io import AtomicCheckpointIO, CheckpointSaveError, atomic_torch_save
from reliability_runs import ROOT, run_env

LIMITED_SAVE = """
import resource, signal, sys, torch
sys.path.insert(0, {root!r})
from milnce.train.checkpoint_io import AtomicCheckpointIO, CheckpointSaveError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG instead of killing us
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, hard))   # 2 MiB per file
big = {{"state_dict": {{"w%d" % i: torch.full((256, 256), float(i)) for i in range(32)}}, "global_step": 2}}  # 8 MiB
try:
    AtomicCheckpointIO().save_checkpoint(big, {path!r})
except CheckpointSaveError as err:
    print("REFUSED", err)
    sys.exit(0)
print("SAVED")
"""


def _small():
    return {"state_dict": {"w": torch.arange(4.0)}, "global_step": 1}


def _big():
    return {"state_dict": {f"w{i}": torch.full((256, 256), float(i)) for i in range(32)}, "global_step": 2}


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_file_size_limit_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save(_small(), path)
    child = subprocess.run([sys.executable, "-c", LIMITED_SAVE.format(root=str(ROOT), path=str(path))],
                           env=run_env(), capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.startswith("REFUSED"), child.stdout
    assert f"{path}: cannot write the checkpoint" in child.stdout
    previous = AtomicCheckpointIO().load_checkpoint(path)
    assert previous["global_step"] == 1 and torch.equal(previous["state_dict"]["w"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # the partial temporary is gone
    AtomicCheckpointIO().save_checkpoint(_big(), path)                # space is back: the rerun saves
    assert AtomicCheckpointIO().load_checkpoint(path)["global_step"] == 2


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_run_directory_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    path = folder / "last.ckpt"
    atomic_torch_save(_small(), path)
    folder.chmod(0o555)
    try:
        with pytest.raises(CheckpointSaveError, match=f"{path}: cannot write the checkpoint"):
            AtomicCheckpointIO().save_checkpoint(_big(), path)
    finally:
        folder.chmod(0o755)
    assert AtomicCheckpointIO().load_checkpoint(path)["global_step"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from reliability_runs import shared_tiny_corpus

    return shared_tiny_corpus(tmp_path_factory)


@pytest.mark.slow
def test_training_under_a_file_size_limit_stops_naming_the_checkpoint_then_resumes(corpus, tmp_path):
    import resource

    from reliability_runs import run_train, tiny_overrides, train_command

    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    first = run_train(tiny_overrides(corpus, run_dir, max_steps=2, every=2))
    assert first.returncode == 0, first.stderr[-3000:]
    size = last.stat().st_size

    def limit():  # in the child only; Python ignores SIGXFSZ, so a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    overrides = tiny_overrides(corpus, run_dir, max_steps=4, every=2)
    limited = subprocess.run(train_command(overrides), cwd=ROOT, env=run_env(), capture_output=True, text=True,
                             timeout=600, preexec_fn=limit)
    assert limited.returncode == 4, limited.stderr[-3000:]
    assert "cannot write the checkpoint" in limited.stderr and str(run_dir / "checkpoints") in limited.stderr
    assert "Traceback" not in limited.stderr
    kept = torch.load(last, map_location="cpu", weights_only=True)
    assert kept["global_step"] == 2                                     # the previous checkpoint, complete
    assert not [p.name for p in last.parent.iterdir() if ".tmp-" in p.name]
    again = run_train(overrides)                                        # space is back: the same command resumes
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {last}" in again.stdout
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4


LIMITED_EXTRACT = """
import resource, sys
from types import SimpleNamespace
import numpy as np
sys.path.insert(0, {root!r})
from milnce.search import extract as extract_mod
from milnce.search.index import IndexWriteError

def encode_video(model, video, window, stride, batch_size):
    emb = np.random.default_rng(int(video[1:-4])).standard_normal((4, 512)).astype(np.float32)
    starts = np.arange(4.0)
    return SimpleNamespace(video=video, starts=starts, ends=starts + 2, embeddings=emb, duration=6.0)

extract_mod.encode_video = encode_video
if {limit}:
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
model = SimpleNamespace(preprocess={{"fps": 10}}, checkpoint_path="fake.ckpt")
try:
    print("DONE", extract_mod.extract(model, ["v%d.mp4" % i for i in range({videos})], {out!r}, window=2.0,
                                      stride=1.0, shard_rows=20, progress=False, mode="per_window"))
except IndexWriteError as err:
    print("REFUSED", err)
"""


def _extract_child(out, videos, limit=0):
    script = LIMITED_EXTRACT.format(root=str(ROOT), out=str(out), videos=videos, limit=limit)
    child = subprocess.run([sys.executable, "-c", script], env=run_env(), capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    return child.stdout


def test_file_size_limit_during_extraction_keeps_the_index_complete_and_the_rerun_resumes(tmp_path):
    from milnce.search.index import MomentIndex, load_shards, read_settings

    out = tmp_path / "index"
    assert _extract_child(out, videos=5).startswith("DONE")            # 1 shard of 5 videos × 4 windows, 40 KB
    before = (out / "faiss.index").read_bytes()
    refused = _extract_child(out, videos=10, limit=30_000)             # the next 40 KB shard cannot be written
    assert refused.startswith("REFUSED") and f"{out / 'shards' / 'shard_00001.npy'}: cannot write" in refused
    assert read_settings(out)["shards"] == ["shard_00000"]
    emb, rows = load_shards(out)
    assert emb.shape == (20, 512) and len(rows) == 20
    assert (out / "faiss.index").read_bytes() == before and len(MomentIndex(out)) == 20
    assert not [p.name for p in (out / "shards").iterdir() if ".tmp-" in p.name]
    assert _extract_child(out, videos=10).startswith("DONE")           # space is back: resumes, no duplicates
    emb, rows = load_shards(out)
    assert emb.shape == (40, 512) and sorted({r[0] for r in rows}) == sorted(f"v{i}.mp4" for i in range(10))
    assert len(MomentIndex(out)) == 40


LIMITED_NARRATIONS = """
import resource, sys
sys.path.insert(0, {root!r})
from datamodules.narrations.index import NarrationIndex, NarrationIndexWriteError
videos = [("v%d" % i, [0.0, 1.0], [1.0, 2.0], ["word " * 200, "more " * 200]) for i in range(200)]
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    NarrationIndex.build(iter(videos), {out!r}, overwrite=True)
    print("BUILT")
except NarrationIndexWriteError as err:
    print("REFUSED", err)
"""


def test_file_size_limit_during_narration_index_building_keeps_the_previous_index(tmp_path):
    from datamodules.narrations.index import NarrationIndex

    out = tmp_path / "narration_index"
    NarrationIndex.build([("a", [0.0], [1.0], ["hello"]), ("b", [0.0], [2.0], ["world"])], out)
    child = subprocess.run([sys.executable, "-c", LIMITED_NARRATIONS.format(root=str(ROOT), out=str(out))],
                           env=run_env(), capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.startswith("REFUSED") and f"{out}: cannot write the narration index" in child.stdout
    index = NarrationIndex.open(out)
    assert len(index) == 2 and index.texts(1) == ["world"]  # the previous index, complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["narration_index"]  # no temporary folder left
