"""The small (2+1)D video tower: shapes, strides, channels-last equivalence, registry, bad arguments."""
import pytest
import torch

from milnce.towers.r2plus1d import R2Plus1DSmall
from milnce.towers.registry import build_video_tower, video_tower_names


def test_output_shapes_and_feature_map_strides():
    tower = R2Plus1DSmall(embed_dim=24, widths=(8, 16, 16, 32)).eval()
    out = tower(torch.rand(2, 3, 16, 64, 64))
    assert out["video_embedding"].shape == (2, 24) and out["pooled"].shape == (2, 32)
    grid = tower.blocks(tower.stem(torch.rand(1, 3, 16, 64, 64)))
    assert grid.shape == (1, 32, 4, 4, 4)          # stem /4 in space; blocks /1,2,2,1 in space and time


def test_channels_last_gives_the_same_embeddings_and_gradients():
    torch.manual_seed(0)
    a = R2Plus1DSmall(embed_dim=16, widths=(8, 8, 16, 16))
    b = R2Plus1DSmall(embed_dim=16, widths=(8, 8, 16, 16), channels_last=True)
    b.load_state_dict(a.state_dict())
    x = torch.rand(3, 3, 8, 32, 32)
    ya, yb = a(x)["video_embedding"], b(x)["video_embedding"]
    assert torch.allclose(ya, yb, atol=1e-5)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-4, rtol=1e-4), name


def test_it_learns_to_separate_two_motions():
    """A few Adam steps tell a still clip from one whose pixels flicker: the tower sees time."""
    torch.manual_seed(0)
    tower = R2Plus1DSmall(embed_dim=2, widths=(8, 8, 8, 8), stem_patch=4)
    opt = torch.optim.Adam(tower.parameters(), lr=1e-2)
    still = torch.rand(8, 3, 1, 16, 16).expand(-1, -1, 8, -1, -1).contiguous()
    flicker = still.clone()
    flicker[:, :, 1::2] = 1 - flicker[:, :, 1::2]
    x, y = torch.cat([still, flicker]), torch.tensor([0] * 8 + [1] * 8)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(tower(x)["video_embedding"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tower.eval()
    assert (tower(x)["video_embedding"].argmax(1) == y).float().mean() == 1.0


def test_registry_builds_it_from_the_model_config():
    assert "r2plus1d" in video_tower_names()
    tower = build_video_tower({"video_tower": "r2plus1d", "embed_dim": 40,
                               "r2plus1d": {"widths": [8, 16], "spatial_strides": [1, 2], "temporal_strides": [1, 1],
                                            "stem_patch": 2, "channels_last": True}})
    assert isinstance(tower, R2Plus1DSmall) and tower.fc.out_features == 40 and tower.channels_last
    assert tower(torch.rand(1, 3, 4, 16, 16))["video_embedding"].shape == (1, 40)


@pytest.mark.parametrize("kwargs, match", [
    (dict(widths=(8, 16), spatial_strides=(1,), temporal_strides=(1, 1)), "one entry per block"),
    (dict(widths=(8,), spatial_strides=(0,), temporal_strides=(1,)), ">= 1"),
    (dict(stem_patch=0), ">= 1"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        R2Plus1DSmall(**kwargs)


def test_wrong_input_layout_is_an_error():
    with pytest.raises(ValueError, match="B×3×T×H×W"):
        R2Plus1DSmall(widths=(8,), spatial_strides=(1,), temporal_strides=(1,))(torch.rand(2, 8, 3, 16, 16))
