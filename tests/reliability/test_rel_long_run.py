"""Long runs: the training process and its DataLoader workers keep RSS and open descriptors flat.

The fast tests check the monitor itself (it sees a worker's leaked descriptors; it reads back a log cut by kill -9);
the slow one trains the demo model for 5,000 steps from video files with two persistent decoding workers.
"""
import json
import multiprocessing as mp
import os
import time

import pytest

from milnce.train.resources import read_resources, resource_growth, sample_resources
from reliability_runs import run_train, shared_tiny_corpus

LONG_STEPS, WARMUP_STEPS = 5000, 500


def _hold_files(path, n, ready, done):
    handles = [open(path, "rb") for _ in range(n)]
    ready.set()
    done.wait(30)
    for h in handles:
        h.close()


def test_sample_sees_descriptors_held_by_a_child(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"x")
    ctx = mp.get_context("spawn")
    before_ready, before_done = ctx.Event(), ctx.Event()
    idle = ctx.Process(target=_hold_files, args=(str(target), 0, before_ready, before_done))
    idle.start()
    before_ready.wait(30)
    base = sample_resources(step=0)
    before_done.set()
    idle.join(30)

    ready, done = ctx.Event(), ctx.Event()
    leaky = ctx.Process(target=_hold_files, args=(str(target), 25, ready, done))
    leaky.start()
    ready.wait(30)
    try:
        row = sample_resources(step=1)
    finally:
        done.set()
        leaky.join(30)
    assert base["workers"] >= 1 and row["workers"] >= 1
    assert row["worker_fds"] - base["worker_fds"] >= 25
    assert row["worker_rss_mb"] > 0 and row["main_rss_mb"] > 0


def test_growth_skips_warmup_and_a_torn_last_line(tmp_path):
    log = tmp_path / "resources.csv"
    log.write_text("step,main_rss_mb,workers,worker_rss_mb,worker_rss_max_mb,main_fds,worker_fds\n"
                   "100,900,2,400,200,40,20\n"    # warm-up: ignored
                   "500,1000,2,500,250,41,20\n"
                   "1000,1010,2,530,270,41,22\n"
                   "1500,1005,2,520,260,41,22\n"
                   "2000,10")                      # cut by kill -9
    assert len(read_resources(log)) == 4
    g = resource_growth(log, warmup_steps=500)
    assert (g["from_step"], g["to_step"]) == (500, 1500)
    assert g["main_rss_growth_mb"] == 5 and g["worker_rss_growth_mb"] == 20
    assert g["main_fds_growth"] == 0 and g["worker_fds_growth"] == 2
    assert g["worker_rss_peak_mb"] == 530
    with pytest.raises(ValueError, match="resources.csv"):
        resource_growth(log, warmup_steps=1600)


def test_a_training_run_writes_its_resource_log(tmp_path_factory, tmp_path):
    corpus = shared_tiny_corpus(tmp_path_factory)
    run_dir = tmp_path / "run"
    from reliability_runs import tiny_overrides

    proc = run_train([*tiny_overrides(corpus, run_dir, max_steps=4, every=4), "trainer.resources_every_n_steps=2",
                      "data.num_workers=1", "data.cache_in_memory=false"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_resources(run_dir / "resources.csv")
    assert [r["step"] for r in rows] == [2, 4]
    assert all(r["workers"] >= 1 and r["worker_fds"] > 0 for r in rows)


@pytest.mark.slow
def test_demo_model_5000_steps_from_files_keeps_workers_flat(tmp_path_factory, tmp_path):
    """5,000 steps of the demo model (r2plus1d, 8 frames at 48 px, batch 4) decoding video files in 2 workers."""
    corpus = shared_tiny_corpus(tmp_path_factory)
    run_dir = tmp_path / "run"
    overrides = [f"data.root={corpus}", "toy.generate=false", f"run_dir={run_dir}", "data.batch_size=4",
                 "data.num_workers=2", "data.cache_in_memory=false", "eval.retrieval=[]", "eval.crosstask=null",
                 "eval.at_fractions=[]", f"trainer.max_steps={LONG_STEPS}", "trainer.max_time=null",
                 "trainer.checkpoint_every_n_steps=1000", "trainer.resources_every_n_steps=100",
                 "trainer.log_every_n_steps=50", "trainer.num_threads=1"]
    t0 = time.time()
    proc = run_train(overrides, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    g = resource_growth(run_dir / "resources.csv", warmup_steps=WARMUP_STEPS)
    g["seconds"] = round(time.time() - t0, 1)
    print("\nresource growth over", LONG_STEPS, "steps:", json.dumps(g))
    (tmp_path.parent / "resource_growth.json").write_text(json.dumps(g))
    assert g["to_step"] == LONG_STEPS and g["workers"] == 2
    assert g["worker_fds_growth"] <= 0 and g["main_fds_growth"] <= 2
    assert g["worker_rss_growth_mb"] <= 2 * 20.0     # per worker: the 20 MiB bound of test_rel_memory
    assert g["main_rss_growth_mb"] <= 50.0
