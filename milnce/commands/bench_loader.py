"""Clip-loading throughput on HowTo100M-like videos, side by side in one run, on the same videos and windows:

  (a) ffmpeg   the original MIL-NCE loader: one `ffmpeg -ss S -t T+0.1 -i f -vf fps=F,crop=… -f rawvideo
               -pix_fmt rgb24 pipe:` process per clip (PROTOCOLS.md Part A §5), output parsed as it did;
  (b) ours     datamodules.video.decode.read_clip (+ decord for comparison) then transforms.random_crop_flip;
  (c) limit    PyAV decoding every frame from the keyframe before the window to the window's last frame,
               nothing else (no conversion, no crop).

Throughput is clips per CPU-second ("per core": process CPU time plus, for (a), the ffmpeg children's), which the
other jobs on a shared machine disturb far less than wall time; wall-clock rates are printed too. The inputs are
generated once into --cache-dir (456×256, 30 fps, x264 defaults: keyframe interval 250, B-frames; camera pans,
moving objects, scene cuts) unless --videos is given; tools/pack_videos.py's re-encoding (1 s keyframe interval)
is measured beside them. The last printed line is a JSON object (keys speedup_vs_ffmpeg and
fraction_of_decode_limit are for the original files; packed_* for the packed copies).
"""
import argparse
import json
import math
import resource
import shutil
import subprocess
import time
from pathlib import Path


import av
import numpy as np
import torch
from tqdm.auto import tqdm

from datamodules.atomic import atomic_path
from datamodules.video.decode import probe, read_clip, set_decoder_threads, worker_init
from datamodules.video.pack import pack_video
from datamodules.video.transforms import random_crop_flip


def synthetic_video(path: Path, seconds: float, seed: int, width=456, height=256, fps=30, keyint=250) -> None:
    """A textured scene the camera pans across, moving objects, a scene cut every 20-40 s; libx264 defaults.

    About 250 kbit/s, near HowTo100M's average (12 TB over 1.22 M videos of 6.6 min: about 200 kbit/s)."""
    rng = np.random.default_rng(seed)

    def scene():
        coarse = rng.random((height * 3 // 32, width * 3 // 32, 3)).astype(np.float32)
        tex = np.kron(coarse, np.ones((32, 32, 1), np.float32))
        for axis in (0, 1):
            for _ in range(4):
                tex = (np.roll(tex, 1, axis) + tex + np.roll(tex, -1, axis)) / 3
        tex += 0.01 * rng.random(tex.shape).astype(np.float32)
        return (np.clip(tex, 0, 1) * 255).astype(np.uint8), rng.uniform(0.1, 0.5, 2), rng.uniform(0, 6, 2)

    with atomic_path(path) as tmp, av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(keyint)}
        tex, speed, phase = scene()
        next_cut = rng.uniform(20, 40)
        for i in tqdm(range(int(seconds * fps)), desc=f"writing {path.name}", unit="frame", leave=False, disable=None):
            t = i / fps
            if t >= next_cut:
                tex, speed, phase = scene()
                next_cut += rng.uniform(20, 40)
            span_y, span_x = tex.shape[0] - height, tex.shape[1] - width
            y = int(span_y / 2 * (1 + math.sin(t * speed[0] + phase[0])))
            x = int(span_x / 2 * (1 + math.sin(t * speed[1] + phase[1])))
            img = tex[y:y + height, x:x + width].copy()
            for k in range(3):
                cx = int(width / 2 + width / 3 * math.cos(t * (0.7 + k) + k))
                cy = int(height / 2 + height / 3 * math.sin(t * (0.5 + k / 2) + 2 * k))
                img[max(0, cy - 18):cy + 18, max(0, cx - 24):cx + 24] = ((60 * k + i) % 256, 200 - 50 * k, 90 + 60 * k)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode(None))


