"""Forward and forward+backward throughput of every tower on this CPU, demo size next to full size.

  tools/bench_towers.py [--towers s3d,vit,word2vec,hf] [--threads 1] [--min-seconds 1]

demo = the conf/model/<tower>.yaml fragment on clips of the demo config's size (conf/demo.yaml when present);
full = the schema defaults: released S3D-G (space-to-depth), ViT-B/16 at 224, the released 66,250-word MIL-NCE
text tower, all-MiniLM-L6-v2 fully trainable, on 16×224×224 clips (--full-frames, --full-size). Video towers report clips/s, text towers
sentences/s. Each measurement runs one warm-up step, then steps until --min-seconds have passed; when the warm-up
step alone takes longer than that, its time is the measurement. The last line is a JSON object with every number.
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

import torch

from milnce.config import load_config
from milnce.towers.registry import build_text_tower, build_video_tower

VIDEO_TOWERS = ("s3d", "vit")
FRAGMENTS = {"s3d": "s3d", "vit": "vit", "word2vec": "word2vec", "hf": "hf_text"}


def steps_per_second(step, min_seconds: float) -> float:
    start = time.perf_counter()
    step()  # warm-up: allocator, lazy initialisation
    warm_up = time.perf_counter() - start
    if warm_up >= min_seconds:  # a slow step: its own time is the measurement, keeps the benchmark short
        return 1.0 / warm_up
    start = time.perf_counter()
    steps = 0
    while True:
        step()
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return steps / elapsed


def measure(tower: torch.nn.Module, make_inputs, batch: int, min_seconds: float) -> dict:
    inputs = make_inputs()

    def forward():
        with torch.no_grad():
            tower.eval()(*inputs)

    def forward_backward():
        tower.train().zero_grad(set_to_none=True)
        out = tower(*inputs)
        out = out["video_embedding"] if isinstance(out, dict) else out
        out.square().mean().backward()

    return {"params": sum(p.numel() for p in tower.parameters()),
            "trainable": sum(p.numel() for p in tower.parameters() if p.requires_grad),
            "forward": batch * steps_per_second(forward, min_seconds),
            "forward_backward": batch * steps_per_second(forward_backward, min_seconds)}


def bench(name: str, size: str, args, demo_clip) -> dict:
    model = load_config(ROOT / "conf" / "model" / f"{FRAGMENTS[name]}.yaml" if size == "demo" else None).model
    if name in VIDEO_TOWERS:
        model.video_tower = name
        frames, side = demo_clip if size == "demo" else (args.full_frames, args.full_size)
        batch = args.demo_video_batch if size == "demo" else args.full_video_batch
        tower = build_video_tower(model)
        result = measure(tower, lambda: (torch.rand(batch, 3, frames, side, side),), batch, args.min_seconds)
        return {"input": f"{batch}×3×{frames}×{side}×{side}", "unit": "clips/s", **result}

    model.text_tower = name
    batch = args.text_batch
    if name == "word2vec":
        vocab = [f"w{i}" for i in range(args.demo_vocab if size == "demo" else 66249)]
        tower = build_text_tower(model, vocab=vocab)
        length, high = model.word2vec.max_words, len(vocab) + 1
        make_inputs = lambda: (torch.randint(0, high, (batch, length)),)  # noqa: E731
    else:
        tower = build_text_tower(model)
        length = model.hf_text.max_length
        real_tokens = torch.arange(length).view(1, -1) < torch.randint(4, length + 1, (batch, 1))
        ids = torch.randint(1000, 20000, (batch, length)) * real_tokens
        make_inputs = lambda: (ids, real_tokens.long())  # noqa: E731
    result = measure(tower, make_inputs, batch, args.min_seconds)
    return {"input": f"{batch}×{length} ids", "unit": "sentences/s", **result}


def demo_clip_size(args):
    if args.demo_frames and args.demo_size:
        return (args.demo_frames, args.demo_size), "command line"
    demo = ROOT / "conf" / "demo.yaml"
    if demo.is_file():
        data = load_config(demo).data
        return (args.demo_frames or data.num_frames, args.demo_size or data.crop), str(demo.relative_to(ROOT))
    return (args.demo_frames or 16, args.demo_size or 112), "built-in default (no conf/demo.yaml)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--towers", default="s3d,vit,word2vec,hf")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (shared machine: 1)")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--demo-frames", type=int, default=None)
    parser.add_argument("--demo-size", type=int, default=None)
    parser.add_argument("--full-frames", type=int, default=16)
    parser.add_argument("--full-size", type=int, default=224)
    parser.add_argument("--demo-video-batch", type=int, default=4)
    parser.add_argument("--full-video-batch", type=int, default=1)
    parser.add_argument("--text-batch", type=int, default=64)
    parser.add_argument("--demo-vocab", type=int, default=2000, help="words in the demo word2vec vocabulary")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    demo_clip, source = demo_clip_size(args)
    print(f"[bench_towers] {args.threads} thread(s); demo clips {demo_clip[0]}×{demo_clip[1]}² from {source}")

    results = {}
    names = [n.strip() for n in args.towers.split(",") if n.strip()]
    for name in names:
        if name not in FRAGMENTS:
            parser.error(f"--towers: unknown tower '{name}' (valid: {', '.join(FRAGMENTS)})")
        results[name] = {}
        for size in ("demo", "full"):
            try:
                results[name][size] = bench(name, size, args, demo_clip)
            except (ImportError, OSError) as err:  # a tower module or model that is not available here
                results[name][size] = {"error": str(err).splitlines()[0]}
            print(f"[bench_towers] {name} {size}: {results[name][size]}", flush=True)

    def cell(r):
        if "error" in r:
            return f"{'unavailable':>40}"
        return (f"{r['input']:>18} {r['params'] / 1e6:7.2f}M {r['forward']:8.4g} {r['forward_backward']:9.4g}")

    header = f"{'input':>18} {'params':>8} {'fwd':>8} {'fwd+bwd':>9}"
    print(f"\n{'tower':9} {'unit':12} | {'demo':^46} | {'full':^46}")
    print(f"{'':9} {'':12} | {header} | {header}")
    for name in names:
        unit = next((r["unit"] for r in results[name].values() if "unit" in r), "")
        print(f"{name:9} {unit:12} | {cell(results[name]['demo'])} | {cell(results[name]['full'])}")
    print(json.dumps({"threads": args.threads, "demo_clip": list(demo_clip), "towers": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
