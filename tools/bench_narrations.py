#!/usr/bin/env python
"""Benchmark the NarrationIndex at HowTo100M-like scale: build, open, and memory per DataLoader worker.

    python tools/bench_narrations.py [--videos 100000] [--narrations 10000000] [--workers 4] [--samples 20000]

Builds a synthetic index (random times, texts drawn from a pool of phrases) in a temporary directory that is
removed at the end, opens it, then runs two DataLoaders of ``--workers`` forked workers: an "empty" one whose
workers only draw random numbers, and one whose workers each draw ``--samples`` training clips (bag of K=4,
window, seek, K texts decoded) from random videos of the index. Each worker reports its own memory.

Memory per worker is reported four ways, each minus the same figure of an empty worker:
* rss  -- resident pages, including the index's file pages this worker touched. Those pages live once in
  the kernel's page cache and are shared by every worker that maps them, so rss over-counts them.
* uss  -- pages mapped by this process only (psutil); index pages touched by one worker alone still count.
* pss  -- shared pages divided among the processes mapping them.
* anon -- anonymous memory (heap, Python objects; /proc/self/smaps_rollup): what the worker owns outright
  and what would grow if each worker held its own copy of the corpus. This is the number that must stay
  within a few MB; the file-backed part is reclaimable cache, bounded by the index size, not per worker.
The last printed line is a JSON object.
"""
import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from datamodules.narrations import NarrationIndex, TrainingClipSampler  # noqa: E402

FEW_MB = 8.0


def synthetic_videos(num_videos: int, num_narrations: int, seed: int = 0):
    """(video_id, starts, ends, texts) with exactly ``num_narrations`` lines over ``num_videos`` videos."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num_narrations - num_videos, np.full(num_videos, 1.0 / num_videos)) + 1
    vocab = np.array([f"w{j}" for j in range(5000)])
    pool = [" ".join(vocab[rng.integers(0, len(vocab), int(rng.integers(2, 9)))]) for _ in range(20000)]
    for v, n in enumerate(counts):
        starts = np.cumsum(rng.uniform(0.5, 6.0, n))
        picks = rng.integers(0, len(pool), n)
        yield f"synth{v:07d}", starts, starts + rng.uniform(1.0, 8.0, n), [pool[j] for j in picks]


def memory_mb() -> dict:
    import psutil

    info = psutil.Process().memory_full_info()
    out = {"rss": info.rss / 2**20, "uss": info.uss / 2**20, "pss": getattr(info, "pss", float("nan")) / 2**20}
    try:
        with open("/proc/self/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        out["anon"] = int(fields["Anonymous"].split()[0]) / 1024
    except (OSError, KeyError):
        out["anon"] = float("nan")
    return out


def make_datasets(index, samples: int, num_candidates: int, workers: int):
    import multiprocessing

    import torch

    class Probe(torch.utils.data.IterableDataset):
        """Each worker draws ``samples`` clips (or only random numbers when ``index`` is None). All workers
        measure between two barriers, so PSS (which divides shared pages among the live processes) is
        taken with the same processes alive in every worker and in both loaders."""

        def __init__(self, index):
            self.index = index
            self.ready = multiprocessing.get_context("fork").Barrier(workers)
            self.done = multiprocessing.get_context("fork").Barrier(workers)

        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            rng = np.random.default_rng(1000 + (info.id if info else 0))
            before = memory_mb()
            started = time.perf_counter()
            if self.index is None:
                for _ in range(samples):
                    int(rng.integers(1 << 30))
            else:
                sampler = TrainingClipSampler(self.index, num_candidates=num_candidates, min_time=5.0,
                                              clip_seconds=3.2)
                for _ in range(samples):
                    sampler.sample(int(rng.integers(len(self.index))), rng)
            rate = samples / (time.perf_counter() - started)
            self.ready.wait(timeout=600)
            after = memory_mb()
            self.done.wait(timeout=600)
            yield {"pid": os.getpid(), "before": before, "after": after, "samples_per_s": rate}

    return Probe(None), Probe(index)


def run_workers(dataset, workers: int) -> list:
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                         collate_fn=lambda x: x, multiprocessing_context="fork")
    return list(loader)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--narrations", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--samples", type=int, default=20_000, help="clips drawn by each worker")
    parser.add_argument("--num-candidates", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temporary index")
    parser.add_argument("--keep", action="store_true", help="keep the index directory")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.videos <= args.narrations:
        parser.error("need 0 < --videos <= --narrations")
    from tqdm import tqdm

    tmp = Path(tempfile.mkdtemp(prefix="bench_narrations_", dir=args.dir))
    try:
        started = time.perf_counter()
        videos = tqdm(synthetic_videos(args.videos, args.narrations), total=args.videos, unit="video",
                      disable=args.no_progress, desc="building")
        NarrationIndex.build(videos, tmp / "index")
        build_s = time.perf_counter() - started
        build_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        disk_mb = sum(f.stat().st_size for f in (tmp / "index").rglob("*") if f.is_file()) / 2**20

        started = time.perf_counter()
        index = NarrationIndex.open(tmp / "index")
        index.narrations(len(index) - 1)
        open_s = time.perf_counter() - started

        empty_ds, index_ds = make_datasets(index, args.samples, args.num_candidates, args.workers)
        empty = run_workers(empty_ds, args.workers)
        busy = run_workers(index_ds, args.workers)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    kinds = ("rss", "uss", "pss", "anon")
    baseline = {k: float(np.mean([w["after"][k] for w in empty])) for k in kinds}
    workers = []
    for w in busy:
        row = {"pid": w["pid"], "samples_per_s": round(w["samples_per_s"])}
        row.update({f"{k}_delta_mb": round(w["after"][k] - baseline[k], 2) for k in kinds})
        row["anon_growth_in_worker_mb"] = round(w["after"]["anon"] - w["before"]["anon"], 2)
        workers.append(row)
    print(f"built {args.narrations:,} narrations / {args.videos:,} videos in {build_s:.1f} s "
          f"({disk_mb:.0f} MB on disk, builder peak RSS {build_peak_mb:.0f} MB); opened in {open_s * 1e3:.1f} ms")
    print("empty worker (MB): " + ", ".join(f"{k} {baseline[k]:.1f}" for k in kinds))
    for row in workers:
        print(f"worker {row['pid']}: {row['samples_per_s']} clips/s; minus empty worker (MB): " +
              ", ".join(f"{k} {row[f'{k}_delta_mb']:+.1f}" for k in kinds))
    worst = {k: max(row[f"{k}_delta_mb"] for row in workers) for k in kinds}
    report = {"videos": args.videos, "narrations": args.narrations, "build_s": round(build_s, 2),
              "open_s": round(open_s, 4), "index_disk_mb": round(disk_mb, 1),
              "build_peak_rss_mb": round(build_peak_mb, 1), "samples_per_worker": args.samples,
              "empty_worker_mb": {k: round(v, 1) for k, v in baseline.items()}, "workers": workers,
              **{f"max_{k}_delta_mb": v for k, v in worst.items()},
              "within_few_mb": bool(worst["anon"] <= FEW_MB)}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
