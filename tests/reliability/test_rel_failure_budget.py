"""data.max_failure_fraction: a run over data that is too broken stops with an error naming the worst files;
below the budget, failed decodes are replaced and logged (data/failed_decodes, data/failure_fraction)."""
import csv
import shutil

import pytest
import torch

from milnce.train.failures import FailureBudget, TooManyFailedDecodes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from reliability_runs import shared_tiny_corpus

    return shared_tiny_corpus(tmp_path_factory)


def _batch(failures, failed):
    return torch.tensor(failures), failed


def test_budget_counts_tries_and_names_the_worst_files():
    budget = FailureBudget(max_fraction=0.25, min_tries=12)
    budget.update(*_batch([0, 0, 0, 0], ["", "", "", ""]))
    budget.check()
    budget.update(*_batch([2, 0, 1, 0], ["/v/a.mp4: file is empty (0 bytes)\n/v/b.mp4: moov atom not found", "",
                                          "/v/a.mp4: file is empty (0 bytes)", ""]))
    assert (budget.samples, budget.failures, budget.tries) == (8, 3, 11)
    budget.check()  # 3/11 = 27% > 25%, but fewer than min_tries
    budget.update(*_batch([1, 1], ["/v/a.mp4: file is empty (0 bytes)", "/v/c.mp4: decode timed out after 5s"]))
    with pytest.raises(TooManyFailedDecodes) as info:
        budget.check()
    message = str(info.value)
    assert "5 of 15 clip decodes failed (33.3% > data.max_failure_fraction=0.25)" in message
    lines = message.splitlines()
    assert lines[1].strip() == "3x /v/a.mp4: file is empty (0 bytes)"
    assert {lines[2].split()[1], lines[3].split()[1]} == {"/v/b.mp4:", "/v/c.mp4:"}


def test_budget_waits_for_min_tries_and_survives_a_checkpoint():
    budget = FailureBudget(max_fraction=0.05, min_tries=50)
    budget.update(torch.tensor([3, 3]), ["/v/x.mp4: bad\n/v/x.mp4: bad\n/v/x.mp4: bad"] * 2)
    budget.check()  # 6 of 8 tries, but fewer than min_tries
    restored = FailureBudget(max_fraction=0.05, min_tries=50)
    restored.load_state_dict(budget.state_dict())
    assert (restored.samples, restored.failures, restored.by_file["/v/x.mp4"]) == (2, 6, 6)
    restored.update(torch.tensor([0] * 42), [""] * 42)
    with pytest.raises(TooManyFailedDecodes, match="6x /v/x.mp4: bad"):
        restored.check()


def test_budget_rejects_a_fraction_outside_0_1():
    with pytest.raises(ValueError, match="max_failure_fraction"):
        FailureBudget(max_fraction=1.5)


# -- through a training run -----------------------------------------------------------------------------------------


def _broken_copy(corpus, dst, broken: int):
    shutil.copytree(corpus, dst)
    videos = sorted((dst / "videos").glob("*.mp4"))
    for path in videos[:broken]:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    return dst, [p.name for p in videos[:broken]]


def _cfg(root, run_dir, *extra, max_steps=8):
    from milnce.config import load_config
    from reliability_runs import DEMO, tiny_overrides

    # data.dataset=howto100m: the same layout, without the toy corpus's completeness check
    return load_config(DEMO, tiny_overrides(root, run_dir, max_steps=max_steps, every=100) + ["data.dataset=howto100m",
                                                                                      *extra])


@pytest.mark.parametrize("cache", ["true", "false"])
def test_run_over_a_mostly_broken_corpus_stops_naming_the_files(corpus, tmp_path, cache):
    from milnce.train.run import train

    root, broken = _broken_copy(corpus, tmp_path / "corpus", broken=4)
    # 2 items per step, about 2 tries per item: the budget's 50 tries are reached after about 13 of 40 steps
    cfg = _cfg(root, tmp_path / "run", f"data.cache_in_memory={cache}", "data.max_failure_fraction=0.2",
               max_steps=40)
    with pytest.raises(TooManyFailedDecodes) as info:
        train(cfg)
    message = str(info.value)
    named = [line.split()[1].rstrip(":").rsplit("/", 1)[-1] for line in message.splitlines()[1:5]]
    assert sorted(named) == sorted(broken), message
    print(f"\n[cache_in_memory={cache}] {message.splitlines()[0]}")


def test_failed_decodes_are_replaced_and_logged_below_the_budget(corpus, tmp_path):
    from milnce.train.run import train

    root, broken = _broken_copy(corpus, tmp_path / "corpus", broken=1)
    train(_cfg(root, tmp_path / "run", "data.max_failure_fraction=0.5", "data.cache_in_memory=false"))
    with open(tmp_path / "run" / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    failed = sum(float(r["data/failed_decodes"]) for r in rows if r.get("data/failed_decodes"))
    fraction = [float(r["data/failure_fraction"]) for r in rows if r.get("data/failure_fraction")]
    steps = sum(1 for r in rows if r.get("train/loss"))
    assert steps == 8 and failed >= 1 and 0 < fraction[-1] < 0.5
    print(f"\n1 of 8 videos broken: {steps} steps, {failed:.0f} failed decodes replaced and logged, "
          f"final failure fraction {fraction[-1]:.3f}")
