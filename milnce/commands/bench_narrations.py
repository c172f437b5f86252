"""Benchmark the NarrationIndex at HowTo100M-like scale: build, open, and memory per DataLoader worker.

    python tools/bench_narrations.py [--videos 100000] [--narrations 10000000] [--workers 4] [--samples 20000]

Builds a synthetic index (random times, texts drawn from a pool of phrases) in a temporary directory that is
removed at the end, opens it, then runs DataLoaders of ``--workers`` forked workers: an "empty" one whose
workers only draw random numbers, and, for each access mode of the index (mmap, pread), one whose workers
each draw ``--samples`` training clips (bag of K=4, window, seek, K texts decoded) from random videos. Each
worker reports its own memory.

Memory per worker is reported four ways, each minus the same figure of an empty worker:
* rss  -- resident pages, including the index's file pages this worker touched. Those pages live once in
  the kernel's page cache and are shared by every worker that maps them, so rss over-counts them.
* uss  -- pages mapped by this process only (psutil); index pages touched by one worker alone still count.
* pss  -- shared pages divided among the processes mapping them.
* anon -- anonymous memory (heap, Python objects; /proc/self/smaps_rollup): what the worker owns outright
  and what would grow if each worker held its own copy of the corpus.
With mmap, anon and uss must stay within a few MB: rss grows towards the index size as a worker touches
pages (shared, reclaimable page cache) and pss towards index size / workers. With pread nothing is mapped,
so rss stays flat as well. The last printed line is a JSON object.
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


import numpy as np

from datamodules.narrations.bags import NarrationIndex, TrainingClipSampler

FEW_MB = 8.0
KINDS = ("rss", "uss", "pss", "anon")


def synthetic_videos(num_videos: int, num_narrations: int, seed: int = 0):
    """(video_id, starts, ends, texts) with exactly ``num_narrations`` lines over ``num_videos`` videos."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num_narrations - num_videos, np.full(num_videos, 1.0 / num_videos)) + 1
    vocab = np.array([f"w{j}" for j in range(5000)])
    pool = [" ".join(vocab[rng.integers(0, len(vocab), int(rng.integers(2, 9)))]) for _ in range(20000)]
    for v, n in enumerate(counts):
        starts = np.cumsum(rng.uniform(0.5, 6.0, n))
        picks = rng.integers(0, len(pool), n).tolist()
        yield f"synth{v:07d}", starts, starts + rng.uniform(1.0, 8.0, n), [pool[j] for j in picks]


class Timed:
    """Wraps an iterator and adds up the time spent producing its items (the synthetic data, not the index)."""

    def __init__(self, items):
        self.items, self.seconds = iter(items), 0.0

    def __iter__(self):
        return self

    def __next__(self):
        started = time.perf_counter()
        try:
            return next(self.items)
        finally:
            self.seconds += time.perf_counter() - started


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


def make_dataset(index, samples: int, num_candidates: int, workers: int):
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

    return Probe(index)


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
        generated = Timed(synthetic_videos(args.videos, args.narrations))
        NarrationIndex.build(tqdm(generated, total=args.videos, unit="video", disable=args.no_progress,
                                  desc="building"), tmp / "index")
        build_s = time.perf_counter() - started - generated.seconds
        build_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        disk_mb = sum(f.stat().st_size for f in (tmp / "index").rglob("*") if f.is_file()) / 2**20

        started = time.perf_counter()
        index = NarrationIndex.open(tmp / "index")
        index.narrations(len(index) - 1)
        open_s = time.perf_counter() - started

        empty = run_workers(make_dataset(None, args.samples, args.num_candidates, args.workers), args.workers)
        busy = {}
        for access in ("mmap", "pread"):
            opened = index if access == "mmap" else NarrationIndex.open(tmp / "index", access=access)
            busy[access] = run_workers(make_dataset(opened, args.samples, args.num_candidates, args.workers),
                                       args.workers)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    baseline = {k: float(np.mean([w["after"][k] for w in empty])) for k in KINDS}
    print(f"built {args.narrations:,} narrations / {args.videos:,} videos in {build_s:.1f} s, not counting "
          f"{generated.seconds:.1f} s generating them "
          f"({disk_mb:.0f} MB on disk, builder peak RSS {build_peak_mb:.0f} MB); opened in {open_s * 1e3:.1f} ms")
    print("empty worker (MB): " + ", ".join(f"{k} {baseline[k]:.1f}" for k in KINDS))
    report = {"videos": args.videos, "narrations": args.narrations, "build_s": round(build_s, 2),
              "generate_s": round(generated.seconds, 2),
              "open_s": round(open_s, 4), "index_disk_mb": round(disk_mb, 1),
              "build_peak_rss_mb": round(build_peak_mb, 1), "samples_per_worker": args.samples,
              "empty_worker_mb": {k: round(v, 1) for k, v in baseline.items()}}
    for access, results in busy.items():
        report[access] = summarise(access, results, baseline)
    report["within_few_mb"] = bool(report["mmap"]["max_anon_delta_mb"] <= FEW_MB
                                   and report["mmap"]["max_uss_delta_mb"] <= FEW_MB
                                   and report["pread"]["max_rss_delta_mb"] <= FEW_MB)
    print(json.dumps(report))
    return 0


def summarise(access: str, results: list, baseline: dict) -> dict:
    rows = []
    for w in results:
        row = {"pid": w["pid"], "samples_per_s": round(w["samples_per_s"])}
        row.update({f"{k}_delta_mb": round(w["after"][k] - baseline[k], 2) for k in KINDS})
        row["anon_growth_in_worker_mb"] = round(w["after"]["anon"] - w["before"]["anon"], 2)
        rows.append(row)
        print(f"{access} worker {row['pid']}: {row['samples_per_s']} clips/s; minus empty worker (MB): " +
              ", ".join(f"{k} {row[f'{k}_delta_mb']:+.1f}" for k in KINDS))
    out = {"workers": rows, "clips_per_s_per_worker": round(float(np.mean([r["samples_per_s"] for r in rows])))}
    out.update({f"max_{k}_delta_mb": max(r[f"{k}_delta_mb"] for r in rows) for k in KINDS})
    return out


if __name__ == "__main__":
    sys.exit(main())
