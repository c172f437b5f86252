"""Pixels of the synthetic corpus: sprites, drifting textured backgrounds, actions, and H.264 writing with PyAV.

Speed matters (the corpus is rendered inside the 10-minute demo), so every sprite (object x angle or scale) is
rasterised once with anti-aliasing and cached, a background is a periodic texture tile that is sliced at a drifting
offset, and a frame is one slice copy plus two or three small alpha blends. Frames are drawn directly in Y'CbCr
(BT.601 limited range, as decoders assume for untagged H.264) at full chroma resolution and handed to x264 as
yuv420p: alpha blending commutes with the affine RGB->YUV map, and skipping swscale's per-frame RGB conversion makes
encoding 1.6x faster.
"""
from __future__ import annotations

import colorsys
import math
from fractions import Fraction
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import av
import numpy as np

from datamodules.toy.story import COLOURS, Timeline, palette, split_object

ANGLE_STEPS = 72                                         # 5 degrees
SCALES = tuple(round(0.6 + 0.05 * i, 2) for i in range(25))  # 0.6 .. 1.8
ACTION_PERIOD = {"slide": 2.4, "grow": 2.0, "bounce": 0.8}
SPIN_DEG_PER_S = 180.0
FLASH_HALF_PERIOD = 0.4
GRAIN_STD = 2.0                                          # static fine texture that drifts with the background


# BT.601 limited range: yuv = RGB_TO_YUV @ rgb + YUV_OFFSET (rgb in 0..255)
RGB_TO_YUV = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]],
                      np.float32) / 255.0
YUV_OFFSET = np.array([16.0, 128.0, 128.0], np.float32)


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """... x 3 RGB (0..255, float) -> ... x 3 Y'CbCr, same range convention as the decoder's yuv420p->rgb24."""
    return rgb @ RGB_TO_YUV.T + YUV_OFFSET


class SpriteBank:
    """Anti-aliased sprites as (premultiplied Y'CbCr colour, 1 - alpha), keyed by (object, angle step, scale)."""

    def __init__(self, radius: float, supersample: int = 3):
        self.radius = float(radius)
        self.ss = supersample
        self._cache: Dict[Tuple[str, int, float], Tuple[np.ndarray, np.ndarray]] = {}

    def get(self, obj: str, angle_step: int = 0, scale: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
        key = (obj, angle_step % ANGLE_STEPS, scale)
        if key not in self._cache:
            self._cache[key] = self._draw(obj, key[1] * 2 * math.pi / ANGLE_STEPS, scale)
        return self._cache[key]

    def _draw(self, obj: str, angle: float, scale: float) -> Tuple[np.ndarray, np.ndarray]:
        colour, shape = split_object(obj)
        r = self.radius * scale
        size = int(math.ceil(2.4 * r)) + 2
        n = size * self.ss
        coords = (np.arange(n) + 0.5) / self.ss - size / 2
        y, x = np.meshgrid(coords, coords, indexing="ij")
        ca, sa = math.cos(angle), math.sin(angle)
        u, v = ca * x + sa * y, -sa * x + ca * y          # object frame
        if shape == "circle":
            inside = u * u + v * v <= r * r
        elif shape == "square":
            inside = np.maximum(np.abs(u), np.abs(v)) <= 0.82 * r
        elif shape == "triangle":                          # vertex up, circumradius 1.15 r
            inside = np.ones_like(u, dtype=bool)
            for k in range(3):
                phi = math.pi / 2 + k * 2 * math.pi / 3    # outward edge normals (down, up-left, up-right)
                inside &= u * math.cos(phi) + v * math.sin(phi) <= 0.575 * r
        elif shape == "cross":
            inside = ((np.abs(u) <= 0.32 * r) & (np.abs(v) <= r)) | ((np.abs(v) <= 0.32 * r) & (np.abs(u) <= r))
        elif shape == "star":                              # five points, outer radius 1.15 r, inner 0.5 r
            big, small, half = 1.15 * r, 0.5 * r, math.pi / 5
            rho, phi = np.hypot(u, v), np.arctan2(u, -v)   # phi = 0 points up
            a = np.abs(((phi + half) % (2 * half)) - half)  # angle from the nearest point, 0..pi/5
            # distance to the straight edge from that point to the next inner corner, along this direction
            edge = big * small * math.sin(half) / (small * np.sin(half - a) + big * np.sin(a))
            inside = rho <= edge
        elif shape == "ring":
            rho2 = u * u + v * v
            inside = (rho2 <= r * r) & (rho2 >= (0.55 * r) ** 2)
        else:
            raise ValueError(f"unknown shape '{shape}'")
        # a dark radial bar (a clock hand) pointing up, so that spinning shows even on a circle
        marker = inside & (np.abs(u) <= 0.15 * r) & (v >= -0.85 * r) & (v <= -0.1 * r)
        if shape == "ring":  # the bar would mostly fall in the hole: a wider notch across the band instead
            marker = inside & (np.abs(u) <= 0.3 * r) & (v <= -0.5 * r)

        def down(mask):
            return mask.reshape(size, self.ss, size, self.ss).mean(axis=(1, 3), dtype=np.float32)

        alpha, mark = down(inside), down(marker)
        rgb = np.asarray(COLOURS[colour][1], np.float32)
        premult_rgb = alpha[..., None] * rgb - mark[..., None] * (0.65 * rgb)
        premult = premult_rgb @ RGB_TO_YUV.T + alpha[..., None] * YUV_OFFSET
        return premult.astype(np.float32), (1.0 - alpha)[..., None].astype(np.float32)


def blend(frame: np.ndarray, sprite: Tuple[np.ndarray, np.ndarray], cx: float, cy: float) -> None:
    """Alpha-blend a sprite centred at (cx, cy) into an H x W x 3 uint8 frame, clipped at the borders."""
    premult, inv_alpha = sprite
    h, w = inv_alpha.shape[:2]
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + w, frame.shape[1]), min(y0 + h, frame.shape[0])
    if fx1 <= fx0 or fy1 <= fy0:
        return
    sl = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    region = frame[fy0:fy1, fx0:fx1]
    # a convex combination of in-range colours, so no clipping is needed
    region[...] = region * inv_alpha[sl] + premult[sl]


