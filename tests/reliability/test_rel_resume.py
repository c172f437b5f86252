"""kill -9 during training, then the same command again: the run resumes from last.ckpt and, on a deterministic
CPU run, ends with exactly the weights of an uninterrupted run; a resumed epoch neither repeats nor skips samples;
checkpoint files are replaced atomically, so a kill during a save leaves the previous file intact.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from milnce.train.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from reliability_runs import ROOT, run_env, run_train, tiny_overrides, train_command

MAX_STEPS, EVERY = 10, 2   # 8 videos, batches of 2: 4 steps per epoch, so the kill lands mid-epoch


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from reliability_runs import shared_tiny_corpus

    return shared_tiny_corpus(tmp_path_factory)




def _weights(run_dir):
    ckpt = torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["global_step"], ckpt["state_dict"]


def _kill_after_first_checkpoint(overrides, last: Path, timeout=300):
    proc = subprocess.Popen(train_command(overrides), cwd=ROOT, env=run_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        while not last.exists():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() - t0 < timeout
            time.sleep(0.05)
        step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    return step, proc.returncode


@pytest.mark.slow
def test_kill_9_then_rerun_ends_with_the_weights_of_an_uninterrupted_run(corpus, tmp_path):
    full = tmp_path / "uninterrupted"
    done = run_train(tiny_overrides(corpus, full, MAX_STEPS, EVERY))
    assert done.returncode == 0, done.stderr[-3000:]

    killed = tmp_path / "killed"
    overrides = tiny_overrides(corpus, killed, MAX_STEPS, EVERY)
    last = killed / "checkpoints" / "last.ckpt"
    step_at_kill, rc = _kill_after_first_checkpoint(overrides, last)
    assert rc == -signal.SIGKILL
    resumed = run_train(overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {last}" in resumed.stdout

    step_a, weights_a = _weights(full)
    step_b, weights_b = _weights(killed)
    assert step_a == step_b == MAX_STEPS
    assert weights_a.keys() == weights_b.keys()
    differing = [k for k in weights_a if not torch.equal(weights_a[k], weights_b[k])]
    assert not differing, differing[:5]
    print(f"\nkilled at step >= {step_at_kill} of {MAX_STEPS}; resumed; {len(weights_a)} tensors bit-identical "
          "to the uninterrupted run")


@pytest.mark.slow
def test_resumed_epoch_neither_repeats_nor_skips_samples(corpus, tmp_path):
    """In-process: a crash right after a mid-epoch checkpoint; the samples of both runs are recorded per step."""
    import pytorch_lightning as pl

    from milnce.train import run
    from milnce.config import load_config
    from reliability_runs import DEMO

    class Record(pl.Callback):
        def __init__(self, seen, crash_at=None):
            self.seen, self.crash_at = seen, crash_at

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.seen[trainer.global_step] = batch["sample"].tolist()
            if trainer.global_step == self.crash_at:
                raise RuntimeError("simulated crash")

    def fit(run_dir, seen, crash_at=None):
        overrides = tiny_overrides(corpus, run_dir, MAX_STEPS, EVERY) + ["trainer.checkpoint_every_n_steps=3"]
        cfg = load_config(DEMO, overrides)
        original = run.build_trainer
        run.build_trainer = lambda cfg, d, callbacks: original(cfg, d, [*callbacks, Record(seen, crash_at)])
        try:
            run.train(cfg)
        finally:
            run.build_trainer = original

    reference, interrupted, resumed = {}, {}, {}
    fit(tmp_path / "a", reference)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tmp_path / "b", interrupted, crash_at=5)   # checkpoint at step 3 (epoch 0, batch 3 of 4)
    fit(tmp_path / "b", resumed)
    assert sorted(resumed) == list(range(4, MAX_STEPS + 1))
    assert {s: reference[s] for s in resumed} == resumed
    per_epoch = 4 * 2
    epoch0 = [i for s in (1, 2, 3) for i in interrupted[s]] + [i for s in resumed if s <= 4 for i in resumed[s]]
    assert sorted(epoch0) == list(range(per_epoch))        # every item of epoch 0 exactly once
    epoch1 = [i for s in range(5, 9) for i in resumed[s]]
    assert sorted(epoch1) == list(range(per_epoch, 2 * per_epoch))


# -- atomic checkpoint files --------------------------------------------------------------------------------------
def test_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.ones(3)}}, path)

    def broken_save(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(AtomicCheckpointIO().load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]   # no temporary left behind


WRITER = """
import sys, torch
sys.path.insert(0, {root!r})
from milnce.train.checkpoint_io import atomic_torch_save
big = {{"state_dict": {{"w%d" % i: torch.full((256, 256), float(i)) for i in range(64)}}}}   # 16 MiB
print("ready", flush=True)
n = 0
while True:
    n += 1
    big["step"] = n
    atomic_torch_save(big, {path!r})
"""


@pytest.mark.slow
def test_kill_9_during_saves_never_leaves_a_corrupt_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    kills, intact = 8, 0
    for k in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), path=str(path))],
                                stdout=subprocess.PIPE, env=run_env(), text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3 + 0.17 * k)   # somewhere inside a write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if path.exists():
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            assert len(ckpt["state_dict"]) == 64
            intact += 1
    print(f"\n{kills} kill -9 during saves of a 16 MiB checkpoint: {intact} complete files found, 0 corrupt")
    assert intact >= kills - 1
