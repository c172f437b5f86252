"""retrieval_metrics against the check vectors of PROTOCOLS Part A §7.1 / Part B §2 and an independent tie oracle."""
import numpy as np
import pytest
import torch

from milnce.eval.retrieval import (bidirectional_metrics, metrics_from_ranks, rank_histogram, retrieval_metrics,
                              retrieval_ranks)


def ranks_by_counting(x):
    """Independent formulation of compute_metrics' ranks: per row, #strictly-greater + j for each of the tied
    columns (the ground truth itself included)."""
    out = []
    for i in range(x.shape[0]):
        greater = int(np.sum(x[i] > x[i, i]))
        equal = int(np.sum(x[i] == x[i, i]))
        out += [greater + j for j in range(equal)]
    return np.array(out)


def test_tie_check_vector_3x3():
    x = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    assert retrieval_ranks(x).tolist() == [0, 1, 0, 0]
    m = retrieval_metrics(x)
    assert m["R1"] == pytest.approx(75.0)
    assert m["ties"] == 1 and m["N"] == 3


def test_two_tied_rows_give_three_fifths():
    x = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float64)
    assert retrieval_ranks(x).tolist() == [0, 1, 0, 1, 0]
    assert retrieval_metrics(x)["R1"] == pytest.approx(60.0)
    assert retrieval_metrics(x)["ties"] == 2


def test_rank_check_vector_4x4_gives_half_median():
    x = np.array([[.9, .1, .3, .2], [.5, .4, .6, .7], [.1, .2, .3, .0], [.8, .9, .7, .1]])
    assert retrieval_ranks(x).tolist() == [0, 3, 0, 3]
    m = retrieval_metrics(x)
    assert m["R1"] == pytest.approx(50.0)
    assert m["R5"] == pytest.approx(100.0) and m["R10"] == pytest.approx(100.0)
    assert m["MedR"] == pytest.approx(2.5)
    assert m["MeanR"] == pytest.approx(2.5)
    assert m["ties"] == 0


def test_torch_and_numpy_agree_and_identity_is_perfect():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 30)).astype(np.float32)
    assert retrieval_metrics(torch.from_numpy(x)) == retrieval_metrics(x)
    perfect = retrieval_metrics(np.eye(50) + 0.01 * rng.random((50, 50)))
    assert perfect["R1"] == 100.0 and perfect["MedR"] == 1.0 and perfect["MeanR"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_matches_counting_oracle_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, size=(25, 25)).astype(np.float32)   # coarse values: lots of ties
    ranks = retrieval_ranks(x)
    assert sorted(ranks.tolist()) == sorted(ranks_by_counting(x).tolist())
    m = retrieval_metrics(x)
    assert m["ties"] == len(ranks) - 25
    assert m["R5"] == pytest.approx(100 * np.mean(ranks_by_counting(x) < 5))
    assert m["MedR"] == pytest.approx(np.median(ranks_by_counting(x)) + 1)


def test_recall_at_k_means_one_based_rank_at_most_k():
    # ground truth of row i is placed at 0-based rank i
    n = 12
    x = np.zeros((n, n))
    for i in range(n):
        others = [j for j in range(n) if j != i]
        vals = np.linspace(1.0, 0.1, n)
        x[i, i] = vals[i]
        x[i, others] = np.delete(vals, i)
    assert retrieval_ranks(x).tolist() == list(range(n))
    m = retrieval_metrics(x)
    assert m["R1"] == pytest.approx(100 / n) and m["R5"] == pytest.approx(500 / n)
    assert m["R10"] == pytest.approx(1000 / n)
    assert m["MedR"] == pytest.approx(6.5)          # median of 0..11 is 5.5, + 1


def test_both_directions():
    x = np.array([[.9, .1, .3, .2], [.5, .4, .6, .7], [.1, .2, .3, .0], [.8, .9, .7, .1]])
    both = bidirectional_metrics(x)
    assert both["t2v/R1"] == retrieval_metrics(x)["R1"]
    # video 2's column has its ground truth (.3) tied with text 0's score: two entries
    assert retrieval_ranks(x.T).tolist() == [0, 1, 2, 3, 2]
    assert both["v2t/R1"] == pytest.approx(20.0)
    assert both["v2t/MedR"] == pytest.approx(3.0)
    assert both["v2t/ties"] == 1


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(np.zeros((2, 3)))
    x = np.eye(3)
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match="row 1, column 2"):
        retrieval_metrics(x)


def test_rank_histogram_counts_every_entry():
    ranks = np.array([0, 0, 1, 4, 5, 9, 10, 99, 5000])
    h = rank_histogram(ranks)
    assert h["1"] == 2 and h["2"] == 1 and h["3-5"] == 1 and h["6-10"] == 2 and h["11-20"] == 1
    assert h["51-100"] == 1 and h[">1000"] == 1
    assert sum(h.values()) == len(ranks)
    assert metrics_from_ranks(ranks, 9)["R10"] == pytest.approx(100 * 6 / 9)
