"""ViT video tower: shapes, per-frame processing, temporal pooling, normalisation, checkpoint loading."""
import json

import pytest
import torch

from milnce.towers.vit import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, ViTVideoTower

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
            num_frames=4)


def tiny_tower(**overrides):
    torch.manual_seed(0)
    return ViTVideoTower(embed_dim=16, **{**TINY, **overrides})


@pytest.mark.parametrize("pooling", ["mean", "transformer"])
def test_forward_backward_shapes_and_every_parameter_trains(pooling):
    tower = tiny_tower(temporal_pooling=pooling)
    video = torch.rand(2, 3, 4, 40, 40)  # not image_size: resized inside the tower
    out = tower(video)
    assert out["video_embedding"].shape == (2, 16)
    assert out["frame_features"].shape == (2, 4, 32)
    out["video_embedding"].square().sum().backward()
    missing = [name for name, p in tower.named_parameters() if p.grad is None]
    assert missing == []


def test_frames_are_encoded_independently_and_in_order():
    tower = tiny_tower().eval()
    video = torch.rand(2, 3, 4, 32, 32)
    with torch.no_grad():
        features = tower(video)["frame_features"]
        for b, t in [(0, 0), (1, 2), (1, 3)]:
            single = tower(video[b:b + 1, :, t:t + 1])["frame_features"][0, 0]
            torch.testing.assert_close(features[b, t], single, atol=1e-5, rtol=1e-5)


def test_mean_pooling_ignores_frame_order_and_transformer_pooling_does_not():
    video = torch.rand(1, 3, 4, 32, 32)
    shuffled = video[:, :, [2, 0, 3, 1]]
    with torch.no_grad():
        mean_tower = tiny_tower(temporal_pooling="mean").eval()
        torch.testing.assert_close(mean_tower(video)["video_embedding"], mean_tower(shuffled)["video_embedding"],
                                   atol=1e-5, rtol=1e-5)
        temporal_tower = tiny_tower(temporal_pooling="transformer").eval()
        difference = temporal_tower(video)["video_embedding"] - temporal_tower(shuffled)["video_embedding"]
        assert difference.abs().max() > 1e-4
        # other clip lengths interpolate the learned positions
        assert temporal_tower(torch.rand(1, 3, 7, 32, 32))["video_embedding"].shape == (1, 16)


def test_divided_space_time_tower():
    tower = tiny_tower(divided_space_time=True)
    out = tower(torch.rand(2, 3, 4, 32, 32))
    assert out["video_embedding"].shape == (2, 16) and out["frame_features"].shape == (2, 4, 32)
    out["video_embedding"].sum().backward()
    assert any(name.endswith("temporal_dense.weight") and p.grad is not None for name, p in tower.named_parameters())
    cls_tower = tiny_tower(divided_space_time=True, temporal_pooling="cls")
    assert cls_tower(torch.rand(1, 3, 4, 32, 32))["video_embedding"].shape == (1, 16)
    with pytest.raises(ValueError, match="built for 4 frames, got 6"):
        tower(torch.rand(1, 3, 6, 32, 32))


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="needs divided_space_time"):
        tiny_tower(temporal_pooling="cls")
    with pytest.raises(ValueError, match="temporal_pooling 'max'"):
        tiny_tower(temporal_pooling="max")
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        tiny_tower(num_heads=5)
    tower = tiny_tower()
    with pytest.raises(ValueError, match="B×3×T×H×W"):
        tower(torch.rand(3, 4, 32, 32))
    with pytest.raises(ValueError, match="float video"):
        tower(torch.zeros(1, 3, 4, 32, 32, dtype=torch.uint8))


def _vit_backbone_config():
    from transformers import ViTConfig

    return ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64)


def test_loads_a_local_vit_checkpoint_with_its_image_statistics(tmp_path):
    from transformers import ViTModel

    torch.manual_seed(1)
    reference = ViTModel(_vit_backbone_config(), add_pooling_layer=False).eval()
    reference.save_pretrained(tmp_path)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))

    tower = ViTVideoTower(embed_dim=8, pretrained=str(tmp_path), image_size=999, hidden_size=999).eval()
    assert tower.image_size == 32 and tower.feature_dim == 32  # sizes come from the checkpoint
    video = torch.rand(1, 3, 2, 32, 32)
    frames = video[0].transpose(0, 1)
    normalised = (frames - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference(pixel_values=normalised).last_hidden_state[:, 0]
        got = tower(video)["frame_features"][0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_loads_a_clip_vision_checkpoint_with_clip_defaults(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(2)
    config = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=64)
    reference = CLIPVisionModel(config).eval()
    reference.save_pretrained(tmp_path)  # no preprocessor_config.json: CLIP's statistics apply
    tower = ViTVideoTower(embed_dim=8, pretrained=str(tmp_path)).eval()
    assert torch.allclose(tower.pixel_mean.flatten(), torch.tensor(CLIP_MEAN))
    video = torch.rand(1, 3, 2, 32, 32)
    normalised = (video[0].transpose(0, 1) - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(tower(video)["frame_features"][0],
                                   reference(pixel_values=normalised).pooler_output, atol=1e-5, rtol=1e-5)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        ViTVideoTower(pretrained=str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        ViTVideoTower(pretrained=str(tmp_path))
    _vit_backbone_config().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="needs a TimeSformer checkpoint"):
        ViTVideoTower(pretrained=str(tmp_path), divided_space_time=True)


def test_a_checkpoint_missing_weights_is_an_error_not_a_random_init(tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import ViTModel

    ViTModel(_vit_backbone_config(), add_pooling_layer=False).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    dropped = next(k for k in weights if "encoder.layer.1.attention" in k and k.endswith("query.weight"))
    del weights[dropped]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks or mis-shapes 1 backbone weights, e\.g\. .*layers?\.1\.attention"):
        ViTVideoTower(pretrained=str(tmp_path))


def test_untrained_tower_uses_imagenet_statistics():
    assert torch.allclose(tiny_tower().pixel_mean.flatten(), torch.tensor(IMAGENET_MEAN))
