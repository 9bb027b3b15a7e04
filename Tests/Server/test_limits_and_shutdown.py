"""API keys, the bounded queue, clients that leave mid-stream, and shutdown by signal: each with a
server of its own under `mpirun -np 2`."""

import http.client
import json
import os
import signal
import socket
import threading
import time
import urllib.parse

import openai
import pytest

from conftest import MODEL_ID, Server, metric, openai_client

# Counting continues for as long as it is allowed to: a request that keeps its sequence busy.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


class EventStream:
    """A streamed completion read line by line with the standard library, on its own connection,
    so that closing it is a client leaving mid-stream."""

    def __init__(self, s, body, api_key=None):
        url = urllib.parse.urlparse(s.url)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = "Bearer " + api_key
        self.connection.request("POST", "/v1/completions", json.dumps({**body, "stream": True}), headers)
        self.response = self.connection.getresponse()
        assert self.response.status == 200, self.response.read()

    def lines(self):
        """The non-empty lines, until the server ends the stream."""
        while True:
            line = self.response.readline()
            if not line:
                return
            if line.strip():
                yield line.decode().strip()

    def leave(self):
        """Ends the connection, as a client that goes away; a thread reading it sees the end of the
        stream (a bare close() from another thread would not wake it, nor end the connection)."""
        if self.connection.sock is not None:
            try:
                self.connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the server closed it already

    def close(self):
        self.leave()
        self.connection.close()


def wait_for(condition, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def small_server():
    """One sequence, one queue place, an API key."""
    s = Server("--max-sequences", "1", "--max-queued", "1", "--ctx", "512", "--api-key", "sesame")
    yield s
    s.close()


def test_api_key(small_server):
    s = small_server
    status, missing = s.get("/v1/models")
    assert status == 401 and "Authorization: Bearer" in missing["error"]["message"]
    with pytest.raises(openai.AuthenticationError) as wrong:
        openai_client(s, api_key="open").chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert wrong.value.body["code"] == "invalid_api_key"
    answer = openai_client(s, api_key="sesame").chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0)
    assert answer.usage.completion_tokens >= 1
    # Health checks and scrapers need no key.
    assert s.get("/health")[0] == 200 and s.get("/metrics")[0] == 200
    values = s.metrics()
    assert metric(values, "medusa_http_requests_total", path="/v1/models", status="401") == 1
    assert metric(values, "medusa_http_requests_total", path="/v1/chat/completions", status="401") == 1


def spellings(path):
    """Ways of writing `path` in a request line: the ones Hummingbird's router dispatches to the
    same route (it skips empty segments: repeated, leading and trailing slashes; it takes the path
    of an absolute-form target and ignores query and fragment) and ones it must not (dot segments,
    case, percent-encoding, parameters)."""
    rest = path.removeprefix("/v1")
    return [
        path, "/" + path, path + "/", path.replace("/", "//"), "///" + path.strip("/").replace("/", "///") + "///",
        path.lstrip("/"), "http://localhost" + path, "http://localhost/" + path, "http://localhost" + path + "/",
        path + "?x=1", "/" + path + "?", path + "#f", path + ";p=1",
        "/./" + path.lstrip("/"), "/v1/." + rest, "/x/.." + path, "/v1/x/.." + rest, "/V1" + rest, path.upper(),
        "/%76%31" + rest, "/v1%2F" + rest.lstrip("/"), "/v1" + rest.replace("/", "%2F"),
    ]


def test_api_key_on_every_path_spelling(small_server):
    """Whatever spelling of a /v1 route the router dispatches, the key is checked: without it (or
    with a wrong one) the answer is 401, never the route's; no spelling is answered without it."""
    s = small_server
    key = {"Authorization": "Bearer sesame"}
    chat = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    text = {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 1}
    routes = [("GET", "/v1/models", b""), ("GET", "/v1/models/" + MODEL_ID, b""),
              ("POST", "/v1/chat/completions", chat), ("POST", "/v1/completions", text)]
    tokens = lambda: metric(s.metrics(), "medusa_prompt_tokens_total")  # noqa: E731
    for method, path, body in routes:
        before = tokens()
        assert s.raw(method, path, body, headers=key)[0] == 200
        per_request = tokens() - before
        dispatched = []
        for target in spellings(path):
            with_key = s.raw(method, target, body, headers=key)[0]
            without = s.raw(method, target, body)[0]
            wrong = s.raw(method, target, body, headers={"Authorization": "Bearer sesamE"})[0]
            assert without in (400, 401, 404) and wrong in (400, 401, 404), (method, target, with_key, without, wrong)
            if with_key == 200:
                dispatched.append(target)
                assert without == 401 and wrong == 401, (method, target, with_key, without, wrong)
        # The router's normalisation is what this test is about: doubled slashes reach the route.
        assert "/" + path in dispatched and path.replace("/", "//") in dispatched, dispatched
        # Only the requests with the key were computed.
        assert tokens() - before == per_request * (1 + len(dispatched)), (path, dispatched)


