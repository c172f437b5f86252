import math
from types import SimpleNamespace

import pytest
import torch

from milnce.config import LossConfig
from milnce.losses import (LearnableTemperature, MaxMarginLoss, MILNCELoss, NCELoss, build_loss, check_finite,
                           max_margin, mil_nce, nce, negatives_per_positive, same_video_weights)

E = math.e


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- MIL-NCE by hand
# v0=(1,0), v1=(0,1); K=1 texts t0=(2,0), t1=(1,1): x = [[2, 1], [0, 1]] with x[i][j] = <v_i, t_j>.
V2 = _t([[1, 0], [0, 1]])
T2_K1 = _t([[2, 0], [1, 1]])
# K=2 texts of video 0: (1,0), (0,2); of video 1: (1,1), (0,-1).
# x[i,j,k]: x[0,0]=(1,0) x[0,1]=(1,0) x[1,0]=(0,2) x[1,1]=(1,-1)
T2_K2 = _t([[1, 0], [0, 2], [1, 1], [0, -1]])


def test_mil_nce_k1_by_hand():
    # video 0: P = e^2, negatives e^x01 + e^x10 = e + 1; video 1: P = e, negatives e^x10 + e^x01 = 1 + e
    l0 = -math.log(E ** 2 / (2 * E ** 2 + E + 1))
    l1 = -math.log(E / (2 * E + 1 + E))
    assert mil_nce(V2, T2_K1, 1).item() == pytest.approx((l0 + l1) / 2, abs=1e-10)
    p0 = -math.log(E ** 2 / (E ** 2 + E + 1))
    p1 = -math.log(E / (E + 1 + E))
    assert mil_nce(V2, T2_K1, 1, formulation="paper").item() == pytest.approx((p0 + p1) / 2, abs=1e-10)


def test_mil_nce_k2_by_hand():
    # video 0: P = e^1 + e^0; row x[0,:,:] = {1,0,1,0}; column x[:,0,:] = {1,0,0,2}
    p_0 = E + 1
    row_0 = E + 1 + E + 1
    col_0 = E + 1 + 1 + E ** 2
    # video 1: P = e^1 + e^-1; row x[1,:,:] = {0,2,1,-1}; column x[:,1,:] = {1,0,1,-1}
    p_1 = E + 1 / E
    row_1 = 1 + E ** 2 + E + 1 / E
    col_1 = E + 1 + E + 1 / E
    original = (-math.log(p_0 / (row_0 + col_0)) - math.log(p_1 / (row_1 + col_1))) / 2
    paper = (-math.log(p_0 / (row_0 + col_0 - p_0)) - math.log(p_1 / (row_1 + col_1 - p_1))) / 2
    assert mil_nce(V2, T2_K2, 2).item() == pytest.approx(original, abs=1e-10)
    assert mil_nce(V2, T2_K2, 2, formulation="paper").item() == pytest.approx(paper, abs=1e-10)


def test_mil_nce_floor_is_log2():
    g = torch.Generator().manual_seed(0)
    loss = mil_nce(torch.randn(1, 8, generator=g), torch.randn(3, 8, generator=g), 3)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert abs(loss.item() - 0.6934) < 5e-4  # the value PROTOCOLS §4.1 reports for B=1, K=3
    # well-separated pairs approach log 2 (original) and 0 (paper) from above
    v = 5 * torch.eye(4, dtype=torch.float64)
    t = v.repeat_interleave(2, dim=0)
    orig, paper = mil_nce(v, t, 2).item(), mil_nce(v, t, 2, formulation="paper").item()
    assert math.log(2) < orig < math.log(2) + 1e-6
    assert 0 < paper < 1e-6