def ffmpeg_clip(path, seek, num_frames, fps, size, x, y, flip):
    """The original loader: input seek, duration num_sec + 0.1, fps filter, crop, (hflip), rgb24 pipe."""
    filters = f"fps={fps},crop={size}:{size}:{x}:{y}" + (",hflip" if flip else "")
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-ss", str(seek), "-t", str(num_frames / fps + 0.1),
           "-i", str(path), "-vf", filters, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    video = torch.from_numpy(np.frombuffer(out, np.uint8).reshape(-1, size, size, 3).copy()).permute(3, 0, 1, 2)
    if video.shape[1] < num_frames:
        video = torch.cat([video, torch.zeros(3, num_frames - video.shape[1], size, size, dtype=torch.uint8)], 1)
    return video[:, :num_frames]


def our_clip(path, seek, num_frames, fps, size, backend, generator):
    return random_crop_flip(read_clip(path, seek, num_frames, fps, None, backend=backend), size, generator)


def decode_limit(path, seek, num_frames, fps):
    """Decode from the keyframe before `seek` through the window's last frame; nothing else."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        tb, origin = stream.time_base, stream.start_time or 0
        container.seek(origin + int(seek / tb), stream=stream, backward=True)
        last = seek + (num_frames - 1) / fps
        for count, frame in enumerate(container.decode(stream), 1):
            if float((frame.pts - origin) * tb) >= last - 1e-4:
                return count
    return count


def cpu_seconds(children: bool) -> float:
    own = time.process_time()
    if not children:
        return own
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + usage.ru_utime + usage.ru_stime


def measure(label, windows, loaders):
    """Run every loader on each window in turn (interleaved, so load changes on the machine hit all alike)."""
    cpu = {name: 0.0 for name in loaders}
    wall = dict(cpu)
    for w in tqdm(windows, desc=label, unit="window", leave=False, disable=None):
        for name, (fn, children) in loaders.items():
            cpu0, wall0 = cpu_seconds(children), time.perf_counter()
            fn(w)
            cpu[name] += cpu_seconds(children) - cpu0
            wall[name] += time.perf_counter() - wall0
    return {name: {"clips_per_cpu_s": len(windows) / cpu[name], "clips_per_wall_s": len(windows) / wall[name],
                   "cpu_ms_per_clip": 1e3 * cpu[name] / len(windows)} for name in loaders}


class WindowClips(torch.utils.data.Dataset):
    """The benchmark's windows as a training Dataset: read_clip + random crop/flip, one clip per item."""

    def __init__(self, windows, num_frames, fps, crop):
        self.windows, self.num_frames, self.fps, self.crop = windows, num_frames, fps, crop

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        w = self.windows[i]
        gen = torch.Generator().manual_seed(i)
        return our_clip(w["path"], w["seek"], self.num_frames, self.fps, self.crop, "auto", gen)


def loader_rate(windows, args, workers: int) -> float:
    """DataLoader batches per wall-second with `workers` worker processes (one decoder thread each)."""
    loader = torch.utils.data.DataLoader(WindowClips(windows, args.num_frames, args.fps, args.crop),
                                         batch_size=args.loader_batch, num_workers=workers,
                                         worker_init_fn=worker_init if workers else None)
    start, batches = time.perf_counter(), 0
    for _ in loader:
        batches += 1
    return batches / (time.perf_counter() - start)


