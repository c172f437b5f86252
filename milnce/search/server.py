"""Text → moment search over a moment index (milnce.search.index): a Searcher, and a small local web page around it.

The page (stdlib http.server) is rendered on the server: a query box, then one card per ranked moment with a poster
thumbnail (the window's middle frame, JPEG, made on demand, the last `thumb_cache` kept: an LRU) and an HTML5 <video>
that plays the indexed file from the moment's start (media fragment #t=start,end). Only files listed in the index
are ever served, by row number, never by a path from the request. Every query is HTML-escaped where shown.

It binds 127.0.0.1 unless given another host, and then warns: the page has no authentication, and whoever reaches
it can search the index and read every indexed video. What it does with what a client sends:
* videos stream in 64 KiB chunks (memory does not grow with the file); one byte range per request as
  milnce.search.byte_ranges says: 206 + Content-Range, 416 + `Content-Range: bytes */size` for a range naming no
  byte or a malformed one; several ranges get the whole file with 200. HEAD sends the headers only.
* GET and HEAD only: other methods get 405 (501 for unknown ones), both with `Allow: GET, HEAD`.
* a URL over MAX_URL_BYTES: 414; a header line over 64 KiB, more than 100 header lines or over MAX_HEADER_BYTES of
  headers: 431; a malformed request line: 400; a URL that is not UTF-8 (raw or %-escaped) or has more than
  MAX_QUERY_FIELDS query fields: 400. A query longer than MAX_QUERY_CHARS is cut there; k is clamped to 1..100.
* each read or write on a connection times out after `request_timeout` seconds (a client that connects and sends
  nothing is dropped); at most `max_connections` connections are served at once, others get 503 and are closed.
* nothing reaches stderr as a traceback: a failed request answers 500 and logs one line (logger milnce.search.server;
  the traceback at DEBUG level); a client that goes away mid-response is a DEBUG line.
"""
from __future__ import annotations

import io
import ipaddress
import json
import logging
import mimetypes
import os
import sys
import threading
import time
import warnings
from functools import lru_cache, partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qsl, quote, urlsplit

from PIL import Image

from milnce.api import encode_text, load_model
from milnce.search.byte_ranges import RangeNotSatisfiable, copy_range, requested_range
from milnce.search.index import MomentIndex
from milnce.search.page_html import render_page, results_json
from datamodules.video.decode import read_clip

PathLike = Union[str, Path]
log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 500
MAX_QUERY_FIELDS = 16
MAX_URL_BYTES = 8 * 1024          # a 500-character query, every character 3 UTF-8 bytes %-escaped, is 4.5 KiB
MAX_HEADER_BYTES = 32 * 1024
REQUEST_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 64
THUMB_CACHE_SIZE = 256            # ~5 KB per 160 px JPEG
THUMB_DECODERS = 2
ALLOW = "GET, HEAD"
OTHER_METHODS = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"}
DISCARD_BYTES, DISCARD_SECONDS, DISCARD_IDLE_S = 4 << 20, 2.0, 0.2
BUSY_RESPONSE = (b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n")


class Searcher:
    """Load the model named by the index (or a given one) once; `search(text, k)` → [{video, start, end, score}]."""

    def __init__(self, index_dir: PathLike, model=None, checkpoint: Optional[PathLike] = None,
                 vocab: Optional[PathLike] = None, device: str = "cpu", thumb_cache: int = THUMB_CACHE_SIZE):
        self.index = MomentIndex(index_dir)
        if model is None:
            ckpt = checkpoint or self.index.settings.get("checkpoint")
            if not ckpt:
                raise ValueError(f"{index_dir}: the index names no checkpoint; pass --checkpoint")
            model = load_model(ckpt, device=device, vocab=vocab)
        self.model = model
        self._lock = threading.Lock()   # one forward at a time (ThreadingHTTPServer)
        if int(thumb_cache) < 0:
            raise ValueError(f"thumb_cache={thumb_cache}: give the number of thumbnails to keep (0: none)")
        self._thumbs = lru_cache(maxsize=int(thumb_cache))(self._render_thumbnail)
        # decodes at once: a burst of cache misses (a page of new results) holds this many decoders, not one each
        self._decoding = threading.BoundedSemaphore(THUMB_DECODERS)

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
        """JPEG of the frame in the middle of the moment (the last `thumb_cache` are kept; failures are not)."""
        return self._thumbs(int(row), int(size))

    def thumbnail_cache_info(self):
        return self._thumbs.cache_info()

    def _render_thumbnail(self, row: int, size: int) -> bytes:
        _, start, end = self.index.rows[row]
        with self._decoding:
            frame = read_clip(self.video_path(row), (float(start) + float(end)) / 2, 1, 1.0, size)[0].numpy()
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=85)
        return buf.getvalue()


