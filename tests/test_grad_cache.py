import contextlib
import copy

import pytest
import torch
from torch import nn

from milnce.grad_cache import grad_cache_step
from milnce.losses import MaxMarginLoss, MILNCELoss, NCELoss

K = 2


class Towers(nn.Module):
    """Two small towers; the text tower takes (features, mask) like a token tower takes (ids, attention_mask)."""

    def __init__(self, loss: nn.Module, batch_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.video = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16) if batch_norm else nn.Identity(), nn.ReLU(),
                                   nn.Dropout(dropout), nn.Linear(16, 8))
        self.text = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 8))
        self.loss = loss

    def embed_video(self, video):
        return self.video(video)

    def embed_text(self, features, mask=None):
        out = self.text(features)
        return out if mask is None else out * mask[:, :1]


def _batch(b=10, k=K, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 6, generator=g), torch.randn(b * k, 5, generator=g)


def _direct(model, video, text, chunk=None, k=K):
    """Forward with grad (whole batch, or chunk by chunk in the grad cache's order), loss, backward."""
    model.zero_grad()
    chunk = chunk or video.shape[0]
    vs, ts = [], []
    for s in range(0, video.shape[0], chunk):
        vs.append(model.embed_video(video[s:s + chunk]))
        ts.append(model.embed_text(text[s * k:(s + chunk) * k], None))
    loss = model.loss(torch.cat(vs), torch.cat(ts))
    loss.backward()
    return loss.detach()


def _cached(model, video, text, chunk, k=K, **kwargs):
    model.zero_grad()
    return grad_cache_step(model.embed_video, model.embed_text, video, (text, None), model.loss, chunk, k, **kwargs)


def _assert_same_grads(a, b, tol=1e-5):
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if pa.grad is None:
            assert pb.grad is None, name
            continue
        torch.testing.assert_close(pb.grad, pa.grad, atol=tol, rtol=tol, msg=name)


@pytest.mark.parametrize("chunk", [1, 3, 4, 10, 64])
def test_grads_equal_direct_full_batch(chunk):
    torch.manual_seed(0)
    direct = Towers(MILNCELoss(K, learnable_temperature=True, normalize=True))
    cached = copy.deepcopy(direct)
    video, text = _batch()
    loss_direct = _direct(direct, video, text)
    loss_cached = _cached(cached, video, text, chunk)
    assert loss_cached.item() == pytest.approx(loss_direct.item(), rel=1e-6)
    assert not loss_cached.requires_grad
    _assert_same_grads(direct, cached)
    assert cached.loss.learnable.log_temperature.grad.abs().item() > 0


@pytest.mark.parametrize("loss", [NCELoss(symmetric=True, temperature=0.1), MaxMarginLoss(normalize=True)])
def test_other_losses_k1(loss):
    torch.manual_seed(1)
    direct = Towers(loss)
    cached = copy.deepcopy(direct)
    video, text = _batch(8, 1)
    _direct(direct, video, text, k=1)
    _cached(cached, video, text, 3, k=1)
    _assert_same_grads(direct, cached)


def test_dropout_masks_are_replayed():
    torch.manual_seed(2)
    direct = Towers(MILNCELoss(K), dropout=0.5)
    cached = copy.deepcopy(direct)
    video, text = _batch()
    torch.manual_seed(123)
    _direct(direct, video, text, chunk=4)
    after_direct = torch.rand(3)
    torch.manual_seed(123)
    _cached(cached, video, text, 4)
    after_cached = torch.rand(3)
    _assert_same_grads(direct, cached)
    # the global RNG stream continues as if each chunk had been run once
    assert torch.equal(after_direct, after_cached)


def test_batch_norm_sees_chunk_statistics_and_updates_running_stats_once():
    torch.manual_seed(3)
    direct = Towers(MILNCELoss(K), batch_norm=True)
    cached = copy.deepcopy(direct)
    full = copy.deepcopy(direct)
    video, text = _batch(12)
    _direct(direct, video, text, chunk=4)
    _cached(cached, video, text, 4)
    _assert_same_grads(direct, cached)
    bn_direct, bn_cached = direct.video[1], cached.video[1]
    assert bn_cached.num_batches_tracked.item() == 3  # three chunks, once each
    torch.testing.assert_close(bn_cached.running_mean, bn_direct.running_mean)
    torch.testing.assert_close(bn_cached.running_var, bn_direct.running_var)
    # and with BN this is *not* the whole-batch gradient: BN normalised per chunk
    _direct(full, video, text)
    diff = max((a.grad - b.grad).abs().max().item()
               for a, b in zip(full.video.parameters(), cached.video.parameters()))
    assert diff > 1e-4


def test_backward_and_no_sync_hooks():
    torch.manual_seed(4)
    model = Towers(MILNCELoss(K, learnable_temperature=True))
    video, text = _batch()
    calls = {"backward": 0, "no_sync": 0}

    def backward(t):
        calls["backward"] += 1
        t.backward()

    @contextlib.contextmanager
    def no_sync():
        calls["no_sync"] += 1
        yield

    _cached(model, video, text, 4, backward=backward, no_sync=no_sync)
    assert calls == {"backward": 3, "no_sync": 2}  # chunks 4+4+2; the last one synchronises


def test_input_errors():
    model = Towers(MILNCELoss(K))
    video, text = _batch()
    with pytest.raises(ValueError, match="text rows"):
        grad_cache_step(model.embed_video, model.embed_text, video, text[:-1], model.loss, 4, K)
    with pytest.raises(ValueError, match="modules="):
        grad_cache_step(lambda v: model.embed_video(v), lambda t: model.embed_text(t), video, text, model.loss, 4)
    with pytest.raises(ValueError, match="chunk_size"):
        grad_cache_step(model.embed_video, model.embed_text, video, text, model.loss, 0)
    # lambdas work when told where the BatchNorms are (none here)
    loss = grad_cache_step(lambda v: model.embed_video(v), lambda t: model.embed_text(t), video, text, model.loss, 4,
                           modules=[])
    assert torch.isfinite(loss)
