"""Cost of each loss (forward + backward) at the original's global batch, next to one S3D training step.

Each measurement runs in a fresh subprocess so its peak memory (ru_maxrss above the RSS after set-up) is its
own. Defaults: B=8192 videos, K=4 candidates, D=512 (MIL-NCE on 64 TPUs), one CPU thread. The last line printed
is a JSON object with every number.

    python tools/bench_losses.py [--batch 8192 --candidates 4 --dim 512 --s3d-batch 1 --threads 1]
"""
import argparse
import json
import resource
import subprocess
import sys
import time


import psutil
import torch
from milnce.losses import max_margin, mil_nce, nce
from milnce.towers.s3d import S3D

LOSS_SETTINGS = ("mil_nce", "mil_nce_paper", "nce_symmetric", "max_margin")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def _run_loss(name: str, b: int, k: int, d: int):
    g = torch.Generator().manual_seed(0)
    rows = b * k if name.startswith("mil_nce") else b
    video = (0.05 * torch.randn(b, d, generator=g)).requires_grad_()
    text = (0.05 * torch.randn(rows, d, generator=g)).requires_grad_()
    ids = torch.arange(b) // k  # max-margin: B/K videos with K clips each
    fn = {
        "mil_nce": lambda: mil_nce(video, text, k),
        "mil_nce_paper": lambda: mil_nce(video, text, k, formulation="paper"),
        "nce_symmetric": lambda: nce(video, text, symmetric=True, temperature=0.07),
        "max_margin": lambda: max_margin(video, text, 0.1, ids, normalize=True),
    }[name]
    return fn, {"rows": rows}


def _run_s3d(batch: int, frames: int, size: int):
    model = S3D(num_classes=512, space_to_depth=True).train()
    clip = torch.rand(batch, 3, frames, size, size)

    def step():
        model.zero_grad(set_to_none=True)
        return model(clip)["video_embedding"].square().mean()

    return step, {"s3d_batch": batch, "frames": frames, "size": size}


def worker(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    if spec["name"] == "s3d":
        fn, info = _run_s3d(spec["s3d_batch"], spec["frames"], spec["size"])
    else:
        fn, info = _run_loss(spec["name"], spec["batch"], spec["candidates"], spec["dim"])
    base_mb = psutil.Process().memory_info().rss / 2 ** 20
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        loss = fn()
        loss.backward()
        times.append(time.perf_counter() - start)
    return {"name": spec["name"], "ms": 1000 * min(times), "peak_mb_above_setup": _peak_rss_mb() - base_mb,
            "loss": float(loss), **info}


def measure(spec: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "milnce.commands.bench_losses", "--worker", json.dumps(spec)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker {spec['name']} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8192)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--losses", default=",".join(LOSS_SETTINGS))
    p.add_argument("--s3d-batch", type=int, default=1, help="clips in the S3D step (0 = skip S3D)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    common = {"batch": args.batch, "candidates": args.candidates, "dim": args.dim, "threads": args.threads,
              "repeats": args.repeats, "s3d_batch": args.s3d_batch, "frames": args.frames, "size": args.size}
    results = {}
    names = [n for n in args.losses.split(",") if n]
    unknown = set(names) - set(LOSS_SETTINGS)
    if unknown:
        p.error(f"--losses: unknown {sorted(unknown)}; choose from {', '.join(LOSS_SETTINGS)}")
    for name in names + (["s3d"] if args.s3d_batch > 0 else []):
        r = measure({**common, "name": name})
        results[name] = r
        print(f"{name:>14}: {r['ms']:10.1f} ms   peak +{r['peak_mb_above_setup']:8.1f} MB", flush=True)
    summary = {"device": "cpu", "threads": args.threads, "batch": args.batch, "candidates": args.candidates,
               "dim": args.dim}
    for name in names:
        summary[f"{name}_ms"] = round(results[name]["ms"], 1)
        summary[f"{name}_peak_mb"] = round(results[name]["peak_mb_above_setup"], 1)
    if "s3d" in results:
        per_clip = results["s3d"]["ms"] / args.s3d_batch
        summary.update({"s3d_step_ms": round(results["s3d"]["ms"], 1), "s3d_batch": args.s3d_batch,
                        "s3d_frames": args.frames, "s3d_size": args.size,
                        "s3d_peak_mb": round(results["s3d"]["peak_mb_above_setup"], 1),
                        "s3d_ms_per_clip": round(per_clip, 1)})
        for name in names:  # the loss as a fraction of the S3D work for the same global batch
            summary[f"{name}_fraction_of_s3d_batch"] = round(results[name]["ms"] / (per_clip * args.batch), 6)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
