"""Two runs on one run_dir: the second refuses naming the run_dir and the holder (pid, host); a stale lock from a
killed run is taken over with a warning, so the same command resumes after kill -9; under DDP only rank 0 locks."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from milnce.train.run_lock import LOCK_NAME, RunDirLocked, RunLock, _start_time
from reliability_runs import ROOT, run_env, run_train, tiny_overrides, train_command


def _write_lock(run_dir, pid, host=None, start=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": host or socket.gethostname(), "start": start, "since": "then"}
    (run_dir / LOCK_NAME).write_text(json.dumps(record))


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_live_holder_is_refused_naming_run_dir_pid_and_host(tmp_path, live_pid):
    _write_lock(tmp_path, live_pid, start=_start_time(live_pid))
    with pytest.raises(RunDirLocked) as err:
        RunLock(tmp_path, enabled=True).acquire()
    message = str(err.value)
    assert str(tmp_path) in message and f"pid {live_pid}" in message and socket.gethostname() in message
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == live_pid  # untouched


def test_another_hosts_lock_is_refused(tmp_path):
    _write_lock(tmp_path, 12345, host="node-elsewhere")
    with pytest.raises(RunDirLocked, match="node-elsewhere"):
        RunLock(tmp_path, enabled=True).acquire()


def test_a_dead_holders_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path, dead.pid)
    with caplog.at_level(logging.WARNING, logger="milnce"):
        with RunLock(tmp_path, enabled=True):
            held = json.loads((tmp_path / LOCK_NAME).read_text())
            assert held["pid"] == os.getpid()
    assert "stale lock" in caplog.text and f"pid {dead.pid} is no longer alive" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()  # released
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporaries left


def test_a_recycled_pid_and_an_unreadable_lock_are_stale(tmp_path, live_pid):
    _write_lock(tmp_path, live_pid, start="1")  # the pid lives, but it is another process than the one that locked
    with RunLock(tmp_path, enabled=True):
        pass
    (tmp_path / LOCK_NAME).write_text("{half")
    with RunLock(tmp_path, enabled=True):
        pass


def test_lock_without_hard_links_is_still_exclusive(tmp_path, monkeypatch, live_pid):
    def no_links(src, dst):
        raise PermissionError("operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with RunLock(tmp_path, enabled=True):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    _write_lock(tmp_path, live_pid, start=_start_time(live_pid))
    with pytest.raises(RunDirLocked):
        RunLock(tmp_path, enabled=True).acquire()


def test_lock_is_released_when_the_run_raises(tmp_path):
    with pytest.raises(ValueError):
        with RunLock(tmp_path, enabled=True):
            raise ValueError("crash")
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("var", ["LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID"])
def test_only_global_rank_zero_takes_the_lock(tmp_path, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    with RunLock(tmp_path):
        assert not (tmp_path / LOCK_NAME).exists()
    monkeypatch.setenv(var, "0")
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from reliability_runs import shared_tiny_corpus

    return shared_tiny_corpus(tmp_path_factory)


@pytest.mark.slow
def test_the_same_command_twice_refuses_then_resumes_after_kill_9(corpus, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(corpus, run_dir, max_steps=400, every=2)
    first = subprocess.Popen(train_command(overrides), cwd=ROOT, env=run_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    try:
        t0 = time.monotonic()
        while not last.exists():
            assert first.poll() is None, "the first run ended before its first checkpoint"
            assert time.monotonic() - t0 < 300
            time.sleep(0.05)
        second = run_train(overrides)
        assert second.returncode == 3, second.stderr[-3000:]
        assert f"run_dir {run_dir} is in use by pid {first.pid} on host {socket.gethostname()}" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first run goes on
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    resumed = run_train(tiny_overrides(corpus, run_dir, max_steps=step + 2, every=2))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {last}" in resumed.stdout
    assert "taking over the stale lock" in resumed.stdout + resumed.stderr
    assert not (run_dir / LOCK_NAME).exists()