@dataclass
class Background:
    tile: np.ndarray          # (2 th) x (2 tw) x 3 uint8 Y'CbCr, a periodic texture repeated 2 x 2
    velocity: Tuple[float, float]
    height: int
    width: int

    def frame(self, t: float) -> np.ndarray:
        th, tw = self.tile.shape[0] // 2, self.tile.shape[1] // 2
        oy = int(round(self.velocity[1] * t)) % th
        ox = int(round(self.velocity[0] * t)) % tw
        return self.tile[oy:oy + self.height, ox:ox + self.width].copy()


def make_background(rng: np.random.Generator, width: int, height: int) -> Background:
    """Low-contrast drifting noise or stripes between two nearby desaturated tints, periodic over one frame size."""
    th, tw = height, width
    yy, xx = np.mgrid[0:th, 0:tw].astype(np.float32)
    if rng.random() < 0.5:
        noise = rng.standard_normal((th, tw))
        fy, fx = np.fft.fftfreq(th)[:, None], np.fft.fftfreq(tw)[None, :]
        sigma = rng.uniform(0.02, 0.06)
        smooth = np.real(np.fft.ifft2(np.fft.fft2(noise) * np.exp(-(fx ** 2 + fy ** 2) / (2 * sigma ** 2))))
        pattern = 0.5 + 0.5 * np.tanh(smooth / (smooth.std() + 1e-8))
    else:
        kx, ky = int(rng.integers(1, 7)), int(rng.integers(-4, 5))
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * (kx * xx / tw + ky * yy / th) + rng.uniform(0, 2 * np.pi))
    hue = rng.random()
    sat, val = rng.uniform(0.08, 0.35), rng.uniform(0.35, 0.6)
    a = np.array(colorsys.hsv_to_rgb(hue, sat, val), np.float32) * 255
    b = np.array(colorsys.hsv_to_rgb((hue + rng.uniform(-0.12, 0.12)) % 1, sat, val + rng.uniform(0.06, 0.14)),
                 np.float32) * 255
    grain = rng.normal(0, GRAIN_STD, (th, tw, 1))
    img = a * (1 - pattern[..., None]) + b * pattern[..., None] + grain
    tile = np.tile(rgb_to_yuv(img.clip(0, 255)).round().clip(0, 255).astype(np.uint8), (2, 2, 1))
    speed, direction = rng.uniform(3, 12), rng.uniform(0, 2 * np.pi)
    return Background(tile, (speed * math.cos(direction), speed * math.sin(direction)), height, width)


@dataclass
class Placement:
    object: str
    x: float
    y: float
    start: float
    end: float
    action: Optional[str] = None   # None = at rest
    scale: float = 1.0
    angle_step: int = 0
    phase: float = 0.0
    direction: int = 1


@dataclass
class Scene:
    """Everything the renderer needs: background cuts and object placements over time."""
    cuts: List[float]
    backgrounds: List[Background]
    placements: List[Placement] = field(default_factory=list)


