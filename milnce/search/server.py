"""Text → moment search over a moment index (milnce.search.index): a Searcher, and a small local web page around it.

The page (stdlib http.server, 127.0.0.1 by default) is rendered on the server: a query box, then one card per
ranked moment with a poster thumbnail (the window's middle frame, JPEG, made on demand and cached) and an HTML5
<video> that plays the indexed file from the moment's start (media fragment #t=start,end). Only files listed in the
index are ever served, by row number, never by a path from the request. Every query is HTML-escaped where shown.
"""
from __future__ import annotations

import html
import io
import json
import mimetypes
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Union
from urllib.parse import parse_qs, quote, urlparse

from milnce.api import encode_text, load_model
from milnce.search.index import MomentIndex, read_settings
from datamodules.video.decode import read_clip

PathLike = Union[str, Path]
MAX_QUERY_CHARS = 500


class Searcher:
    """Load the model named by the index (or a given one) once; `search(text, k)` → [{video, start, end, score}]."""

    def __init__(self, index_dir: PathLike, model=None, checkpoint: Optional[PathLike] = None,
                 vocab: Optional[PathLike] = None, device: str = "cpu"):
        self.index = MomentIndex(index_dir)
        if model is None:
            ckpt = checkpoint or read_settings(index_dir).get("checkpoint")
            if not ckpt:
                raise ValueError(f"{index_dir}: the index names no checkpoint; pass --checkpoint")

            model = load_model(ckpt, device=device, vocab=vocab)
        self.model = model
        self._lock = threading.Lock()   # one forward at a time (ThreadingHTTPServer)
        self._thumbs: Dict[int, bytes] = {}

    def search(self, text: str, k: int = 10, distinct: bool = False) -> List[Dict[str, Any]]:
        if not text.strip():
            return []
        with self._lock:
            query = encode_text(self.model, [text])
        return self.index.search(query[0], k, distinct=distinct)

    def video_path(self, row: int) -> Path:
        """The row's video file; a relative path is taken from the folder the extraction ran in."""
        path = Path(self.index.rows[row][0])
        base = self.index.settings.get("base_dir")
        return path if path.is_absolute() or not base else Path(base) / path

    def thumbnail(self, row: int, size: int = 160) -> bytes:
        """JPEG of the frame in the middle of the moment (cached)."""
        if row not in self._thumbs:
            from PIL import Image


            _, start, end = self.index.rows[row]
            frame = read_clip(self.video_path(row), (float(start) + float(end)) / 2, 1, 1.0, size)[0].numpy()
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=85)
            self._thumbs[row] = buf.getvalue()
        return self._thumbs[row]