def test_queue_limit_and_disconnect(small_server):
    """With the only sequence busy and the only queue place taken, the next request gets 429; a
    client that leaves mid-stream frees its sequence, so the waiting request runs at once."""
    s = small_server
    client = openai_client(s, api_key="sesame")
    generated_before = metric(s.metrics(), "medusa_generated_tokens_total")

    # A: streams a long count and holds the sequence.
    a = EventStream(s, {"model": MODEL_ID, "prompt": COUNTING, "max_tokens": 400, "temperature": 0}, api_key="sesame")
    assert next(a.lines()).startswith("data: ")
    wait_for(lambda: metric(s.metrics(), "medusa_active_sequences") == 1, what="A to be decoding")

    # B: waits in the queue.
    result = {}

    def queued():
        result["answer"] = client.completions.create(model=MODEL_ID, prompt="Hello", max_tokens=3, temperature=0)

    waiter = threading.Thread(target=queued)
    waiter.start()
    wait_for(lambda: metric(s.metrics(), "medusa_queued_sequences") == 1, what="B to be queued")

    # C: no room anywhere.
    with pytest.raises(openai.RateLimitError) as busy:
        client.completions.create(model=MODEL_ID, prompt="Hello", max_tokens=3)
    assert busy.value.status_code == 429
    assert "busy" in busy.value.body["message"] and busy.value.body["code"] == "queue_full"
    assert busy.value.response.headers.get("retry-after") == "1"

    # A leaves mid-stream.
    a.close()

    waiter.join(timeout=60)
    assert not waiter.is_alive(), "B never ran: A's sequence was not freed"
    assert result["answer"].usage.completion_tokens == 3
    wait_for(lambda: metric(s.metrics(), "medusa_active_sequences") == 0, what="the server to be idle")
    generated = metric(s.metrics(), "medusa_generated_tokens_total") - generated_before
    assert generated < 400, f"A was decoded to its end ({generated} tokens) after its client left"
    assert metric(s.metrics(), "medusa_http_requests_total", path="/v1/completions", status="429") == 1


def start_stream(s, max_tokens):
    """Starts a streamed count in a thread; returns (stream, thread, list of received events)."""
    events = []
    stream = EventStream(s, {"model": MODEL_ID, "prompt": COUNTING, "max_tokens": max_tokens, "temperature": 0})

    def run():
        try:
            for line in stream.lines():
                events.append(line)
        except OSError:
            pass  # the test made the client leave
        stream.close()

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: len(events) > 0, what="the stream to start")
    return stream, thread, events


def rank_pids(s):
    """The pids of the job's ranks (mpirun's children in its session)."""
    return [int(p) for p in os.popen(f"pgrep -s {s.process.pid} -x medusa-worker").read().split()]


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_rank0_finishes_requests_and_exits_cleanly(signal_number, start_server):
    s = start_server("--ctx", "512", "--shutdown-grace", "120")
    # The other rank ignores both signals (mpirun would end the job if it died).
    others = [pid for pid in rank_pids(s) if pid != s.rank0_pid]
    assert len(others) == 1
    for number in (signal.SIGTERM, signal.SIGINT):
        os.kill(others[0], number)
    assert s.post("/v1/completions", {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 2})[0] == 200

    # A long request keeps the server up while the checks run; a short one is in flight.
    long_stream, long_thread, _ = start_stream(s, max_tokens=400)
    _, short_thread, short_events = start_stream(s, max_tokens=16)
    os.kill(s.rank0_pid, signal_number)
    # New work is refused.
    wait_for(lambda: s.get("/health") == (503, {"status": "shutting down"}), what="/health to say shutting down")
    status, answer = s.post("/v1/completions", {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 2})
    assert status == 503 and answer["error"]["code"] == "shutting_down", answer
    # The short request runs to its end.
    short_thread.join(timeout=120)
    assert short_events[-1] == "data: [DONE]"
    assert '"finish_reason":"length"' in short_events[-2], "the count should run to max_tokens"
    assert sum(1 for e in short_events if '"text"' in e) >= 8
    # The long one's client leaves; then nothing is in flight and every rank exits 0.
    long_stream.leave()
    long_thread.join(timeout=60)
    assert s.wait() == 0, s.output()
    name = signal.Signals(signal_number).name
    assert f"serve: {name}" in s.output() and "serve: stopped" in s.output(), s.output()


def test_shutdown_grace_cuts_long_requests(start_server):
    """A request that cannot finish within --shutdown-grace is ended with finish_reason length."""
    s = start_server("--ctx", "512", "--shutdown-grace", "0.5")
    _, thread, events = start_stream(s, max_tokens=400)
    s.terminate_rank0()
    thread.join(timeout=60)
    assert events[-1] == "data: [DONE]" and '"finish_reason":"length"' in events[-2]
    assert s.wait() == 0, s.output()


def test_sigterm_to_mpirun_ends_the_whole_job(start_server):
    """Open MPI's mpirun (4.1) treats SIGTERM as "abort the job": it passes the signal on to every
    rank, kills what is left of them a second later (odls_base_sigkill_timeout) and exits 1,
    whatever the ranks do. Rank 0 starts its shutdown on the passed-on signal and the others ignore
    it; the job must end promptly and leave no rank behind. (A clean stop, exit status 0, is a
    signal to rank 0: see the tests above.)"""
    s = start_server("--ctx", "256")
    ranks = rank_pids(s)
    assert s.rank0_pid in ranks and len(ranks) == 2
    s.process.send_signal(signal.SIGTERM)
    s.wait(timeout=30)
    assert "serve: SIGTERM" in s.output(), s.output()
    for pid in ranks:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
                 timeout=10, what=f"rank process {pid} to end")
