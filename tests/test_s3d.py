"""S3D-G: released key/shape layout, parameter counts, output shapes, space-to-depth, TF-SAME pools, determinism."""
import numpy as np
import pytest
import torch
from torch import nn

from milnce.towers.s3d import S3D, InceptionBlock, MaxPool3dTFSame, SelfGating, space_to_depth
from conftest import REFERENCE


def reference_video_entries():
    entries = []
    for line in (REFERENCE / "s3d_howto100m_state_dict.txt").read_text().splitlines():
        key, shape = line.split()
        if not key.startswith("text_module."):
            entries.append((key, [int(d) for d in shape.strip("[]").split(",") if d]))
    return entries


def test_state_dict_keys_order_and_shapes_equal_the_release():
    reference = reference_video_entries()
    ours = [(k, list(v.shape)) for k, v in S3D().state_dict().items()]
    assert len(reference) == 532
    assert ours == reference


def test_parameter_counts():
    model = S3D()
    total = sum(p.numel() for p in model.parameters())
    assert total == 9_670_800
    assert total - sum(p.numel() for p in model.fc.parameters()) == 9_146_000
    no_s2d = S3D(space_to_depth=False)
    assert tuple(no_s2d.conv1.conv1.weight.shape) == (64, 3, 3, 7, 7)
    assert sum(p.numel() for p in no_s2d.parameters()) == 9_649_872


def test_layer_details():
    model = S3D()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    gates = [m for m in model.modules() if isinstance(m, SelfGating)]
    assert len(bns) == 76 and all(bn.eps == 1e-5 and bn.momentum == 0.1 and bn.affine for bn in bns)
    assert len(convs) == 76 and all(conv.bias is None for conv in convs)
    assert len(gates) == 37
    block = model.mixed_4c
    assert isinstance(block.maxpool_b3, nn.MaxPool3d)
    assert (block.maxpool_b3.kernel_size, block.maxpool_b3.stride, block.maxpool_b3.padding) == (3, 1, 1)
    # the separable conv: (1,3,3) spatial then (3,1,1) temporal
    assert tuple(block.conv_b1_b.conv1.weight.shape[2:]) == (1, 3, 3)
    assert tuple(block.conv_b1_b.conv2.weight.shape[2:]) == (3, 1, 1)
    # as in the original, gating=False changes nothing
    assert [k for k in S3D(gating=False).state_dict()] == [k for k in model.state_dict()]


@pytest.fixture(scope="module")
def narrow_models():
    """Width 0.125 (channels ≥ 8): the feature grid depends only on T, H, W, so it is checked cheaply here;
    the full-width forward below checks the channel counts."""
    torch.manual_seed(0)
    return {s2d: S3D(width_mult=0.125, space_to_depth=s2d).eval() for s2d in (True, False)}


@pytest.mark.parametrize("space_to_depth_on, frames, size, grid", [
    (True, 32, 224, (4, 7, 7)), (True, 16, 224, (2, 7, 7)), (True, 32, 200, (4, 7, 7)),
    (True, 32, 256, (4, 8, 8)), (True, 16, 200, (2, 7, 7)), (True, 16, 256, (2, 8, 8)),
    (False, 16, 200, (2, 7, 7)), (False, 16, 256, (2, 8, 8)),
])
def test_output_shapes(narrow_models, space_to_depth_on, frames, size, grid):
    model = narrow_models[space_to_depth_on]
    with torch.no_grad():
        features = model.features(torch.rand(1, 3, frames, size, size))
        out = model(torch.rand(2, 3, 4, 32, 32))
    assert tuple(features.shape) == (1, model.out_channels) + grid
    assert tuple(out["video_embedding"].shape) == (2, 512)
    assert tuple(out["mixed_5c"].shape) == (2, model.out_channels)


def test_full_width_forward_is_real_and_deterministic_in_eval_mode():
    torch.manual_seed(0)
    model = S3D().eval()
    video = torch.rand(2, 3, 4, 32, 32)
    with torch.no_grad():
        first = model(video)
        second = model(video)
        alone = model(video[1:])
    assert first["video_embedding"].shape == (2, 512) and first["mixed_5c"].shape == (2, 1024)
    assert torch.isfinite(first["video_embedding"]).all()
    assert torch.equal(first["video_embedding"], second["video_embedding"])
    # eval-mode BN: a sample's embedding does not depend on the rest of the batch
    torch.testing.assert_close(alone["video_embedding"][0], first["video_embedding"][1], rtol=1e-4, atol=1e-5)
    # mixed_5c is the global mean and video_embedding = fc(mixed_5c), neither normalised
    torch.testing.assert_close(first["video_embedding"], model.fc(first["mixed_5c"]))
    assert not torch.allclose(first["video_embedding"].norm(dim=1), torch.ones(2))


def test_channels_last_fast_path_matches_a_contiguous_forward():
    torch.manual_seed(1)
    model = S3D(width_mult=0.125, init="kaiming_normal").eval()
    video = torch.rand(2, 3, 8, 48, 48)
    with torch.no_grad():
        fast = model.features(video)
        x = model.conv1(space_to_depth(video).contiguous())[:, :, 1:, 1:, 1:]
        for name in ("maxpool_2a", "conv_2b", "conv_2c", "gating", "maxpool_3a", "mixed_3b", "mixed_3c",
                     "maxpool_4a", "mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f", "maxpool_5a",
                     "mixed_5b", "mixed_5c"):
            x = getattr(model, name)(x)
    torch.testing.assert_close(fast, x, rtol=1e-4, atol=1e-5)


