"""Extraction throughput, side by side in one run, on the same videos, model and windows:

  (a) per_window  the earlier path: one video after another in this process, every window seeking and decoding
                  its clips on its own (mode="per_window");
  (b) once        each video decoded once in chunks and sliced into its windows, decoding in a DataLoader worker
                  while the model runs in this process (mode="once", --workers);
  (c) once_inline the same decoding in this process (workers=0): what decoding once gives without the overlap;
  (d) model_only  the model alone on ready batches of the same size: the ceiling of any extraction with this model.

The model is conf/demo.yaml's (random weights: speed does not depend on them), windows of --window s every
--stride s (4 s / 1 s by default: a window is 3 demo clips of 1.6 s, 1.2 s apart, averaged). Videos: --videos DIR, else a small
toy corpus rendered once into --cache-dir at the demo's 84×64. Frames per window counts the frames the decoder
hands over (sampled at the model's fps), not the source frames it decodes to reach them. Windows per CPU-second
(this process and its workers) is printed too: other jobs on a shared machine disturb it far less than wall time.
The model gets --threads torch threads in every path; (b) also has its workers. The last printed line is a JSON
object with at least `speedup` = (b) windows/s ÷ (a) windows/s (wall clock, the best of --repeats rounds each).
"""
import argparse
import json
import math
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from milnce.config import load_config
from milnce.search.extract import extract, list_videos
from milnce.search.index import load_shards
from milnce.train.run import build_module
from milnce.train.threads import pin_torch_threads
from datamodules.toy.corpus import ToyCorpusConfig, make_toy_corpus, toy_corpus_exists

REPO = Path(__file__).resolve().parents[2]


def toy_videos(cache: Path, count: int):
    cfg = ToyCorpusConfig.small(width=84, height=64, num_crosstask_videos=max(4, count), duration_range=(40.0, 60.0))
    if not toy_corpus_exists(cache, cfg):
        make_toy_corpus(cache, cfg, progress=False, workers=1)
    return list_videos([cache / "crosstask" / "videos"])[:count]


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@torch.no_grad()
def model_only(model, windows: int, batch_size: int, window: float) -> float:
    """Windows/s of the model alone on ready clips (the same batches, no decoding): the ceiling of any extraction."""
    spec = model.clip_spec
    per_window = max(1, math.ceil(window / spec.seconds - 1e-6))
    clips = -(-batch_size // per_window) * per_window
    batch = torch.randint(0, 256, (clips, 3, spec.num_frames, spec.crop, spec.crop), dtype=torch.uint8)
    t0 = time.perf_counter()
    for _ in range(-(-windows * per_window // clips)):
        model.embed_video(batch)
    return round(windows / (time.perf_counter() - t0), 2)


def sorted_index(out: Path):
    emb, rows = load_shards(out)
    order = sorted(range(len(rows)), key=lambda i: tuple(rows[i]))
    return emb[order], [tuple(rows[i]) for i in order]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "conf" / "demo.yaml"), help="whose model and clip to use")
    ap.add_argument("--videos", help="a folder of videos (default: the rendered toy corpus)")
    ap.add_argument("--count", type=int, default=8, help="how many videos")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "milnce_bench_extract"))
    ap.add_argument("--window", type=float, default=4.0)
    ap.add_argument("--stride", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1, help="decoding workers of (b)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the model (all paths)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the three paths; the best of each is reported")
    args = ap.parse_args(argv)
    pin_torch_threads(args.threads)
    cache = Path(args.cache_dir)
    videos = list_videos([args.videos])[:args.count] if args.videos else toy_videos(cache / "toy", args.count)
    cfg = load_config(args.config)
    torch.manual_seed(0)
    model = build_module(cfg, ["the"]).eval()
    model.checkpoint_path = None
    with torch.no_grad():   # first-call costs (allocator, kernels) out of the timings
        spec = model.clip_spec
        model.embed_video(torch.zeros(args.batch_size, 3, spec.num_frames, spec.crop, spec.crop, dtype=torch.uint8))
    work = Path(tempfile.mkdtemp(prefix="bench_extract_", dir=cache.parent if cache.parent.is_dir() else None))
    paths = (("per_window", "per_window", 0), ("once", "once", args.workers), ("once_inline", "once", 0))
    runs = {name: [] for name, _, _ in paths}
    runs["model_only"] = []
    diffs = []
    try:
        for rep in range(args.repeats):   # rounds interleave the paths, so a burst of other load hits them alike
            for name, mode, workers in paths:
                out_dir = work / f"{name}_{rep}"
                load, cpu = os.getloadavg()[0], cpu_seconds()
                out = extract(model, videos, out_dir, window=args.window, stride=args.stride,
                              batch_size=args.batch_size, progress=False, mode=mode, num_workers=workers)
                cpu = cpu_seconds() - cpu   # the workers have exited (and been waited for) when predict returns
                runs[name].append({**out, "load": round(load, 2), "windows_per_cpu_s": round(out["windows"] / cpu, 2)})
                print(f"round {rep} {name:12s} {out['windows']:5d} windows in {out['seconds']:6.2f} s: "
                      f"{out['windows_per_s']:7.2f} windows/s, {runs[name][-1]['windows_per_cpu_s']:7.2f} per "
                      f"CPU-second, {out['frames_per_window']} frames decoded per window (load avg {load:.2f})")
            runs["model_only"].append({"windows_per_s": model_only(model, runs["once"][-1]["windows"], args.batch_size,
                                                                  args.window)})
            ref_emb, ref_rows = sorted_index(work / f"per_window_{rep}")
            for name in ("once", "once_inline"):
                emb, rows = sorted_index(work / f"{name}_{rep}")
                assert rows == ref_rows, f"{name}: other windows than per_window"
                diffs.append(float(np.abs(emb - ref_emb).max()))
            for name, _, _ in paths:
                shutil.rmtree(work / f"{name}_{rep}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def best(name, key):  # other jobs only ever slow a run down: the best round is the least disturbed
        return max(r[key] for r in runs[name])

    a, b, c = ("per_window", "once", "once_inline")
    result = {"videos": len(videos), "windows": runs[a][0]["windows"], "window_s": args.window,
              "stride_s": args.stride, "workers": args.workers, "threads": args.threads, "cpus": os.cpu_count(),
              "repeats": args.repeats,
              "per_window_windows_per_s": best(a, "windows_per_s"), "once_windows_per_s": best(b, "windows_per_s"),
              "once_inline_windows_per_s": best(c, "windows_per_s"),
              "per_window_frames_per_window": runs[a][0]["frames_per_window"],
              "once_frames_per_window": runs[b][0]["frames_per_window"],
              "per_window_windows_per_cpu_s": best(a, "windows_per_cpu_s"),
              "once_windows_per_cpu_s": best(b, "windows_per_cpu_s"),
              "once_inline_windows_per_cpu_s": best(c, "windows_per_cpu_s"),
              "model_only_windows_per_s": best("model_only", "windows_per_s"),
              "max_abs_embedding_diff": max(diffs), "load_avg": [r["load"] for n, _, _ in paths for r in runs[n]],
              "speedup_cpu": round(best(b, "windows_per_cpu_s") / best(a, "windows_per_cpu_s"), 2),
              "speedup_inline": round(best(c, "windows_per_s") / best(a, "windows_per_s"), 2),
              "speedup": round(best(b, "windows_per_s") / best(a, "windows_per_s"), 2)}
    print(json.dumps(result))
    return 0
