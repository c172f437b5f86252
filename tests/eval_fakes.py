"""Deterministic stand-ins for the evaluators' tests: a decoder whose pixels encode what was asked for, and a module
whose embeddings are one-hot codes of pixel values / trailing integers in the text.

Fake video paths look like /fake/<name>_<code>.mp4: every decoded pixel of a clip equals <code>; names containing
"broken" raise FakeDecodeError, names containing "short" return half the frames asked for.
CrossTask-style fakes: `timeline` maps a path to a per-frame code array at the decoding fps.
"""
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn


class FakeDecodeError(Exception):
    pass


class FakeIO:
    def __init__(self, durations=None, timelines=None):
        self.calls = []                   # (path, start, num_frames) of every read_clip
        self.video_calls = []             # (path, fps) of every read_video
        self.samplings = []               # the sampling keyword of every read_clip
        self.probes = []                  # paths probed
        self.durations = durations or {}
        self.timelines = timelines or {}  # path -> 1-D uint8 tensor of codes per frame (at the fps asked)

    @staticmethod
    def code(path):
        return int(Path(path).stem.split("_")[-1])

    def read_clip(self, path, start, num_frames, fps, size, sampling="exact"):
        self.calls.append((path, float(start), int(num_frames)))
        self.samplings.append(sampling)
        if "broken" in path:
            raise FakeDecodeError(f"cannot decode {path}")
        if path in self.timelines:
            codes = self.timelines[path]
            first = int(round(start * fps))
            codes = codes[first:first + num_frames]
            return codes.view(-1, 1, 1, 1).expand(-1, size, size * 4 // 3, 3).contiguous()
        n = num_frames // 2 if "short" in path else num_frames
        return torch.full((n, size, size * 4 // 3, 3), self.code(path), dtype=torch.uint8)

    def read_video(self, path, fps, size):
        self.video_calls.append((path, fps))
        codes = self.timelines[path]
        return codes.view(-1, 1, 1, 1).expand(-1, size, size * 4 // 3, 3).contiguous()

    @staticmethod
    def center_crop(clip, size):
        T, H, W, _ = clip.shape
        x0 = (W - H) // 2
        return clip[:, :, x0:x0 + H].permute(3, 0, 1, 2).contiguous()

    def probe(self, path):
        self.probes.append(path)
        if "broken" in path:
            raise FakeDecodeError(f"cannot probe {path}")
        return SimpleNamespace(duration=self.durations[path])

    def clip_kwargs(self):
        return {"read_clip": self.read_clip, "center_crop": self.center_crop, "probe": self.probe,
                "decode_error": FakeDecodeError}

    def io(self):
        return {**self.clip_kwargs(), "read_video": self.read_video}


class FakeModule(nn.Module):
    """embed_video: one-hot of the first pixel's value (mean over the window's frames); encode_text: one-hot of
    the trailing integer of each text."""

    def __init__(self, dim=64):
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(1))
        self.tokenizer = SimpleNamespace(max_words=16)
        self.training_flags = []
        self.max_words_seen = []

    def embed_video(self, video):
        assert video.dtype == torch.uint8 and video.dim() == 5
        self.training_flags.append(self.training)
        codes = video[:, 0, :, 0, 0].long()                         # B×T: per-frame code
        return nn.functional.one_hot(codes, self.dim).float().mean(dim=1) * self.weight

    def encode_text(self, texts):
        self.max_words_seen.append(self.tokenizer.max_words)
        codes = torch.tensor([int(t.split()[-1]) for t in texts])
        return nn.functional.one_hot(codes, self.dim).float()
