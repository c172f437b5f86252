"""The search page under hostile requests, on 127.0.0.1: each case gets its documented status (a clean 4xx, or the
documented clamp), never a traceback, and the next normal request is answered at once."""
import http.client
import logging
import socket
import threading
import time
import warnings

import pytest

from milnce.search.page_load import PageLoad, build_page_index, largest_row, tiny_search_model
from milnce.search.server import (MAX_QUERY_CHARS, MAX_QUERY_FIELDS, MAX_URL_BYTES, Searcher, make_server,
                                  serve_in_thread)

TIMEOUT_S = 0.5     # the handler's socket timeout in these tests (default 30 s)
PROMPT_S = 2.0      # "at once": a normal request after a hostile one, on a loaded 2-core machine


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    model = tiny_search_model()
    index_dir, large = build_page_index(root, model, file_mb=3.0)
    searcher = Searcher(index_dir, model=model, thumb_cache=2)
    server = make_server(searcher, port=0, request_timeout=TIMEOUT_S)
    serve_in_thread(server)
    row, _ = largest_row(searcher)
    yield {"server": server, "searcher": searcher, "large": large, "data": large.read_bytes(), "row": row,
           "port": server.server_address[1]}
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_traceback(capfd, caplog):
    caplog.set_level(logging.INFO, logger="milnce.search.server")
    yield
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]


