import pytest
import torch

from datamodules.video.transforms import center_crop, random_crop_flip, resize_short_side, short_side_shape


def ramp_clip(t=4, h=40, w=60):
    """Pixel (t, y, x) = (x + 2y + 5t, y, t) mod 256 in its three channels: every crop position is identifiable."""
    ts, ys, xs = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([(xs + 2 * ys + 5 * ts) % 256, ys, ts], dim=-1).to(torch.uint8)


def test_random_crop_is_an_unresized_patch():
    clip = ramp_clip()
    gen = torch.Generator().manual_seed(0)
    seen_positions, flips = set(), 0
    for _ in range(40):
        out = random_crop_flip(clip, 32, generator=gen)
        assert out.shape == (3, 4, 32, 32) and out.dtype == torch.uint8 and out.is_contiguous()
        flipped = bool(out[0, 0, 0, 0] > out[0, 0, 0, 1])  # the red ramp increases with x unless flipped
        patch = out.flip(-1) if flipped else out
        flips += flipped
        y, x = int(patch[1, 0, 0, 0]), int(patch[0, 0, 0, 0]) - 2 * int(patch[1, 0, 0, 0])
        assert torch.equal(patch, clip[:, y:y + 32, x:x + 32].permute(3, 0, 1, 2))
        seen_positions.add((y, x))
    assert len(seen_positions) > 20
    assert 8 <= flips <= 32


def test_random_crop_reproducible_and_no_flip():
    clip = ramp_clip()
    a = random_crop_flip(clip, 32, generator=torch.Generator().manual_seed(3))
    b = random_crop_flip(clip, 32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        out = random_crop_flip(clip, 32, generator=gen, flip=False)
        assert bool(out[0, 0, 0, 0] < out[0, 0, 0, 1])


def test_random_crop_resizes_up_a_short_side_below_size():
    clip = ramp_clip(h=20, w=30)
    out = random_crop_flip(clip, 24, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 4, 24, 24)


def test_center_crop_takes_the_middle_square_then_resizes():
    clip = ramp_clip(h=40, w=60)
    same = center_crop(clip, 40)
    assert same.shape == (3, 4, 40, 40)
    assert torch.equal(same, clip[:, :, 10:50].permute(3, 0, 1, 2))
    small = center_crop(clip, 20)
    assert small.shape == (3, 4, 20, 20)
    expected = torch.nn.functional.avg_pool2d(clip[:, :, 10:50].permute(0, 3, 1, 2).float(), 2)
    assert (small.permute(1, 0, 2, 3).float() - expected).abs().max() <= 1.0  # antialiased 2x down = 2×2 mean
    tall = center_crop(ramp_clip(h=60, w=40), 40)
    assert torch.equal(tall, ramp_clip(h=60, w=40)[:, 10:50].permute(3, 0, 1, 2))


def test_resize_short_side():
    clip = ramp_clip(h=40, w=60)
    assert resize_short_side(clip, 20).shape == (4, 20, 30, 3)
    assert resize_short_side(clip, None) is clip and resize_short_side(clip, 40) is clip
    assert short_side_shape(97, 129, 32) == (32, 43) and short_side_shape(129, 97, 32) == (43, 32)
    flat = torch.full((2, 40, 60, 3), 77, dtype=torch.uint8)
    assert torch.equal(resize_short_side(flat, 13), torch.full((2, 13, 20, 3), 77, dtype=torch.uint8))


@pytest.mark.parametrize("bad", [torch.zeros(4, 8, 8, 3), torch.zeros(4, 8, 8, dtype=torch.uint8),
                                 torch.zeros(3, 4, 8, 8, dtype=torch.uint8)])
def test_bad_clips_are_rejected(bad):
    with pytest.raises(ValueError, match="T×H×W×3 uint8"):
        random_crop_flip(bad, 4)
    with pytest.raises(ValueError, match="T×H×W×3 uint8"):
        center_crop(bad, 4)
