"""Fixtures of the end-to-end server tests: the real `medusa-worker serve` under `mpirun -np 2`
(scripts/medusa_serve.py starts it), driven with the official `openai` package."""

import os
import sys

import openai
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))

from medusa_serve import BINARY, MPI_ENV, MPIRUN, Server, metric  # noqa: E402,F401

# The default model's name as the server gives it (its file name without .gguf).
MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"


def openai_client(server, api_key="unused"):
    """An OpenAI client for `server`. No retries: a 429 or 503 must reach the test."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0, timeout=120)


@pytest.fixture
def start_server():
    """Starts servers for one test (`start_server(*serve_options)`); whatever state a test leaves
    them in, they are killed and their logs removed afterwards."""
    started = []

    def start(*args):
        started.append(Server(*args))
        return started[-1]

    yield start
    for s in started:
        s.discard()


@pytest.fixture(scope="module")
def server():
    """A 2-rank server with room for 8 sequences of 512 tokens, shared by a module's tests."""
    s = Server("--max-sequences", "8", "--ctx", "512")
    yield s
    s.close()