def test_mil_nce_shape_errors():
    with pytest.raises(ValueError, match="video-major"):
        mil_nce(torch.zeros(2, 4), torch.zeros(5, 4), 2)
    with pytest.raises(ValueError, match="embedding sizes"):
        mil_nce(torch.zeros(2, 4), torch.zeros(4, 3), 2)
    with pytest.raises(ValueError, match="formulation"):
        mil_nce(torch.zeros(2, 4), torch.zeros(4, 4), 2, formulation="clip")
    with pytest.raises(ValueError, match="valid"):
        mil_nce(torch.zeros(2, 4), torch.zeros(4, 4), 2, valid=torch.ones(3, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- NCE
def test_nce_is_the_k1_case_and_symmetric_is_clip():
    assert nce(V2, T2_K1).item() == pytest.approx(mil_nce(V2, T2_K1, 1).item(), abs=1e-12)
    # x = [[2, 1], [0, 1]]: video→text rows (2,1), (0,1); text→video rows = columns (2,0), (1,1)
    v2t = (-math.log(E ** 2 / (E ** 2 + E)) - math.log(E / (1 + E))) / 2
    t2v = (-math.log(E ** 2 / (E ** 2 + 1)) - math.log(E / (E + E))) / 2
    assert nce(V2, T2_K1, symmetric=True).item() == pytest.approx((v2t + t2v) / 2, abs=1e-10)


# ---------------------------------------------------------------------------------------------- temperature, norm
def test_temperature_and_normalize():
    g = torch.Generator().manual_seed(1)
    v, t = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(12, 5, generator=g, dtype=torch.float64)
    assert mil_nce(v, t, 2, temperature=0.1).item() == pytest.approx(mil_nce(v / 0.1, t, 2).item(), rel=1e-12)
    vn, tn = v / v.norm(dim=1, keepdim=True), t / t.norm(dim=1, keepdim=True)
    assert mil_nce(v, t, 2, normalize=True).item() == pytest.approx(mil_nce(vn, tn, 2).item(), rel=1e-12)
    assert nce(v, t[:6], symmetric=True, temperature=0.5, normalize=True).item() == pytest.approx(
        nce(vn / 0.5, tn[:6], symmetric=True).item(), rel=1e-12)
    # normalised inputs are scale-invariant
    assert mil_nce(3 * v, t, 2, normalize=True).item() == pytest.approx(mil_nce(v, t, 2, normalize=True).item())


def test_learnable_temperature_gets_gradient():
    loss_fn = MILNCELoss(2, learnable_temperature=True, normalize=True)
    assert loss_fn.temperature().item() == pytest.approx(0.07)
    v, t = torch.randn(4, 8), torch.randn(8, 8)
    loss = loss_fn(v, t)
    loss.backward()
    assert loss_fn.learnable.log_temperature.grad is not None
    assert loss_fn.learnable.log_temperature.grad.abs().item() > 0
    assert loss.item() == pytest.approx(mil_nce(v, t, 2, temperature=0.07, normalize=True).item(), rel=1e-5)
    assert LearnableTemperature(0.001)().item() == pytest.approx(LearnableTemperature.MIN)


# ---------------------------------------------------------------------------------------------- max-margin
def _hinge_by_loops(video, text, margin):
    """Per-entry cost relu(m + x_ij - x_ii) + relu(m + x_ij - x_jj) with x = text @ video.T, written out."""
    n = video.shape[0]
    x = [[float(text[i] @ video[j]) for j in range(n)] for i in range(n)]
    return [[max(0.0, margin + x[i][j] - x[i][i]) + max(0.0, margin + x[i][j] - x[j][j]) for j in range(n)]
            for i in range(n)]


def _original_layout_loss(video, text, margin, mask):
    cost = _hinge_by_loops(video, text, margin)
    n = len(cost)
    return sum(mask[i][j] * cost[i][j] for i in range(n) for j in range(n)) / n ** 2


def test_max_margin_equals_original_mask_b3_n2():
    # HowTo100M mask for B=3 videos x n_pair=2, hard_negative_rate 0.5: alpha = 1/(B-1) = 0.5, scale B*0.5 = 1.5,
    # same-video blocks (1-alpha+alpha)*1.5 = 1.5, other-video blocks alpha*1.5 = 0.75.
    s, o = 1.5, 0.75
    mask = [[s, s, o, o, o, o], [s, s, o, o, o, o],
            [o, o, s, s, o, o], [o, o, s, s, o, o],
            [o, o, o, o, s, s], [o, o, o, o, s, s]]
    g = torch.Generator().manual_seed(2)
    v, t = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    v, t = v / v.norm(dim=1, keepdim=True), t / t.norm(dim=1, keepdim=True)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    expected = _original_layout_loss(v, t, 0.1, mask)
    assert max_margin(v, t, 0.1, ids).item() == pytest.approx(expected, abs=1e-12)
    assert same_video_weights(ids).tolist() == mask


def test_max_margin_equals_original_mask_b4_n3_any_layout():
    # B=4, n=3: alpha = 1/3, scale 2: same-video weight 2, other-video weight 2/3.
    ids = torch.arange(4).repeat_interleave(3)
    mask = [[2.0 if ids[i] == ids[j] else 2.0 / 3.0 for j in range(12)] for i in range(12)]
    g = torch.Generator().manual_seed(3)
    v, t = torch.randn(12, 5, generator=g, dtype=torch.float64), torch.randn(12, 5, generator=g, dtype=torch.float64)
    expected = _original_layout_loss(v, t, 0.2, mask)
    assert max_margin(v, t, 0.2, ids).item() == pytest.approx(expected, abs=1e-12)
    # the weights follow the ids, not the positions: shuffling the rows changes nothing
    perm = torch.randperm(12, generator=g)
    assert max_margin(v[perm], t[perm], 0.2, ids[perm]).item() == pytest.approx(expected, abs=1e-12)
    # string ids work too
    names = [f"vid{int(i)}" for i in ids[perm]]
    assert max_margin(v[perm], t[perm], 0.2, names).item() == pytest.approx(expected, abs=1e-12)


def test_max_margin_plain_cases():
    g = torch.Generator().manual_seed(4)
    v, t = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    ones = [[1.0] * 5 for _ in range(5)]
    plain = _original_layout_loss(v, t, 0.1, ones)
    assert max_margin(v, t).item() == pytest.approx(plain, abs=1e-12)
    assert max_margin(v, t, video_ids=torch.arange(5)).item() == pytest.approx(plain, abs=1e-12)
    same = torch.tensor([0, 0, 1, 1, 2])
    assert max_margin(v, t, video_ids=same, negative_weighting=False).item() == pytest.approx(plain, abs=1e-12)
    assert max_margin(v, t, video_ids=same).item() != pytest.approx(plain, abs=1e-6)
    # a row whose video is alone keeps weight 1; every row's weights sum to N
    w = same_video_weights(same)
    assert w[4].tolist() == [1.0] * 5
    assert w.sum(1).tolist() == pytest.approx([5.0] * 5)


# ---------------------------------------------------------------------------------------------- validity mask
@pytest.mark.parametrize("name", ["mil_nce", "mil_nce_paper", "nce", "nce_symmetric", "max_margin"])
def test_valid_mask_equals_running_on_subset(name):
    g = torch.Generator().manual_seed(5)
    b, k = 6, (3 if name.startswith("mil_nce") else 1)
    v = torch.randn(b, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(b * k, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    valid = torch.tensor([True, False, True, True, False, True])
    keep = valid.nonzero().squeeze(1)
    text_keep = (keep[:, None] * k + torch.arange(k)).reshape(-1)

    def run(v_, t_, ids_, valid_):
        if name.startswith("mil_nce"):
            return mil_nce(v_, t_, k, formulation="paper" if name.endswith("paper") else "original", valid=valid_)
        if name.startswith("nce"):
            return nce(v_, t_, symmetric=name.endswith("symmetric"), valid=valid_)
        return max_margin(v_, t_, 0.1, ids_, valid=valid_)

    with torch.no_grad():  # a failed sample may hold garbage: it must not matter
        v[1] = float("nan")
        t[k * 4:k * 5] = 1e30
    masked = run(v, t, ids, valid)
    subset = run(v[keep], t[text_keep], ids[keep], None)
    assert masked.item() == pytest.approx(subset.item(), abs=1e-12)
    masked.backward()
    assert torch.isfinite(v.grad).all() and torch.isfinite(t.grad).all()
    assert v.grad[1].abs().sum() == 0 and t.grad[k * 4:k * 5].abs().sum() == 0


def test_all_invalid_is_connected_zero():
    v, t = torch.randn(3, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    loss = mil_nce(v, t, 2, valid=torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert v.grad.abs().sum() == 0


# ---------------------------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("name", ["mil_nce", "mil_nce_paper", "nce_symmetric", "max_margin"])
def test_large_logits_are_finite(name):
    g = torch.Generator().manual_seed(6)
    v = (1e3 * torch.randn(4, 16, generator=g)).requires_grad_()
    t = (1e3 * torch.randn(8 if name.startswith("mil") else 4, 16, generator=g)).requires_grad_()
    if name.startswith("mil_nce"):
        loss = mil_nce(v, t, 2, formulation="paper" if name.endswith("paper") else "original")
    elif name == "nce_symmetric":
        loss = nce(v, t, symmetric=True, temperature=0.01)
    else:
        loss = max_margin(v, t, video_ids=torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(v.grad).all() and torch.isfinite(t.grad).all()


def test_paper_formulation_single_video_gradient_is_finite():
    v, t = torch.randn(1, 4, requires_grad=True), torch.randn(2, 4, requires_grad=True)
    loss = mil_nce(v, t, 2, formulation="paper")
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(v.grad).all() and torch.isfinite(t.grad).all()


def test_check_finite_names_step_and_batch():
    check_finite(torch.tensor(1.0), 3, 4)
    with pytest.raises(FloatingPointError, match=r"step 12, batch 7"):
        check_finite(torch.tensor(float("nan")), 12, 7)
    with pytest.raises(FloatingPointError, match=r"step 1, batch 0"):
        check_finite(torch.tensor(float("inf")), 1, 0)


def test_negatives_per_positive():
    assert negatives_per_positive("mil_nce", 8192, 4)["negatives"] == 2 * 8191 * 4
    assert negatives_per_positive("nce", 10)["negatives"] == 18
    assert negatives_per_positive("nce", 10, symmetric=True)["negatives"] == 9
    counts = negatives_per_positive("max_margin", 6, video_ids=torch.tensor([0, 0, 1, 1, 2, 2]))
    assert counts["negatives"] == 10 and counts["same_video_negatives"] == 2


# ---------------------------------------------------------------------------------------------- modules / config
def test_build_loss_from_config():
    v, t = torch.randn(3, 4), torch.randn(6, 4)
    cfg = LossConfig()
    loss = build_loss("mil_nce", cfg, 2)
    assert isinstance(loss, MILNCELoss) and not list(loss.parameters())
    assert loss(v, t).item() == pytest.approx(mil_nce(v, t, 2).item())
    cfg = LossConfig(formulation="paper", temperature=0.1, normalize=True)
    assert build_loss("mil_nce", cfg, 2)(v, t).item() == pytest.approx(
        mil_nce(v, t, 2, formulation="paper", temperature=0.1, normalize=True).item())
    sym = build_loss("nce", LossConfig(symmetric=True, learnable_temperature=True), 1)
    assert isinstance(sym, NCELoss) and len(list(sym.parameters())) == 1
    mm = build_loss("max_margin", SimpleNamespace(margin=0.2, negative_weighting=False, normalize=True), 1)
    assert isinstance(mm, MaxMarginLoss) and mm.margin == 0.2 and mm.normalize
    assert mm(v, t[:3], video_ids=torch.tensor([0, 0, 1])).item() == pytest.approx(
        max_margin(v, t[:3], 0.2, negative_weighting=False, normalize=True).item())


def test_build_loss_errors_name_the_key():
    with pytest.raises(ValueError, match="model.loss: unknown loss 'triplet'"):
        build_loss("triplet", LossConfig(), 1)
    with pytest.raises(ValueError, match="data.num_candidates=1"):
        build_loss("nce", LossConfig(), 4)
    with pytest.raises(ValueError, match="max_margin"):
        build_loss("max_margin", LossConfig(temperature=0.1), 1)
    with pytest.raises(ValueError, match="formulation"):
        build_loss("mil_nce", LossConfig(formulation="clip"), 1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        build_loss("mil_nce", LossConfig(temperature=0.0), 1)