def frame_offsets(windows, args, check):
    """Which source frame each of the ffmpeg loader's frames is, relative to the one on screen at start + i/fps;
    and how far (mean absolute difference, 0-255) ffmpeg's frames are from read_clip(sampling="ffmpeg")."""
    offsets, residuals, sampling_diffs = [], [], []
    for w in windows[:check]:
        src_fps = probe(w["path"]).fps
        n_src = int(round((args.num_frames - 1) / args.fps * src_fps)) + 8
        crop = (slice(None), slice(w["y"], w["y"] + args.crop), slice(w["x"], w["x"] + args.crop))
        ref = read_clip(w["path"], w["seek"], n_src, src_fps, None)[crop].float()
        got = ffmpeg_clip(w["path"], w["seek"], args.num_frames, args.fps, args.crop, w["x"], w["y"], False)
        got = got.permute(1, 2, 3, 0).float()
        for i in range(args.num_frames):
            step = int(round(i * src_fps / args.fps))
            diffs = [float((ref[m] - got[i]).abs().mean()) for m in range(step, min(step + 6, n_src))]
            offsets.append(int(np.argmin(diffs)))
            residuals.append(min(diffs))
        like = read_clip(w["path"], w["seek"], args.num_frames, args.fps, None, sampling="ffmpeg")[crop].float()
        sampling_diffs.append(float((like - got).abs().mean()))
    return offsets, float(np.mean(residuals)), float(np.mean(sampling_diffs))


