"""HTTP itself, below the OpenAI API: HTTP/1.0 clients, HEAD, malformed requests, and the timeouts
that keep a slow or silent client from holding a connection. Raw sockets, so that every byte sent
and received is the test's."""

import json
import socket
import time

import pytest

from conftest import MODEL_ID, Server

TIMEOUT = 2  # --http-timeout of this module's server, in seconds


@pytest.fixture(scope="module")
def server():
    s = Server("--ctx", "256", "--max-sequences", "2", "--http-timeout", str(TIMEOUT), np=1)
    yield s
    s.close()


def connect(server):
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


def read_all(connection, limit=30):
    """Everything the server sends until it closes the connection (fails after `limit` seconds)."""
    connection.settimeout(limit)
    data = b""
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk


def split_response(data):
    """(status line, {lowercase header: value}, body bytes) of one raw response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


def test_http_1_0_gets_a_closed_connection_and_no_chunks(server):
    # A plain answer: HTTP/1.0, Connection: close, then the server closes.
    with connect(server) as c:
        c.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        status, headers, body = split_response(read_all(c))
    assert status == "HTTP/1.0 200 OK" and headers.get("connection") == "close", (status, headers)
    assert json.loads(body) == {"status": "ok"}
    # A streamed answer: no chunked encoding (HTTP/1.0 has none); its end is the connection's.
    request = json.dumps({"model": MODEL_ID, "prompt": "1, 2, 3,", "max_tokens": 6, "temperature": 0, "stream": True}).encode()
    with connect(server) as c:
        c.sendall(b"POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(request)
                  + request)
        status, headers, body = split_response(read_all(c))
    assert status == "HTTP/1.0 200 OK" and "transfer-encoding" not in headers, (status, headers)
    events = [e for e in body.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]", body
    # HTTP/1.1 keeps its connection and chunks the stream.
    status, headers, body, closed = server.raw("POST", "/v1/completions", json.loads(request), close_wait=0.5)
    assert status == 200 and headers.get("transfer-encoding") == "chunked" and not closed, headers
    assert body.decode().endswith("data: [DONE]\n\n")


def test_head_works_where_get_does(server):
    for path in ["/health", "/metrics", "/v1/models", "/v1/models/" + MODEL_ID]:
        get_status, get_headers, _, _ = server.raw("GET", path)
        status, headers, body, _ = server.raw("HEAD", path)
        assert (status, body) == (get_status, b""), (path, status, body)
        assert headers.get("content-type") == get_headers.get("content-type"), path
    # Unknown URLs: 404 for both, and no body for HEAD.
    with connect(server) as c:
        c.sendall(b"HEAD /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_all(c)
    first, rest = data.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 404") and rest.startswith(b"HTTP/1.1 200"), data


@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
    (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431),
], ids=["request line", "header line", "content length", "chunk size", "header size"])
def test_malformed_requests_get_an_openai_error_and_a_closed_connection(server, request_bytes, status):
    with connect(server) as c:
        c.sendall(request_bytes)
        line, headers, body = split_response(read_all(c))
    assert line.startswith(f"HTTP/1.1 {status}") and headers.get("connection") == "close", (line, headers)
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and set(error) == {"message", "type", "param", "code"}, error
    assert server.get("/health")[0] == 200


def test_a_client_sending_headers_slowly_is_cut_off(server):
    """One byte of a request's headers every half second: the connection is closed once the
    timeout has passed, long before the headers could end."""
    started = time.monotonic()
    with connect(server) as c:
        request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
        try:
            for byte in request:
                c.sendall(bytes([byte]))
                time.sleep(0.5)
                assert time.monotonic() - started < 5 * TIMEOUT, "the server still holds the connection"
        except (BrokenPipeError, ConnectionResetError):
            pass
        else:
            pytest.fail("every byte was accepted")
    assert time.monotonic() - started >= TIMEOUT - 0.5


def test_a_client_sending_its_body_slowly_gets_408(server):
    """A body trickling in at one byte every 0.3 s never ends within the timeout: 408 with an
    OpenAI error, and the connection is closed."""
    started = time.monotonic()
    with connect(server) as c:
        c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        c.settimeout(0.3)
        data = b""
        try:
            while time.monotonic() - started < 5 * TIMEOUT:
                c.sendall(b" ")
                try:
                    chunk = c.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    break
                data += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass
    line, headers, body = split_response(data)
    assert line.startswith("HTTP/1.1 408"), data
    assert json.loads(body)["error"]["code"] == "request_timeout" and headers.get("connection") == "close"
    assert TIMEOUT - 0.5 <= time.monotonic() - started < 5 * TIMEOUT


def test_idle_connections_are_closed(server):
    """A connection that sends nothing, or nothing after an answer, is closed after the timeout;
    a request answered meanwhile keeps its connection until then."""
    for prelude in [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"]:
        started = time.monotonic()
        with connect(server) as c:
            c.sendall(prelude)
            data = read_all(c, limit=5 * TIMEOUT)
        assert (b"200 OK" in data) == bool(prelude)
        assert TIMEOUT - 0.5 <= time.monotonic() - started < 5 * TIMEOUT


def test_long_answers_are_not_cut_by_the_timeout(server):
    """The timeout is for clients: a completion that takes longer than it is delivered whole."""
    started = time.monotonic()
    status, _, body, _ = server.raw("POST", "/v1/completions", {
        "model": MODEL_ID, "prompt": "1, 2, 3,", "max_tokens": 240, "temperature": 0, "stream": True})
    assert status == 200 and body.decode().endswith("data: [DONE]\n\n")
    if time.monotonic() - started < TIMEOUT:
        pytest.skip("the answer came faster than the timeout on this machine")
