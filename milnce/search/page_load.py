"""A load on the search page: a small index around a large video, and concurrent clients mixing queries, pages,
thumbnails and range requests, each response checked byte for byte; latency percentiles and this process's RSS.

Used by tools/bench_search_page.py and tests/reliability/test_rel_search_page.py. The server runs in a thread of
this process, so the RSS figures cover server and clients together (the clients keep one chunk at a time, and
one copy of the large file to check bodies against, read before the baseline); latencies include the clients'
share of the GIL, so they are upper bounds of what a browser on another process would see.
"""
from __future__ import annotations

import gc
import http.client
import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import av
import numpy as np
import psutil
import torch

from milnce.module import VideoTextModule
from milnce.search.extract import extract

PathLike = Union[str, Path]
MIB = 1 << 20
CHUNK = 64 * 1024
WORDS = ("the", "red", "blue", "circle", "square", "spins", "slides")
# kind → share of the requests
MIX = {"api": 0.30, "page": 0.10, "thumb": 0.10, "range": 0.30, "suffix": 0.05, "whole": 0.10, "head": 0.05}
# A random-weight model of the smallest size the towers take: the page's cost, not a model's, is measured.
TINY_MODEL = {"video_tower": "s3d", "text_tower": "word2vec", "embed_dim": 16,
              "s3d": {"space_to_depth": True, "width_mult": 0.125},
              "word2vec": {"word_dim": 8, "hidden_dim": 16, "max_words": 8}}
TINY_PREPROCESS = {"fps": 4.0, "num_frames": 4, "resize": 32, "crop": 32}


def tiny_search_model(seed: int = 0) -> VideoTextModule:
    torch.manual_seed(seed)
    return VideoTextModule(TINY_MODEL, {"name": "adam", "lr": 1e-3}, vocab=list(WORDS), num_candidates=1,
                           preprocess=TINY_PREPROCESS)


def write_noise_video(path: PathLike, megabytes: float, width: int = 320, height: int = 240, fps: int = 8,
                      seed: int = 0) -> Path:
    """An H.264 mp4 of random frames (they barely compress), at least `megabytes` long: a large file to stream."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = 0
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(fps)}
        while written < megabytes * MIB:
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                written += packet.size
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def build_page_index(root: PathLike, model, file_mb: float = 8.0) -> Tuple[Path, Path]:
    """Two small videos and one of `file_mb` MB under root/videos, indexed into root/index (1 s windows).
    Returns (index dir, the large file)."""
    root = Path(root)
    small = [write_noise_video(root / "videos" / f"small{i}.mp4", 0.05, 64, 48, seed=i + 1) for i in range(2)]
    large = write_noise_video(root / "videos" / "large.mp4", file_mb)
    extract(model, [str(p) for p in [*small, large]], root / "index", window=1.0, stride=1.0, progress=False)
    return root / "index", large


class RssSampler:
    """This process's resident memory every `interval` seconds, in a thread, while used as a context manager."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._proc = psutil.Process()

    def now(self) -> int:
        return self._proc.memory_info().rss

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = self.now()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