def run_set(label, paths, args, have_ffmpeg, rng):
    infos = {p: probe(p) for p in paths}
    num_sec = args.num_frames / args.fps
    windows = []
    for _ in range(args.windows):
        p = paths[int(rng.integers(len(paths)))]
        info = infos[p]
        windows.append({"path": p, "seek": int(rng.integers(0, int(info.duration - num_sec - 0.1))),
                        "x": int(rng.integers(0, info.width - args.crop + 1)),
                        "y": int(rng.integers(0, info.height - args.crop + 1)), "flip": bool(rng.random() > 0.5)})
    gen = torch.Generator().manual_seed(0)
    loaders = {"limit": (lambda w: decode_limit(w["path"], w["seek"], args.num_frames, args.fps), False)}
    for backend in args.backends:
        loaders[f"ours_{backend}"] = (lambda w, b=backend: our_clip(
            w["path"], w["seek"], args.num_frames, args.fps, args.crop, b, gen), False)
    if have_ffmpeg:
        loaders["ffmpeg"] = (lambda w: ffmpeg_clip(w["path"], w["seek"], args.num_frames, args.fps, args.crop,
                                                   w["x"], w["y"], w["flip"]), True)
    result = measure(label, windows, loaders)
    ours = result[f"ours_{args.backends[0]}"]["clips_per_cpu_s"]
    result["fraction_of_decode_limit"] = ours / result["limit"]["clips_per_cpu_s"]
    result["speedup_vs_ffmpeg"] = ours / result["ffmpeg"]["clips_per_cpu_s"] if have_ffmpeg else None
    return result, windows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", nargs="*", help="use these videos instead of generated ones")
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "milnce" / "bench_loader"))
    ap.add_argument("--num-videos", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=120.0, help="length of each generated video")
    ap.add_argument("--windows", type=int, default=40, help="random clips per set")
    ap.add_argument("--num-frames", type=int, default=16)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--backends", default="auto,decord", help="read_clip backends to time; the first is (b)")
    ap.add_argument("--no-pack", action="store_true", help="skip the packed (1 s keyframe interval) copies")
    ap.add_argument("--check", type=int, default=4, help="windows on which to measure ffmpeg's frame offset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loader-workers", default="0,2", help="DataLoader worker counts for the batches/s number")
    ap.add_argument("--loader-batch", type=int, default=8)
    args = ap.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    set_decoder_threads(1)

    have_ffmpeg = shutil.which("ffmpeg") is not None
    if not have_ffmpeg:
        print("ffmpeg binary not found (e.g. apt-get install -y ffmpeg): the original loader (a) is not measured")
    cache = Path(args.cache_dir)
    if args.videos:
        originals = [str(Path(v)) for v in args.videos]
    else:
        cache.mkdir(parents=True, exist_ok=True)
        originals = []
        for i in range(args.num_videos):
            path = cache / f"howto_like_{i}_{int(args.seconds)}s.mp4"
            if not path.exists():
                synthetic_video(path, args.seconds, seed=args.seed + i)
            originals.append(str(path))
    sets = {"original": originals}
    if not args.no_pack:
        packed = []
        for src in tqdm(originals, desc="packing (once, cached)", unit="video", disable=None):
            dst = cache / "packed" / (Path(src).stem + ".mp4")
            if not dst.exists():
                pack_video(src, dst, short_side=256, fps=30.0, keyframe_interval=1.0, threads=0)
            packed.append(str(dst))
        sets["packed"] = packed

    rng = np.random.default_rng(args.seed)
    results, windows = {}, {}
    for name, paths in sets.items():
        results[name], windows[name] = run_set(name, paths, args, have_ffmpeg, rng)
    offsets, residual, sampling_diff = frame_offsets(windows["original"], args, args.check) if have_ffmpeg \
        else ([], None, None)

    loader = {}
    for name in results:
        for workers in [int(n) for n in args.loader_workers.split(",") if n]:
            loader[f"{name}_workers{workers}"] = loader_rate(windows[name], args, workers)

    print(f"\n{args.num_frames} frames at {args.fps:g} fps, crop {args.crop}; clips per CPU-second (wall in brackets)")
    for name, res in results.items():
        for key in ["ffmpeg"] + [f"ours_{b}" for b in args.backends] + ["limit"]:
            if key in res:
                print(f"  {name:9s} {key:13s} {res[key]['clips_per_cpu_s']:7.2f}/s  "
                      f"({res[key]['clips_per_wall_s']:6.2f}/s wall, {res[key]['cpu_ms_per_clip']:6.1f} ms CPU/clip)")
        speed = res["speedup_vs_ffmpeg"]
        print(f"  {name:9s} ours/ffmpeg = {speed:.2f}x" if speed else f"  {name:9s} ours/ffmpeg = n/a",
              f" ours/limit = {res['fraction_of_decode_limit']:.2f}")
    if offsets:
        print(f"  ffmpeg's frame i is {np.median(offsets):g} source frames after the one on screen at start + i/fps"
              f" (offsets seen: {sorted(set(offsets))}; best-match difference {residual:.2f}/255); "
              f"read_clip(sampling='ffmpeg') differs from it by {sampling_diff:.2f}/255")

    for key, rate in loader.items():
        print(f"  DataLoader {key:20s} {rate:6.2f} batches/s of {args.loader_batch} clips (wall)")

    orig = results["original"]
    summary = {"loader_batches_per_s": loader, "loader_batch": args.loader_batch,"speedup_vs_ffmpeg": orig["speedup_vs_ffmpeg"],
               "fraction_of_decode_limit": orig["fraction_of_decode_limit"],
               "ours_clips_per_core_s": orig[f"ours_{args.backends[0]}"]["clips_per_cpu_s"],
               "ffmpeg_clips_per_core_s": orig["ffmpeg"]["clips_per_cpu_s"] if have_ffmpeg else None,
               "decode_limit_clips_per_core_s": orig["limit"]["clips_per_cpu_s"],
               "ffmpeg_frame_offset_median": float(np.median(offsets)) if offsets else None,
               "ffmpeg_vs_sampling_ffmpeg_mean_abs_diff": sampling_diff,
               "windows": args.windows, "videos": len(originals)}
    for backend in args.backends[1:]:
        summary[f"{backend}_clips_per_core_s"] = orig[f"ours_{backend}"]["clips_per_cpu_s"]
    if "packed" in results:
        pk = results["packed"]
        summary.update({
            "packed_speedup_vs_ffmpeg": pk["speedup_vs_ffmpeg"],
            "packed_fraction_of_decode_limit": pk["fraction_of_decode_limit"],
            "packed_ours_clips_per_core_s": pk[f"ours_{args.backends[0]}"]["clips_per_cpu_s"],
            "packed_vs_ffmpeg_on_originals": (pk[f"ours_{args.backends[0]}"]["clips_per_cpu_s"]
                                              / orig["ffmpeg"]["clips_per_cpu_s"]) if have_ffmpeg else None})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