def raw(port, data: bytes, read_timeout: float = 10.0):
    """Send bytes as they are; (status, headers dict lower-cased, body) of the answer (read until the close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def get(port, path, headers=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def assert_healthy(port):
    t0 = time.perf_counter()
    status, _, body = get(port, "/api/search?q=the%20red%20circle&k=2")
    assert status == 200 and body.startswith(b"[{"), (status, body[:200])
    assert time.perf_counter() - t0 < PROMPT_S


@pytest.mark.parametrize("case, request_bytes, status", [
    ("URL over MAX_URL_BYTES", b"GET /?q=" + b"a" * (MAX_URL_BYTES + 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("1 MB query in the URL", b"GET /?q=" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("header line over 64 KiB", b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n", 431),
    ("101 header lines", b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n", 431),
    ("40 KB of headers", b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"c" * 2000) for i in range(20))
     + b"\r\n", 431),
    ("garbage request line", b"GARBAGE\r\n\r\n", 400),
    ("bad HTTP version", b"GET / HTTP/x.y\r\n\r\n", 400),
    ("raw non-UTF-8 query bytes", b"GET /?q=\xff\xfe HTTP/1.1\r\n\r\n", 400),
    ("%-escaped non-UTF-8 query", b"GET /?q=%ff%fe%c3 HTTP/1.1\r\n\r\n", 400),
    ("too many query fields", b"GET /api/search?" + b"&".join(b"f%d=1" % i for i in range(MAX_QUERY_FIELDS + 1))
     + b" HTTP/1.1\r\n\r\n", 400),
    ("POST with a 3 MB body", b"POST /api/search HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (3 << 20)
     + b"x" * (3 << 20), 405),
    ("unknown method", b"BREW / HTTP/1.1\r\n\r\n", 501),
    ("no such row", b"GET /video/999999 HTTP/1.1\r\n\r\n", 404),
    ("%-escaped path", b"GET /video/%2e%2e%2fetc HTTP/1.1\r\n\r\n", 404),
    ("negative thumbnail row", b"GET /thumb/-1.jpg HTTP/1.1\r\n\r\n", 404),
])
def test_hostile_request_gets_its_status_then_page_answers(page, case, request_bytes, status):
    got, headers, body = raw(page["port"], request_bytes)
    assert got == status, (case, got, body[:200])
    assert b"Traceback" not in body and int(headers["content-length"]) == len(body)
    if status in (405, 501):
        assert headers["allow"] == "GET, HEAD"
    assert_healthy(page["port"])


def test_refusal_reads_what_the_client_still_sends(page):
    """A refused request whose body is still arriving: the server reads it (bounded) before closing, so the client's
    writes do not meet a reset and it gets the answer."""
    with socket.create_connection(("127.0.0.1", page["port"]), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 200000\r\n\r\n" + b"x" * 1000)
        time.sleep(0.1)
        for _ in range(199):
            sock.sendall(b"x" * 1000)
        answer = sock.recv(100)
    assert answer.startswith(b"HTTP/1.0 405")
    assert_healthy(page["port"])


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_other_methods_get_405_with_allow(page, method):
    status, headers, _ = get(page["port"], "/", method=method)
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert_healthy(page["port"])


def test_ranges_on_a_large_file(page):
    data, size, video = page["data"], len(page["data"]), f"/video/{page['row']}"
    assert size > 3 << 20
    served = {   # Range → (status, first, last) of the bytes served; None: 416
        "bytes=0-99": (206, 0, 99), "bytes=100-": (206, 100, size - 1), "bytes=-500": (206, size - 500, size - 1),
        f"bytes=-{10 * size}": (206, 0, size - 1), f"bytes=10-{10 * size}": (206, 10, size - 1),
        f"bytes={size - 1}-{size - 1}": (206, size - 1, size - 1), "Bytes = 5-6": (206, 5, 6),
        "bytes=0-1,5-9": (200, 0, size - 1), "bytes=0-0,-1": (200, 0, size - 1), "items=0-5": (200, 0, size - 1),
        "bytes=-0": None, "bytes=500-100": None, f"bytes={size}-": None, f"bytes={size + 10}-{size + 20}": None,
        "bytes=abc": None, "bytes=1-2-3": None, "bytes=-": None, "bytes=": None, "bytes=+1-2": None,
        "bytes=0x10-0x20": None, "bytes=0-" + "9" * 5000: None,
    }
    for rng, want in served.items():
        status, headers, body = get(page["port"], video, {"Range": rng})
        if want is None:
            assert status == 416 and headers["content-range"] == f"bytes */{size}", (rng, status, headers)
        else:
            code, first, last = want
            assert status == code, (rng, status)
            assert body == data[first:last + 1] and headers["content-length"] == str(last + 1 - first), rng
            assert headers["accept-ranges"] == "bytes"
            assert headers.get("content-range") == (f"bytes {first}-{last}/{size}" if code == 206 else None), rng
    assert_healthy(page["port"])
    status, headers, body = raw(page["port"], f"GET {video} HTTP/1.1\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n"
                                .encode())
    assert status == 200 and body == data          # two Range headers: the whole file
    status, headers, body = get(page["port"], video, {"Range": "bytes=10-19"}, method="HEAD")
    assert status == 206 and body == b"" and headers["content-range"] == f"bytes 10-19/{size}"
    status, headers, body = get(page["port"], video, method="HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == str(size)


def test_query_bytes_and_lengths(page):
    port = page["port"]
    status, _, body = get(port, "/?q=%zz%25%00red%")       # %-garbage stays as typed, escaped on the page
    assert status == 200 and b"%zz%\x00red%" in body.replace(b"&#x27;", b"'")
    status, _, body = raw(port, "GET /?q=café HTTP/1.1\r\n\r\n".encode("utf-8"))
    assert status == 200 and "café".encode() in body
    status, _, body = get(port, "/?q=" + "a" * (MAX_QUERY_CHARS * 6))   # clamped, not refused
    assert status == 200 and b"a" * MAX_QUERY_CHARS in body and b"a" * (MAX_QUERY_CHARS + 1) not in body
    for k, n in (("abc", None), ("99999999", None), ("-5", 1), ("9" * 5000, None)):
        status, _, body = get(port, f"/api/search?q=red&k={k}")
        assert status == 200 and (n is None or body.count(b'"video"') == n), (k, status)
    assert_healthy(port)


def test_idle_connections_are_dropped_and_do_not_block_the_page(page):
    port, idle = page["port"], []
    try:
        for _ in range(20):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        half = socket.create_connection(("127.0.0.1", port), timeout=10)
        half.sendall(b"GET /api/sea")         # a request line that never ends
        idle.append(half)
        assert_healthy(port)                  # answered while 21 connections hang
        t0 = time.perf_counter()
        for sock in idle:                     # each dropped by the server after its timeout: EOF, no answer
            assert sock.recv(100) == b""
        assert time.perf_counter() - t0 < TIMEOUT_S + PROMPT_S
    finally:
        for sock in idle:
            sock.close()
    assert_healthy(port)


def test_connections_over_the_cap_get_503(page):
    server = make_server(page["searcher"], port=0, request_timeout=1.0, max_connections=4)
    serve_in_thread(server)
    port, idle = server.server_address[1], []
    try:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
        time.sleep(0.2)   # let the server accept them
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            assert extra.recv(100).startswith(b"HTTP/1.0 503")
        for sock in idle:
            assert sock.recv(100) == b""
        assert_healthy(port)
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()


def test_client_leaving_mid_download_and_a_failing_search(page, monkeypatch, caplog):
    port = page["port"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /video/{page['row']} HTTP/1.1\r\n\r\n".encode())
        assert sock.recv(10).startswith(b"HTTP/1.0 2")
    assert_healthy(port)

    def broken(*args, **kwargs):
        raise RuntimeError("encoder exploded")
    monkeypatch.setattr(page["searcher"], "search", broken)
    status, _, body = get(port, "/api/search?q=red")
    assert status == 500 and b"RuntimeError" in body and b"exploded" not in body
    assert [r.levelno for r in caplog.records if "encoder exploded" in r.getMessage()] == [logging.ERROR]
    monkeypatch.undo()
    assert_healthy(port)


def test_thumbnail_cache_is_bounded(page):
    searcher, port = page["searcher"], page["port"]
    rows = list(range(min(5, len(searcher.index))))
    for row in rows:
        status, _, body = get(port, f"/thumb/{row}.jpg")
        assert status == 200 and body[:2] == b"\xff\xd8"
    info = searcher.thumbnail_cache_info()
    assert info.maxsize == 2 and info.currsize == 2
    get(port, f"/thumb/{rows[-1]}.jpg")
    assert searcher.thumbnail_cache_info().hits == info.hits + 1


def test_binds_loopback_unless_told_and_then_warns(page):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for host in ("127.0.0.1", "localhost"):
            make_server(page["searcher"], host=host, port=0).server_close()
    with pytest.warns(UserWarning, match="no authentication"):
        make_server(page["searcher"], host="0.0.0.0", port=0).server_close()


def test_small_concurrent_burst(page):
    load = PageLoad("127.0.0.1", page["port"], page["row"], page["large"], rows=len(page["searcher"].index))
    latencies, failures = load.burst(clients=4, per_client=10, seed=1)
    assert len(latencies) == 40 and failures == []
    assert_healthy(page["port"])


def test_concurrent_hostile_and_normal_requests(page):
    """Hostile requests from 4 threads while 4 others query: every normal request succeeds."""
    port, failures = page["port"], []

    def hostile():
        for _ in range(5):
            raw(port, b"GET /?q=" + b"z" * 200_000 + b" HTTP/1.1\r\n\r\n")
            raw(port, b"GET /?q=%ff HTTP/1.1\r\n\r\n")

    def normal():
        for _ in range(5):
            status, _, _ = get(port, "/api/search?q=blue")
            if status != 200:
                failures.append(status)

    threads = [threading.Thread(target=f) for f in (hostile, normal) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