def test_train_mode_updates_batchnorm_statistics():
    model = S3D(width_mult=0.125).train()
    before = model.conv_2b.bn1.running_mean.clone()
    model(torch.rand(2, 3, 4, 32, 32))["video_embedding"].sum().backward()
    assert not torch.equal(before, model.conv_2b.bn1.running_mean)
    assert int(model.conv_2b.bn1.num_batches_tracked) == 1
    assert model.conv1.conv1.weight.grad is not None


def test_space_to_depth_channel_order():
    torch.manual_seed(0)
    b, c, t, h, w = 2, 3, 4, 6, 8
    video = torch.rand(b, c, t, h, w)
    out = space_to_depth(video)
    assert out.shape == (b, 8 * c, t // 2, h // 2, w // 2)
    for dt in range(2):
        for dh in range(2):
            for dw in range(2):
                for ch in range(c):
                    channel = ((dt * 2 + dh) * 2 + dw) * c + ch
                    assert torch.equal(out[:, channel], video[:, ch, dt::2, dh::2, dw::2])


def test_space_to_depth_needs_even_sizes_and_float_input():
    model = S3D(width_mult=0.125)
    with pytest.raises(ValueError, match="even T, H and W"):
        model(torch.rand(1, 3, 5, 32, 32))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(1, 3, 4, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="B×3×T×H×W"):
        model(torch.rand(3, 4, 32, 32))


@pytest.mark.parametrize("kernel, stride, pad", [
    ((1, 3, 3), (1, 2, 2), (0, 1, 0, 1, 0, 0)),
    ((3, 3, 3), (2, 2, 2), (0, 1, 0, 1, 0, 1)),
    ((2, 2, 2), (2, 2, 2), (0, 0, 0, 0, 0, 0)),
])
def test_tf_same_pool_pads(kernel, stride, pad):
    assert MaxPool3dTFSame(kernel, stride).pad == pad


@pytest.mark.parametrize("size", [4, 5, 7, 8])
def test_tf_same_pool_values(size):
    """Zero pad of k-s on the far side, then windows that may run off the end (ceil_mode)."""
    torch.manual_seed(size)
    x = torch.rand(1, 2, 1, size, size)
    out = MaxPool3dTFSame((1, 3, 3), (1, 2, 2))(x)
    padded = np.zeros((size + 1, size + 1), dtype=np.float32)
    n_out = -(-(size + 1 - 3) // 2) + 1
    assert out.shape[-2:] == (n_out, n_out)
    for ch in range(2):
        padded[:size, :size] = x[0, ch, 0].numpy()
        for i in range(n_out):
            for j in range(n_out):
                window = padded[2 * i: 2 * i + 3, 2 * j: 2 * j + 3]
                assert out[0, ch, 0, i, j].item() == pytest.approx(window.max())
    # temporal: the (3,3,3)/2 pool pads one frame at the back, so 4 frames → 2 and 5 frames → 3
    assert MaxPool3dTFSame(3, 2)(torch.rand(1, 1, 4, 8, 8)).shape[2:] == (2, 4, 4)
    assert MaxPool3dTFSame(3, 2)(torch.rand(1, 1, 5, 8, 8)).shape[2] == 3


def test_inception_block_concatenates_gated_branches():
    block = InceptionBlock(16, 8, 8, 12, 8, 10, 9)
    assert block.out_channels == 8 + 12 + 10 + 9
    assert block(torch.rand(2, 16, 3, 5, 5)).shape == (2, 39, 3, 5, 5)


def test_width_mult_scales_channels_with_the_same_module_tree():
    full = S3D()
    narrow = S3D(width_mult=0.25)
    assert list(narrow.state_dict()) == list(full.state_dict())
    assert narrow.conv1.conv1.weight.shape[0] == 16 and narrow.out_channels == 256
    assert narrow(torch.rand(2, 3, 4, 32, 32))["video_embedding"].shape == (2, 512)
    tiny = S3D(width_mult=0.125, num_classes=64)
    assert min(m.out_channels for m in tiny.modules() if isinstance(m, nn.Conv3d)) >= 8
    assert tiny.fc.out_features == 64
    with pytest.raises(ValueError, match="width_mult"):
        S3D(width_mult=0.0)
    with pytest.raises(ValueError, match="init"):
        S3D(init="xavier")


def test_kaiming_init():
    torch.manual_seed(0)
    model = S3D(width_mult=0.5, init="kaiming_normal")
    weight = model.mixed_5c.conv_b1_b.conv1.weight
    fan_in = weight.shape[1] * 9
    assert weight.std().item() == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.05)
    bn = model.mixed_5c.conv_b1_b.bn2
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    default_bn = S3D(width_mult=0.125).conv_2b.bn1
    assert torch.equal(default_bn.weight, torch.ones_like(default_bn.weight))  # PyTorch default init