def make_scene(timeline: Timeline, rng: np.random.Generator, width: int, height: int, cfg,
               cast: Optional[List[str]] = None) -> Scene:
    num_cuts = int(rng.poisson(timeline.duration / cfg.seconds_per_cut)) if cfg.seconds_per_cut > 0 else 0
    cuts = sorted(float(c) for c in rng.uniform(0, timeline.duration, size=num_cuts))
    scene = Scene([0.0] + cuts, [make_background(rng, width, height) for _ in range(num_cuts + 1)])
    cx, cy, unit = width / 2, height / 2, height
    corners = [(cx - 0.35 * unit, cy - 0.3 * unit), (cx + 0.35 * unit, cy - 0.3 * unit),
               (cx - 0.35 * unit, cy + 0.3 * unit), (cx + 0.35 * unit, cy + 0.3 * unit)]
    segs = timeline.segments
    for i, seg in enumerate(segs):
        x = cx + rng.uniform(-0.08, 0.08) * unit
        y = cy + rng.uniform(-0.08, 0.08) * unit + (0.12 * unit if seg.action == "bounce" else 0.0)
        scene.placements.append(Placement(seg.object, x, y, seg.start, seg.end, seg.action,
                                          angle_step=int(rng.integers(-6, 7)) % ANGLE_STEPS,
                                          phase=float(rng.uniform(0, 1)), direction=int(rng.choice([-1, 1]))))
        if rng.random() < cfg.distractor_prob:
            others = [o for o in (cast or []) if o != seg.object]
            if not others or rng.random() < 0.3:
                others = [o for o in palette(cfg) if o != seg.object]
            dx, dy = corners[int(rng.integers(4))]
            scene.placements.append(Placement(others[int(rng.integers(len(others)))], dx, dy, seg.start, seg.end,
                                              scale=0.7, angle_step=int(rng.integers(ANGLE_STEPS))))
        gap_end = segs[i + 1].start if i + 1 < len(segs) else timeline.duration
        if gap_end > seg.end and rng.random() < cfg.idle_prob:
            scene.placements.append(Placement(seg.object, x, y, seg.end, gap_end))
    return scene


def _jitter(k: int, salt: float) -> float:
    """Deterministic pseudo-random value in [-1, 1] per frame index (shaking)."""
    v = math.sin(12.9898 * k + 78.233 * salt) * 43758.5453
    return 2.0 * (v - math.floor(v)) - 1.0


def draw_placement(frame: np.ndarray, p: Placement, t: float, k: int, bank: SpriteBank, height: int) -> None:
    tau = t - p.start
    x, y, angle_step, scale = p.x, p.y, p.angle_step, p.scale
    if p.action == "slide":
        x += p.direction * 0.3 * height * math.sin(2 * math.pi * tau / ACTION_PERIOD["slide"])
    elif p.action == "grow":
        scale = 1.0 + 0.35 * (1 - math.cos(2 * math.pi * (tau / ACTION_PERIOD["grow"])))
        scale = min(SCALES, key=lambda s: abs(s - scale))
    elif p.action == "spin":
        angle_step += p.direction * int(round(SPIN_DEG_PER_S * tau / (360 / ANGLE_STEPS)))
    elif p.action == "flash":
        if int(tau / FLASH_HALF_PERIOD + p.phase) % 2 == 1:
            return
    elif p.action == "bounce":
        y -= 0.28 * height * abs(math.sin(math.pi * tau / ACTION_PERIOD["bounce"]))
    elif p.action == "shake":
        x += 0.07 * height * _jitter(k, p.phase)
        y += 0.05 * height * _jitter(k, p.phase + 0.5)
    blend(frame, bank.get(p.object, angle_step, scale), x, y)


def render_frames(scene: Scene, duration: float, width: int, height: int, fps: float, bank: SpriteBank):
    """Yield the video's frames (H x W x 3 uint8 Y'CbCr) at t = i / fps for i < round(duration * fps)."""
    num_frames = int(round(duration * fps))
    order = sorted(scene.placements, key=lambda p: p.action is not None)  # moving objects drawn on top
    bg_index = 0
    for k in range(num_frames):
        t = k / fps
        while bg_index + 1 < len(scene.cuts) and t >= scene.cuts[bg_index + 1]:
            bg_index += 1
        frame = scene.backgrounds[bg_index].frame(t)
        for p in order:
            if p.start <= t < p.end:
                draw_placement(frame, p, t, k, bank, height)
        yield frame


class Mp4Writer:
    """H.264 (libx264, yuv420p) .mp4 through PyAV from Y'CbCr frames, single-threaded and deterministic."""

    def __init__(self, path: Path, width: int, height: int, fps: float, preset: str = "ultrafast", qp: int = 22,
                 gop_seconds: float = 2.0):
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        # constant QP: ~20% faster than CRF with ultrafast at a similar PSNR (~35 dB on these frames)
        self.stream.options = {"preset": preset, "qp": str(qp), "threads": "1",
                               "g": str(max(1, int(round(gop_seconds * fps))))}

    def write(self, frame_yuv: np.ndarray) -> None:
        """Encode one H x W x 3 Y'CbCr frame. Chroma is point-sampled at even rows and columns: 1.6x faster than
        letting swscale convert RGB, for ~1 dB PSNR (37.3 vs 38.4 dB after decoding, measured on toy frames)."""
        h, w = frame_yuv.shape[:2]
        out = av.VideoFrame(w, h, "yuv420p")
        for plane, data in zip(out.planes, (frame_yuv[:, :, 0], frame_yuv[0::2, 0::2, 1], frame_yuv[0::2, 0::2, 2])):
            view = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            view[:, :plane.width] = data
        for packet in self.stream.encode(out):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