class PageLoad:
    """Requests of every kind in MIX against a server at host:port; `check` raises AssertionError on a wrong
    answer. `large_row` is a row of the index whose video is `large_file`."""

    def __init__(self, host: str, port: int, large_row: int, large_file: PathLike, rows: int, timeout: float = 60):
        self.host, self.port, self.large_row, self.rows, self.timeout = host, port, large_row, rows, timeout
        self.data = Path(large_file).read_bytes()

    def request(self, kind: str, rng: np.random.Generator) -> None:
        size, video = len(self.data), f"/video/{self.large_row}"
        words = "%20".join(rng.choice(WORDS, int(rng.integers(1, 5))))
        if kind == "api":
            return self._get(f"/api/search?q={words}&k=5", expect=200, check=_json_list)
        if kind == "page":
            return self._get(f"/?q={words}", expect=200, check=lambda b, h: _contains(b, b"class='card result'"))
        if kind == "thumb":
            return self._get(f"/thumb/{int(rng.integers(0, self.rows))}.jpg", expect=200,
                             check=lambda b, h: _contains(b[:2], b"\xff\xd8"))
        if kind == "whole":
            return self._get(video, expect=200, first=0, last=size - 1)
        if kind == "head":
            return self._get(video, method="HEAD", expect=200, check=lambda b, h: _empty_with_length(b, h, size))
        if kind == "suffix":
            n = int(rng.integers(1, min(size, 512 * 1024)))
            return self._get(video, {"Range": f"bytes=-{n}"}, expect=206, first=size - n, last=size - 1)
        first = int(rng.integers(0, size))
        last = min(size - 1, first + int(rng.integers(0, MIB)))
        return self._get(video, {"Range": f"bytes={first}-{last}"}, expect=206, first=first, last=last)

    def _get(self, path: str, headers: Optional[Dict[str, str]] = None, method: str = "GET", expect: int = 200,
             check=None, first: Optional[int] = None, last: Optional[int] = None) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            assert resp.status == expect, f"{method} {path} {headers}: {resp.status}, expected {expect}"
            if first is None:
                body = resp.read()
                if check is not None:
                    check(body, resp.headers)
                return
            if expect == 206:
                want = f"bytes {first}-{last}/{len(self.data)}"
                assert resp.headers["Content-Range"] == want, f"{path} {headers}: {resp.headers['Content-Range']}"
            offset = first
            while True:   # compare chunk by chunk: the client never holds the body
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                assert chunk == self.data[offset:offset + len(chunk)], f"{path} {headers}: wrong bytes at {offset}"
                offset += len(chunk)
            assert offset == last + 1, f"{path} {headers}: {offset - first} bytes, expected {last + 1 - first}"
        finally:
            conn.close()

    def burst(self, clients: int, per_client: int, seed: int) -> Tuple[List[Tuple[str, float]], List[str]]:
        """`clients` threads × `per_client` requests drawn from MIX: (kind, seconds) per request, and failures."""
        kinds, shares = list(MIX), np.array(list(MIX.values()))
        latencies: List[Tuple[str, float]] = []
        failures: List[str] = []

        def client(i: int) -> None:
            rng = np.random.default_rng([seed, i])
            for kind in rng.choice(kinds, per_client, p=shares / shares.sum()):
                t0 = time.perf_counter()
                try:
                    self.request(str(kind), rng)
                except Exception as err:  # noqa: BLE001 - every failure is counted and named, none stops the load
                    failures.append(f"{kind}: {type(err).__name__}: {err}")
                latencies.append((str(kind), time.perf_counter() - t0))   # list.append is atomic

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return latencies, failures

    def run(self, clients: int = 16, per_client: int = 50, seed: int = 0,
            warm_up: Optional[int] = None) -> Dict[str, Any]:
        """A warm-up burst of `warm_up` (default: per_client) requests per client, then the measured one; latencies,
        failures and RSS.

        The warm-up is there because a fresh process's first concurrent burst grows RSS once, by glibc's malloc
        arenas (one per thread that allocates, up to 8 per core; kept and reused): that growth is reported as
        warmup_rss_growth_mib, and the measured burst's RSS is taken against the memory after it."""
        start_rss = psutil.Process().memory_info().rss
        warm_up = per_client if warm_up is None else int(warm_up)
        _, failures = self.burst(clients, warm_up, seed=seed + 10_000)
        gc.collect()
        sampler = RssSampler()
        baseline = sampler.now()
        t0 = time.perf_counter()
        with sampler:
            latencies, measured_failures = self.burst(clients, per_client, seed)
        seconds = time.perf_counter() - t0
        gc.collect()
        after = sampler.now()
        failures += measured_failures
        flat = [s for _, s in latencies]
        by_kind = {k: [s for kk, s in latencies if kk == k] for k in MIX}
        return {"clients": clients, "requests": len(flat), "failed": len(failures), "failures": failures[:10],
                "seconds": round(seconds, 2), "requests_per_s": round(len(flat) / seconds, 1),
                "p50_ms": round(1000 * float(np.percentile(flat, 50)), 1),
                "p99_ms": round(1000 * float(np.percentile(flat, 99)), 1),
                "p50_ms_by_kind": {k: round(1000 * float(np.percentile(v, 50)), 1) for k, v in by_kind.items() if v},
                "file_mb": round(len(self.data) / MIB, 2), "warmup_requests": clients * warm_up,
                "warmup_rss_growth_mib": round((baseline - start_rss) / MIB, 1),
                "rss_baseline_mib": round(baseline / MIB, 1), "peak_rss_mib": round(sampler.peak / MIB, 1),
                "peak_over_baseline_mib": round((sampler.peak - baseline) / MIB, 1),
                "rss_growth_mib": round((after - baseline) / MIB, 1)}


def largest_row(searcher) -> Tuple[int, Path]:
    """The first row of the index's largest video file (the range requests' target)."""
    sizes: Dict[str, Tuple[int, int]] = {}
    for row, (video, _, _) in enumerate(searcher.index.rows):
        if video not in sizes:
            path = searcher.video_path(row)
            sizes[video] = (path.stat().st_size if path.is_file() else -1, row)
    size, row = max(sizes.values())
    if size < 0:
        raise FileNotFoundError(f"{searcher.index.root}: none of the indexed video files exists")
    return row, searcher.video_path(row)


def _json_list(body: bytes, headers) -> None:
    results = json.loads(body)
    assert isinstance(results, list) and results, f"not a non-empty JSON list: {body[:100]!r}"


def _contains(body: bytes, needle: bytes) -> None:
    assert needle in body, f"{needle!r} not in the response ({len(body)} bytes)"


def _empty_with_length(body: bytes, headers, size: int) -> None:
    assert body == b"" and headers["Content-Length"] == str(size), f"HEAD: {len(body)} bytes, {dict(headers)}"


def summary_lines(result: Dict[str, Any]) -> Sequence[str]:
    return [f"{result['requests']} requests from {result['clients']} clients in {result['seconds']} s "
            f"({result['requests_per_s']}/s), {result['failed']} failed",
            f"latency p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; p50 by kind {result['p50_ms_by_kind']}",
            f"RSS: +{result['warmup_rss_growth_mib']} MiB over the {result['warmup_requests']} warm-up requests, then "
            f"baseline {result['rss_baseline_mib']} MiB, peak {result['peak_rss_mib']} MiB "
            f"(+{result['peak_over_baseline_mib']}), after the load {result['rss_growth_mib']:+} MiB"]
