"""Step localization: PROTOCOLS Part B §1.5, 1.6, 1.9 check vectors, dp.pyx agreement, recall and chance."""
import itertools
import logging

import numpy as np
import pytest

from datamodules.benchmarks.crosstask import read_assignment
from milnce.eval.localization import (InfeasibleAlignment, align_steps, align_steps_exact, argmax_steps, chance_recall,
                                 crosstask_recall, step_costs)

S = np.array([[0.1, 0.2, 0.8],
              [0.6, 0.1, 0.4],
              [0.5, 0.2, 0.7],
              [0.1, 0.4, 0.5],
              [0.4, 0.6, 0.7],
              [1.0, 0.3, 0.6]])


def frames(y):
    assert (y.sum(axis=0) == 1).all(), "exactly one frame per step"
    return tuple(int(t) for t in np.argmax(y, axis=0))


@pytest.mark.parametrize("align", [align_steps, align_steps_exact])
def test_dp_check_vectors(align):
    assert frames(align(-S)) == (1, 4, 5)
    assert frames(align(step_costs(S, "similarity"))) == (1, 4, 5)
    assert frames(align(step_costs(S, "log_softmax"))) == (1, 3, 4)


def test_argmax_check_vector():
    assert frames(argmax_steps(S)) == (5, 4, 0)


def test_log_softmax_cost_is_minus_log_probability_over_steps():
    c = step_costs(S, "log_softmax")
    np.testing.assert_allclose(np.exp(-c).sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown cost"):
        step_costs(S, "softmax")


def brute_force(cost):
    T, K = cost.shape
    best = min(itertools.combinations(range(T), K), key=lambda ts: sum(cost[t, k] for k, t in enumerate(ts)))
    return best


def test_clean_dp_is_optimal_and_agrees_with_dp_pyx_on_untied_inputs():
    rng = np.random.default_rng(0)
    for _ in range(300):
        T = int(rng.integers(2, 14))
        K = int(rng.integers(1, T))                     # T > K
        cost = rng.normal(size=(T, K)).astype(np.float32)
        y = align_steps(cost)
        assert (y == align_steps_exact(cost)).all()
        assert frames(y) == brute_force(cost.astype(np.float64))
        ts = frames(y)
        assert all(a < b for a, b in zip(ts, ts[1:]))


def test_tie_behaviour_differs_as_documented():
    T, K = 7, 3
    cost = np.ones((T, K))
    # dp.pyx: steps 1..K-1 on frames 0..K-2, step K on frame T-1; the clean DP keeps the earliest frames
    assert frames(align_steps_exact(cost)) == (0, 1, T - 1)
    assert frames(align_steps(cost)) == (0, 1, 2)


def test_t_equals_k_quirk_and_guard(caplog):
    rng = np.random.default_rng(1)
    cost = step_costs(rng.normal(size=(4, 4)), "log_softmax")    # C[3, 3] > 0 always
    assert cost[3, 3] > 0
    assert align_steps_exact(cost).sum() == 0                       # dp.pyx: empty prediction
    neg = -np.abs(rng.normal(size=(4, 4))) - 0.1                    # C[3, 3] < 0: dp.pyx finds the diagonal
    assert frames(align_steps_exact(neg)) == (0, 1, 2, 3)
    with caplog.at_level(logging.INFO, logger="milnce.eval.localization"):
        y = align_steps(cost)
    assert frames(y) == (0, 1, 2, 3)
    assert "T == K" in caplog.text


def test_fewer_frames_than_steps_is_infeasible():
    cost = np.zeros((2, 3))
    with pytest.raises(InfeasibleAlignment):
        align_steps(cost)
    assert align_steps_exact(cost).sum() == 0


def write_annotation(tmp_path, name, rows):
    p = tmp_path / name
    p.write_text("".join(f"{r}\n" for r in rows))
    return p


def one_hot_frames(T, K, ts):
    y = np.zeros((T, K), dtype=np.uint8)
    y[list(ts), range(K)] = 1
    return y


def recall_example(tmp_path):
    ya = read_assignment(write_annotation(tmp_path, "t_A.csv", ["1,1.2,2.7", "2,4.0,5.0"]), 6, 3)
    yb = read_assignment(write_annotation(tmp_path, "t_B.csv", ["1,0.5,1.9", "2,3.0,3.5", "3,5.2,7.0", "1,6.1,6.9"]),
                         8, 3)
    y_true = {"t": {"A": ya, "B": yb}}
    y_pred = {"t": {"A": one_hot_frames(6, 3, (1, 4, 5)), "B": one_hot_frames(8, 3, (2, 3, 7))}}
    return y_true, y_pred


def test_recall_check_vector(tmp_path):
    y_true, y_pred = recall_example(tmp_path)
    assert y_true["t"]["A"][:, 0].nonzero()[0].tolist() == [1, 2]
    assert y_true["t"]["A"][:, 1].nonzero()[0].tolist() == [4]
    r = crosstask_recall(y_true, y_pred)
    assert r["recall"] == pytest.approx(60.0)
    assert r["recall_per_video"] == pytest.approx(100 * 2 / 3)
    assert r["per_task"]["t"]["hits"] == 3 and r["per_task"]["t"]["annotated_steps"] == 5


def test_recall_is_mean_over_tasks_and_ignores_unpredicted_videos(tmp_path):
    y_true, y_pred = recall_example(tmp_path)
    y_true["u"] = {"C": one_hot_frames(5, 2, (0, 3))}
    y_pred["u"] = {"C": one_hot_frames(5, 2, (0, 3)), "extra": one_hot_frames(5, 2, (1, 2))}
    y_true["v"] = {"D": one_hot_frames(5, 2, (0, 3))}             # no prediction at all
    r = crosstask_recall(y_true, y_pred)
    assert r["recall"] == pytest.approx((60.0 + 100.0) / 2)
    assert r["tasks_without_videos"] == ["v"]
    with pytest.raises(ValueError, match="task t video A"):
        crosstask_recall(y_true, {"t": {"A": np.zeros((5, 3))}})


def random_dp_prediction(T, K, rng):
    return one_hot_frames(T, K, sorted(rng.choice(T, K, replace=False)))


def test_chance_recall_matches_seeded_random_baseline(tmp_path):
    y_true, _ = recall_example(tmp_path)
    y_true["u"] = {"C": read_assignment(write_annotation(tmp_path, "u_C.csv", ["1,0,3", "2,2.5,9", "3,10,11"]), 12, 3)}
    analytic = chance_recall(y_true, "dp")
    rng = np.random.default_rng(0)
    draws = [crosstask_recall(y_true, {t: {v: random_dp_prediction(*y.shape, rng) for v, y in vs.items()}
                                       for t, vs in y_true.items()}) for _ in range(4000)]
    assert analytic["recall"] == pytest.approx(np.mean([d["recall"] for d in draws]), abs=1.0)
    assert analytic["recall_per_video"] == pytest.approx(np.mean([d["recall_per_video"] for d in draws]), abs=1.0)


def test_chance_recall_argmax_and_degenerate_cases():
    y = np.zeros((10, 2), dtype=np.uint8)
    y[0:3, 0] = 1
    y[5:6, 1] = 1
    assert chance_recall({"t": {"v": y}}, "argmax")["recall"] == pytest.approx(100 * (3 / 10 + 1 / 10) / 2)
    eye = np.eye(3, dtype=np.uint8)                               # T == K: the diagonal is forced
    assert chance_recall({"t": {"v": eye}}, "dp")["recall"] == pytest.approx(100.0)
    assert chance_recall({"t": {"v": np.ones((2, 3), np.uint8)}}, "dp")["recall"] == 0.0
