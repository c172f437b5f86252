"""Peak memory of one training step, direct vs gradient cache, at growing batch with a fixed chunk.

Model: S3D-G (reduced width by default so it runs on a CPU) + a small text MLP + MIL-NCE. Each (mode, batch)
runs in a fresh subprocess; its peak memory is ru_maxrss above the RSS after set-up (model and inputs built), so
it counts activations, gradients and temporaries. Direct memory grows with the batch; grad-cache memory with the
chunk. Note: S3D has BatchNorm, which in grad-cache mode normalises per chunk (milnce/grad_cache.py).
The last line printed is a JSON object.

    python tools/bench_grad_cache.py [--batches 8,16,32,64 --chunk 8 --frames 16 --size 112 --width-mult 0.25]
"""
import argparse
import json
import resource
import subprocess
import sys
import time


import psutil
import torch
from torch import nn
from tqdm import tqdm
from milnce.grad_cache import grad_cache_step
from milnce.losses import MILNCELoss
from milnce.towers.s3d import S3D


def worker(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    b, k = spec["batch"], spec["candidates"]
    video_tower = S3D(num_classes=512, space_to_depth=True, width_mult=spec["width_mult"]).train()
    text_tower = nn.Sequential(nn.Linear(300, 2048), nn.ReLU(), nn.Linear(2048, 512))
    loss_fn = MILNCELoss(k)
    video = torch.rand(b, 3, spec["frames"], spec["size"], spec["size"])
    text = torch.randn(b * k, 300)

    def embed_video(x):
        return video_tower(x)["video_embedding"]

    base_mb = psutil.Process().memory_info().rss / 2 ** 20
    start = time.perf_counter()
    if spec["mode"] == "direct":
        loss = loss_fn(embed_video(video), text_tower(text))
        loss.backward()
    else:
        loss = grad_cache_step(embed_video, text_tower, video, text, loss_fn, spec["chunk"], k,
                               modules=[video_tower, text_tower])
    elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - base_mb  # Linux: kilobytes
    return {"mode": spec["mode"], "batch": b, "ms": 1000 * elapsed, "peak_mb": peak_mb, "loss": float(loss)}


def _slope(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="8,16,32,64")
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--width-mult", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    batches = [int(x) for x in args.batches.split(",") if x]
    common = {"chunk": args.chunk, "candidates": args.candidates, "frames": args.frames, "size": args.size,
              "width_mult": args.width_mult, "threads": args.threads}
    rows = {"direct": {}, "grad_cache": {}}
    settings = [(mode, b) for b in batches for mode in rows]
    for mode, b in tqdm(settings, desc="settings", file=sys.stderr):
        spec = {**common, "mode": mode, "batch": b}
        out = subprocess.run([sys.executable, "-m", "milnce.commands.bench_grad_cache", "--worker", json.dumps(spec)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"benchmark worker {mode} batch {b} failed:\n{out.stderr[-2000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows[mode][b] = r
        tqdm.write(f"{mode:>10} batch {b:5d}: peak +{r['peak_mb']:8.1f} MB  {r['ms']:9.1f} ms  loss {r['loss']:.4f}")
    summary = {"device": "cpu", "threads": args.threads, "chunk": args.chunk, "candidates": args.candidates,
               "clip": [3, args.frames, args.size, args.size], "s3d_width_mult": args.width_mult}
    for mode, by_batch in rows.items():
        summary[f"{mode}_peak_mb"] = {str(b): round(by_batch[b]["peak_mb"], 1) for b in batches}
        summary[f"{mode}_ms"] = {str(b): round(by_batch[b]["ms"], 1) for b in batches}
        summary[f"{mode}_mb_per_clip"] = round(_slope(batches, [by_batch[b]["peak_mb"] for b in batches]), 2)
    largest = batches[-1]
    summary["peak_ratio_at_largest_batch"] = round(rows["grad_cache"][largest]["peak_mb"]
                                                  / rows["direct"][largest]["peak_mb"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
