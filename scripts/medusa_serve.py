"""Starts `medusa-worker serve` under mpirun and talks to it over plain HTTP (the standard library
only). Used by the end-to-end server tests (Tests/Server) and by scripts/bench-server.py.

The binary is $MEDUSA_WORKER_BINARY, else .build/release/medusa-worker; the model is the server's
default ($MEDUSA_MODEL, else the cached SmolLM2 that `make setup` fetches) unless --model is given.
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BINARY = os.environ.get("MEDUSA_WORKER_BINARY") or os.path.join(ROOT, ".build", "release", "medusa-worker")

# The launcher options of the Swift tests' MPIRunner (Tests/TestSupport/BinaryRunner.swift): more
# ranks than cores, no binding to cores, no cross-memory attach (some containers forbid it).
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none", "--mca", "btl_vader_single_copy_mechanism", "none"]
# Open MPI refuses to run as root (CI does) unless both are set.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


class Server:
    """One `mpirun -np N medusa-worker serve --port 0 ...` job, in a process group of its own.

    Construction returns once /health answers 200 (every rank has loaded). `close()` stops it the
    clean way, SIGTERM to rank 0, and checks that the job exited 0.
    """

    def __init__(self, *args, np=2, threads=1, ready_timeout=120):
        if not os.access(BINARY, os.X_OK):
            raise RuntimeError(f"{BINARY} is not an executable: build first (`make test`, or "
                               "`swift build -c release -Xswiftc -enable-testing --build-tests`)")
        self.log = tempfile.NamedTemporaryFile(prefix="medusa-serve-", suffix=".log", delete=False)
        command = MPIRUN + ["-np", str(np), BINARY, "serve", "--port", "0", "--threads", str(threads), *args]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **MPI_ENV}, start_new_session=True)
        deadline = time.monotonic() + ready_timeout
        match = None
        while match is None:
            match = re.search(r"listening on http://([\d.]+):(\d+) .*rank 0 pid (\d+)", self.output())
            if match is None:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.output()}")
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"the server did not start in {ready_timeout} s:\n{self.output()}")
                time.sleep(0.1)
        self.url = f"http://{match.group(1)}:{match.group(2)}"
        self.rank0_pid = int(match.group(3))
        while self.get("/health")[0] != 200:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.kill()
                raise RuntimeError(f"/health did not become 200 in {ready_timeout} s:\n{self.output()}")
            time.sleep(0.1)

    def output(self):
        """What every rank printed so far (stdout and stderr)."""
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def request(self, method, path, body=None, headers=None, timeout=300):
        """(status, JSON or text) of one request; `body` is JSON-encoded unless it is bytes."""
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                status, raw, kind = response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            status, raw, kind = error.code, error.read(), error.headers.get("Content-Type", "")
        text = raw.decode()
        return status, (json.loads(text) if "json" in kind else text)

    def raw(self, method, target, body=b"", headers=None, version="HTTP/1.1", timeout=60, close_wait=None):
        """One request written byte for byte (any request target, any HTTP version) on a connection
        of its own: (status, headers as {lowercase name: value}, body bytes, closed). `body` is
        JSON-encoded unless it is bytes. With `close_wait` seconds, `closed` says whether the server
        closed the connection within that time after the response (else it is None)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=timeout) as connection:
            lines = [f"{method} {target} {version}", f"Host: {host}"]
            lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
            if data or method == "POST":
                lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
            connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
            response = http.client.HTTPResponse(connection, method=method)
            response.begin()
            content = response.read()
            closed = None
            if close_wait is not None:
                connection.settimeout(close_wait)
                try:
                    closed = connection.recv(1) == b""
                except ConnectionResetError:
                    closed = True
                except socket.timeout:
                    closed = False
            return response.status, {k.lower(): v for k, v in response.getheaders()}, content, closed

    def get(self, path, **kwargs):
        """Like `request`, but (None, None) when the server does not answer at all."""
        try:
            return self.request("GET", path, **kwargs)
        except (urllib.error.URLError, ConnectionError):
            return None, None

    def post(self, path, body, **kwargs):
        return self.request("POST", path, body, **kwargs)

    def metrics(self):
        """/metrics as {(name, frozenset of (label, value)): value}."""
        status, text = self.get("/metrics")
        assert status == 200, text
        values = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            match = re.fullmatch(r'([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)', line)
            assert match, f"not a Prometheus sample line: {line!r}"
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            values[(match.group(1), labels)] = float(match.group(3))
        return values

    def terminate_rank0(self):
        os.kill(self.rank0_pid, signal.SIGTERM)

    def wait(self, timeout=60):
        """mpirun's exit status; kills the job and raises if it does not end in time."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the server did not exit in {timeout} s:\n{self.output()}")

    def kill(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def close(self):
        """Stops the server the clean way (SIGTERM to rank 0) and checks that the job exited 0."""
        if self.process.poll() is None:
            self.terminate_rank0()
        status = self.wait()
        assert status == 0, f"mpirun exited {status}:\n{self.output()}"
        self.discard()

    def discard(self):
        """Kills the job if it is still there and removes its log."""
        self.kill()
        if os.path.exists(self.log.name):
            os.unlink(self.log.name)


def metric(values, name, **labels):
    """One sample of `Server.metrics()`; 0 when absent."""
    return values.get((name, frozenset(labels.items())), 0.0)
