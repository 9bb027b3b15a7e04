"""The design's own usage line, `mpirun -np P medusa-worker` with no subcommand and no option, is the
cluster's main job: `serve` on the default model, on loopback port 8080."""

import ctypes
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from conftest import BINARY, MODEL_ID, MPI_ENV, MPIRUN

CLONE_NEWNET = 0x40000000


@contextmanager
def network_namespace_of(pid):
    """Runs the block with this thread in process `pid`'s network namespace (sockets it opens stay
    there), then back in its own."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/self/ns/net") as own, open(f"/proc/{pid}/ns/net") as target:
        if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into the network namespace of {pid}")
        try:
            yield
        finally:
            if libc.setns(own.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back into the test's network namespace")


def health(url):
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError):
        return None


def test_the_bare_binary_under_mpirun_serves_the_default_model():
    # The bare server listens on the fixed default port 8080: in a network namespace of its own
    # (only a loopback) nothing else on this machine can hold that port or reach the server.
    if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0:
        pytest.skip("network namespaces are not allowed here (unshare --net failed); the bare server's port 8080 could be taken")
    import openai

    log = tempfile.NamedTemporaryFile(prefix="medusa-bare-", suffix=".log", delete=False)
    # unshare and sh exec: the pid is mpirun's. Nothing after the binary: no subcommand, no option.
    command = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
               *MPIRUN, "-np", "2", BINARY]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, **MPI_ENV}, start_new_session=True)

    def output():
        with open(log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    try:
        deadline = time.monotonic() + 180
        match = None
        while match is None:
            match = re.search(r"listening on http://127\.0\.0\.1:8080 \(model (\S+), 2 rank\(s\).*rank 0 pid (\d+)", output())
            assert process.poll() is None, f"exited {process.returncode} before serving:\n{output()}"
            assert time.monotonic() < deadline, f"no 'listening' line in 180 s:\n{output()}"
            time.sleep(0.1)
        assert match.group(1) == MODEL_ID, output()
        rank0 = int(match.group(2))
        url = "http://127.0.0.1:8080"
        with network_namespace_of(process.pid):
            while health(url) != 200:
                assert process.poll() is None and time.monotonic() < deadline, f"/health never 200:\n{output()}"
                time.sleep(0.1)
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
            answer = client.chat.completions.create(
                model=MODEL_ID, messages=[{"role": "user", "content": "Tell me the capital of France."}],
                max_tokens=16, temperature=0)
        assert answer.model == MODEL_ID
        assert answer.usage.completion_tokens > 0
        assert "Paris" in answer.choices[0].message.content, answer
        os.kill(rank0, signal.SIGTERM)
        assert process.wait(timeout=60) == 0, output()
        assert "serve: stopped" in output()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.unlink(log.name)
