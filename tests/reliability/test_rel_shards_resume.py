"""kill -9 during a run trained from shards (data.dataset=shards), then the same command again: the resumed run
ends with exactly the weights of an uninterrupted one, so no sample was repeated or skipped across the kill."""
import signal

import pytest
import torch

pytest.importorskip("litdata")

from milnce.commands.shard import main as shard_main  # noqa: E402
from reliability_runs import run_train, tiny_overrides  # noqa: E402
from test_rel_resume import MAX_STEPS, EVERY, _kill_after_first_checkpoint, _weights  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from reliability_runs import shared_tiny_corpus

    return shared_tiny_corpus(tmp_path_factory)


@pytest.mark.slow
def test_kill_9_then_rerun_on_shards_ends_with_the_weights_of_an_uninterrupted_run(corpus, tmp_path):
    shards = tmp_path / "shards"
    assert shard_main(["--root", str(corpus), "--out", str(shards), "--chunk-bytes", "400KB"]) == 0

    def overrides(run_dir):
        return tiny_overrides(corpus, run_dir, MAX_STEPS, EVERY) + ["data.dataset=shards", f"data.shards={shards}"]

    full = tmp_path / "uninterrupted"
    done = run_train(overrides(full))
    assert done.returncode == 0, done.stderr[-3000:]
    killed = tmp_path / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    step_at_kill, rc = _kill_after_first_checkpoint(overrides(killed), last)
    assert rc == -signal.SIGKILL and step_at_kill < MAX_STEPS
    resumed = run_train(overrides(killed))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {last}" in resumed.stdout
    step_a, weights_a = _weights(full)
    step_b, weights_b = _weights(killed)
    assert step_a == step_b == MAX_STEPS
    differing = [k for k in weights_a if not torch.equal(weights_a[k], weights_b[k])]
    assert not differing, differing[:5]


@pytest.mark.slow
def test_training_from_an_s3_endpoint_ends_with_the_weights_of_training_from_the_folder(corpus, tmp_path, s3_endpoint):
    """tools/train.py with data.shards=s3://… against moto's S3 server on 127.0.0.1, end to end."""
    shards = tmp_path / "shards"
    assert shard_main(["--root", str(corpus), "--out", str(shards), "--chunk-bytes", "400KB"]) == 0
    s3_endpoint.create_bucket(Bucket="milnce-runs")
    for f in sorted(shards.iterdir()):
        s3_endpoint.upload_file(str(f), "milnce-runs", f"toy/shards/{f.name}")
    local, remote = tmp_path / "local", tmp_path / "remote"
    a = run_train(tiny_overrides(corpus, local, MAX_STEPS, EVERY) + ["data.dataset=shards", f"data.shards={shards}"])
    assert a.returncode == 0, a.stderr[-3000:]
    b = run_train(tiny_overrides(corpus, remote, MAX_STEPS, EVERY) + [
        "data.dataset=shards", "data.shards=s3://milnce-runs/toy/shards", f"data.shard_cache={tmp_path / 'c'}"])
    assert b.returncode == 0, b.stderr[-3000:]
    step_a, weights_a = _weights(local)
    step_b, weights_b = _weights(remote)
    assert step_a == step_b == MAX_STEPS
    differing = [k for k in weights_a if not torch.equal(weights_a[k], weights_b[k])]
    assert not differing, differing[:5]