def results_json(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The CLI/HTTP contract: {video, start, end, score} per moment."""
    return [{"video": r["video"], "start": r["start"], "end": r["end"], "score": round(r["score"], 6)}
            for r in results]


def _fmt_time(t: float) -> str:
    m, s = divmod(float(t), 60)
    return f"{int(m)}:{s:04.1f}"


PAGE_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
form{margin-bottom:18px} input[type=text]{width:420px;font-size:16px;padding:6px}
button{font-size:16px;padding:6px 14px} .grid{display:flex;flex-wrap:wrap;gap:14px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;width:240px}
.card video{width:240px;height:180px;background:#000;display:block}
.meta{font-size:13px;margin-top:6px;word-break:break-all} .score{color:#555}
.empty{color:#777}
"""


def render_page(query: str, results: Optional[List[Dict[str, Any]]], k: int, info: str = "") -> str:
    q = html.escape(query, quote=True)
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>{'milnce search' + (' – ' + q if q else '')}</title><style>{PAGE_STYLE}</style></head><body>",
             "<h2>milnce moment search</h2>",
             "<form method='get' action='/' id='search-form'>",
             f"<input type='text' name='q' id='query' value='{q}' placeholder='e.g. the red circle spins' autofocus>",
             f"<input type='hidden' name='k' value='{int(k)}'> <button type='submit' id='go'>Search</button></form>",
             f"<div class='info'>{html.escape(info)}</div>"]
    if results is not None:
        parts.append(f"<p id='summary'>{len(results)} moments for <b class='query'>{q}</b></p>")
        if not results:
            parts.append("<p class='empty'>no results</p>")
        parts.append("<div class='grid' id='results'>")
        for rank, r in enumerate(results, 1):
            row, start, end = r["row"], float(r["start"]), float(r["end"])
            name = html.escape(Path(r["video"]).name)
            src = f"/video/{row}#t={start:.2f},{end:.2f}"
            parts.append(
                f"<div class='card result' data-rank='{rank}'>"
                f"<video controls preload='none' poster='/thumb/{row}.jpg' src='{html.escape(src)}'></video>"
                f"<div class='meta'>#{rank} <b>{name}</b><br>{_fmt_time(start)}–{_fmt_time(end)} "
                f"<span class='score'>score {r['score']:.3f}</span></div></div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)


class _Handler(BaseHTTPRequestHandler):
    searcher: Searcher
    default_k: int = 12
    distinct: bool = True

    def log_message(self, fmt, *args):  # quiet; the terminal shows the URL only
        pass

    def _send(self, code: int, body: bytes, ctype: str, extra: Optional[Dict[str, str]] = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _row(self, text: str) -> Optional[int]:
        try:
            row = int(text)
        except ValueError:
            return None
        return row if 0 <= row < len(self.searcher.index.rows) else None

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlparse(self.path)
        params = parse_qs(url.query)
        query = (params.get("q") or [""])[0][:MAX_QUERY_CHARS]
        try:
            k = max(1, min(100, int((params.get("k") or [self.default_k])[0])))
        except ValueError:
            k = self.default_k
        if url.path == "/":
            results = self.searcher.search(query, k, self.distinct) if query.strip() else None
            info = f"{len(self.searcher.index)} moments from {len(self.searcher.index.videos)} videos"
            self._send(200, render_page(query, results, k, info).encode(), "text/html; charset=utf-8")
        elif url.path == "/api/search":
            body = json.dumps(results_json(self.searcher.search(query, k, self.distinct))).encode()
            self._send(200, body, "application/json")
        elif url.path.startswith("/thumb/") and url.path.endswith(".jpg"):
            row = self._row(url.path[len("/thumb/"):-len(".jpg")])
            if row is None:
                return self._send(404, b"no such moment", "text/plain")
            try:
                self._send(200, self.searcher.thumbnail(row), "image/jpeg", {"Cache-Control": "max-age=3600"})
            except Exception as err:  # noqa: BLE001 - a broken file gives a 404, not a dead server
                self._send(404, f"thumbnail failed: {err}".encode(), "text/plain")
        elif url.path.startswith("/video/"):
            row = self._row(url.path[len("/video/"):])
            if row is None:
                return self._send(404, b"no such moment", "text/plain")
            self._send_file(self.searcher.video_path(row))
        else:
            self._send(404, b"not found", "text/plain")

    def _send_file(self, path: Path) -> None:
        """Whole file or one byte range (browsers seek in <video> with Range requests)."""
        if not path.is_file():
            return self._send(404, b"video file missing", "text/plain")
        size = path.stat().st_size
        ctype = mimetypes.guess_type(str(path))[0] or "application/octet-stream"
        rng = self.headers.get("Range", "")
        start, end = 0, size - 1
        if rng.startswith("bytes="):
            a, _, b = rng[len("bytes="):].split(",")[0].partition("-")
            try:
                start = int(a) if a else max(0, size - int(b))
                end = int(b) if a and b else size - 1
            except ValueError:
                start, end = 0, size - 1
            end = min(end, size - 1)
            if start > end:
                return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        headers = {"Accept-Ranges": "bytes"}
        code = 200
        if rng.startswith("bytes="):
            code = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(code, body, ctype, headers)


def make_server(searcher: Searcher, host: str = "127.0.0.1", port: int = 8765, k: int = 12,
                distinct: bool = True) -> ThreadingHTTPServer:
    """distinct: the page shows non-overlapping moments (a person wants k different events, not one event k
    times); the command line returns the raw top k unless --distinct."""
    handler = type("SearchHandler", (_Handler,), {"searcher": searcher, "default_k": int(k),
                                                  "distinct": bool(distinct)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def page_url(server: ThreadingHTTPServer, query: str = "") -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/" + (f"?q={quote(query)}" if query else "")


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=partial(server.serve_forever, poll_interval=0.1), daemon=True)
    thread.start()
    return thread