def parse_target(target: str) -> Tuple[str, Dict[str, str]]:
    """(path, {name: first value}) of a request target. ValueError for bytes that are not UTF-8, raw or %-escaped,
    and for more than MAX_QUERY_FIELDS fields; %-garbage such as `%zz` stays as typed."""
    try:
        text = target.encode("latin-1").decode("utf-8")   # http.server decoded the request line as latin-1
    except UnicodeError:
        raise ValueError("the URL is not UTF-8") from None
    url = urlsplit(text)
    try:
        pairs = parse_qsl(url.query, keep_blank_values=True, errors="strict", max_num_fields=MAX_QUERY_FIELDS)
    except UnicodeDecodeError:
        raise ValueError("the query has %-escaped bytes that are not UTF-8") from None
    except ValueError:
        raise ValueError(f"more than {MAX_QUERY_FIELDS} query fields") from None
    params: Dict[str, str] = {}
    for key, value in pairs:
        params.setdefault(key, value)
    return url.path, params


def is_loopback(host: str) -> bool:
    """Only this machine can reach `host` (a host name other than localhost may resolve to any address)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    searcher: Searcher
    default_k: int = 12
    distinct: bool = True
    timeout = REQUEST_TIMEOUT_S   # seconds per socket read/write: a connection that sends nothing is dropped

    def log_message(self, fmt, *args):  # quiet; the terminal shows the URL only (stdlib refusals come here too)
        log.debug("%s %s", self.client_address[0], fmt % args)

    def handle_one_request(self):
        self._head_read = self._responded = False
        super().handle_one_request()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        self._head_read = True
        if len(self.path) > MAX_URL_BYTES:
            self.send_error(414, f"the URL is over {MAX_URL_BYTES} bytes")
        elif sum(len(k) + len(v) for k, v in self.headers.items()) > MAX_HEADER_BYTES:
            self.send_error(431, f"the headers are over {MAX_HEADER_BYTES} bytes")
        elif self.command not in ("GET", "HEAD"):
            self.send_error(405 if self.command in OTHER_METHODS else 501, f"this page only answers {ALLOW}")
        else:
            return True
        return False

    def send_response(self, code, message=None):
        self._responded = True
        super().send_response(code, message)

    def send_error(self, code, message=None, explain=None):
        """Plain text, no traceback; then read what the client is still sending (bounded) so that closing does not
        reset the connection before the client reads the answer."""
        phrase = self.responses.get(code, ("Error",))[0]
        text = f"{code} {phrase}" + (f": {str(message)[:200]}" if message and message != phrase else "") + "\n"
        self.log_message("refused: %s", text.strip())
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # the default before a version is read: a refusal has a status line
            self.request_version = "HTTP/1.0"
        extra = {"Connection": "close", **({"Allow": ALLOW} if code in (405, 501) else {})}
        self._send(code, text.encode("utf-8", "replace"), "text/plain; charset=utf-8", extra)
        headers = getattr(self, "headers", None) if self._head_read else None
        if not self._head_read or (headers is not None and (headers.get("Content-Length", "0").strip() != "0"
                                                            or "Transfer-Encoding" in headers)):
            self._discard_input()

    def _discard_input(self) -> None:
        deadline, left = time.monotonic() + DISCARD_SECONDS, DISCARD_BYTES
        try:
            self.connection.settimeout(DISCARD_IDLE_S)
            while left > 0 and time.monotonic() < deadline:
                data = self.rfile.read1(min(1 << 16, left))
                if not data:
                    break
                left -= len(data)
        except OSError:  # the client stopped sending (timeout) or went away
            pass

    def _send(self, code: int, body: bytes, ctype: str, extra: Optional[Dict[str, str]] = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
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
        try:
            self._route()
        except ConnectionError as err:  # the client went away mid-response
            self.close_connection = True
            self.log_message("client gone: %s", err)
        except Exception as err:  # noqa: BLE001 - one failed request answers 500, never a traceback or a dead page
            self.close_connection = True
            log.error("search page: %s %s failed: %s: %s", self.command, self.path[:200], type(err).__name__, err)
            log.debug("search page: traceback", exc_info=True)
            if not self._responded:
                self.send_error(500, type(err).__name__)

    def _route(self):
        try:
            path, params = parse_target(self.path)
        except ValueError as err:
            return self.send_error(400, str(err))
        query = params.get("q", "")[:MAX_QUERY_CHARS]
        try:
            k = max(1, min(100, int(params.get("k", self.default_k))))
        except ValueError:
            k = self.default_k
        if path == "/":
            results = self.searcher.search(query, k, self.distinct) if query.strip() else None
            info = f"{len(self.searcher.index)} moments from {len(self.searcher.index.videos)} videos"
            self._send(200, render_page(query, results, k, info).encode(), "text/html; charset=utf-8")
        elif path == "/api/search":
            body = json.dumps(results_json(self.searcher.search(query, k, self.distinct))).encode()
            self._send(200, body, "application/json")
        elif path.startswith("/thumb/") and path.endswith(".jpg"):
            row = self._row(path[len("/thumb/"):-len(".jpg")])
            if row is None:
                return self._send(404, b"no such moment", "text/plain")
            try:
                jpeg = self.searcher.thumbnail(row)
            except Exception as err:  # noqa: BLE001 - a broken file gives a 404, not a dead server
                return self._send(404, f"thumbnail failed: {err}".encode(), "text/plain; charset=utf-8")
            self._send(200, jpeg, "image/jpeg", {"Cache-Control": "max-age=3600"})
        elif path.startswith("/video/"):
            row = self._row(path[len("/video/"):])
            if row is None:
                return self._send(404, b"no such moment", "text/plain")
            self._send_file(self.searcher.video_path(row))
        else:
            self._send(404, b"not found", "text/plain")

    def _send_file(self, path: Path) -> None:
        """The whole file (200) or one byte range (206; browsers seek in <video> with Range requests), streamed."""
        try:
            f = open(path, "rb")
        except OSError:
            return self._send(404, b"video file missing", "text/plain")
        with f:
            size = os.fstat(f.fileno()).st_size
            try:
                rng = requested_range(self.headers.get_all("Range") or [], size)
            except RangeNotSatisfiable as err:
                return self._send(416, f"{err}\n".encode(), "text/plain; charset=utf-8",
                                  {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
            first, last = rng or (0, size - 1)
            self.send_response(206 if rng else 200)
            self.send_header("Content-Type", mimetypes.guess_type(str(path))[0] or "application/octet-stream")
            self.send_header("Content-Length", str(last - first + 1))
            self.send_header("Accept-Ranges", "bytes")
            if rng:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if self.command != "HEAD" and copy_range(f, self.wfile, first, last - first + 1) < last - first + 1:
                self.close_connection = True
                log.warning("search page: %s shrank while being sent", path)


class SearchPageServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once (others: 503), errors reported in one line."""

    daemon_threads = True
    request_queue_size = 128   # listen backlog: the default 5 drops SYNs of a burst (1 s retransmit each)

    def __init__(self, address, handler, max_connections: int = MAX_CONNECTIONS):
        if int(max_connections) < 1:
            raise ValueError(f"max_connections={max_connections}: must be at least 1")
        self._slots = threading.BoundedSemaphore(int(max_connections))
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(BUSY_RESPONSE)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        log.warning("search page: connection from %s ended: %s: %s", client_address[0], type(err).__name__, err)
        log.debug("search page: traceback", exc_info=True)


def make_server(searcher: Searcher, host: str = "127.0.0.1", port: int = 8765, k: int = 12,
                distinct: bool = True, request_timeout: float = REQUEST_TIMEOUT_S,
                max_connections: int = MAX_CONNECTIONS) -> SearchPageServer:
    """distinct: the page shows non-overlapping moments (a person wants k different events, not one event k
    times); the command line returns the raw top k unless --distinct. A host other than loopback warns."""
    if not is_loopback(host):
        warnings.warn(f"the search page binds {host or 'every address'}: it has no authentication, and anyone who "
                      "can reach it can search the index and download every indexed video", stacklevel=2)
    if not float(request_timeout) > 0:
        raise ValueError(f"request_timeout={request_timeout}: must be a positive number of seconds")
    handler = type("SearchHandler", (_Handler,), {"searcher": searcher, "default_k": int(k),
                                                  "distinct": bool(distinct), "timeout": float(request_timeout)})
    return SearchPageServer((host, port), handler, max_connections)


def page_url(server: ThreadingHTTPServer, query: str = "") -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/" + (f"?q={quote(query)}" if query else "")


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=partial(server.serve_forever, poll_interval=0.1), daemon=True)
    thread.start()
    return thread
