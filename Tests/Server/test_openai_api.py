"""The OpenAI-compatible API of `medusa-worker serve`, end to end under `mpirun -np 2`, driven by
the official `openai` package: answers, streaming, batching, every request error, metrics."""

import json
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from conftest import BINARY, MODEL_ID, MPI_ENV, MPIRUN, metric, openai_client

QUESTION = "What is the capital of France? Answer in one sentence."


def chat(client, content, max_tokens=24, **kwargs):
    return client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": content}], max_tokens=max_tokens, temperature=0, **kwargs)


def test_health_and_models(server):
    assert server.get("/health") == (200, {"status": "ok"})
    models = openai_client(server).models.list()
    assert [m.id for m in models.data] == [MODEL_ID]
    assert openai_client(server).models.retrieve(MODEL_ID).id == MODEL_ID


def test_chat_matches_the_command_line(server):
    """A greedy chat answer is the text `generate --chat` gives for the same message on 2 ranks,
    with OpenAI's response shape and token counts."""
    answer = chat(openai_client(server), QUESTION)
    choice = answer.choices[0]
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == MODEL_ID
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = answer.usage
    assert usage.prompt_tokens > 10 and 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    cli = subprocess.run(
        MPIRUN + ["-np", "2", BINARY, "generate", "--chat", QUESTION, "--max-tokens", "24", "--threads", "1", "--json"],
        capture_output=True, text=True, env={**os.environ, **MPI_ENV}, timeout=120)
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout.strip().splitlines()[-1])
    assert choice.message.content == report["text"]
    assert usage.completion_tokens == report["completion_tokens"]
    assert usage.prompt_tokens == report["prompt_tokens"]
    assert choice.finish_reason == report["finish_reason"]


def test_streamed_chat_is_the_plain_answer_in_pieces(server):
    client = openai_client(server)
    plain = chat(client, QUESTION)
    chunks = list(chat(client, QUESTION, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert sum(1 for p in pieces if p) > 3, "the answer should arrive in several pieces"
    assert "".join(pieces) == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    # With include_usage, the last chunk has no choices and the counts.
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_stream_ends_with_done(server):
    """The raw event stream: `data: {...}` events, then `data: [DONE]`."""
    status, text = server.post("/v1/chat/completions", {
        "model": MODEL_ID, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0,
        "stream": True})
    assert status == 200
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    last = json.loads(events[-2][len("data: "):])
    assert last["choices"][0]["finish_reason"] in ("stop", "length")


def test_text_completions(server):
    client = openai_client(server)
    prompt = "The three primary colors are"
    plain = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=12, temperature=0)
    assert plain.object == "text_completion" and plain.id.startswith("cmpl-")
    assert plain.choices[0].finish_reason == "length" and plain.usage.completion_tokens == 12
    streamed = list(client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=12, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text
    assert streamed[-1].choices[0].finish_reason == "length"


def test_stop_strings_and_sampling(server):
    client = openai_client(server)
    full = client.completions.create(model=MODEL_ID, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0).choices[0].text
    assert " 7," in full, full
    stopped = client.completions.create(model=MODEL_ID, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[" 7"])
    assert stopped.choices[0].text == full[:full.index(" 7")]
    assert stopped.choices[0].finish_reason == "stop"
    # Sampling with a seed repeats itself.
    kwargs = dict(max_tokens=8, temperature=1.0, top_p=0.9, seed=11)
    sampled = [client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Name a fruit."}], **kwargs)
               .choices[0].message.content for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_concurrent_greedy_requests_match_their_solo_answers(server):
    """8 requests decoded together give, each, the answer it gets alone."""
    client = openai_client(server)
    prompts = ["Name a primary color.", "What is 2 + 2?", "Say hello in French.", "Name a planet.",
               "What is the opposite of hot?", "Name a large animal.", "What color is the sky?", "Spell the word cat."]
    steps_before = metric(server.metrics(), "medusa_step_seconds_count")
    solo = [chat(client, p, max_tokens=12).choices[0].message.content for p in prompts]
    steps_solo = metric(server.metrics(), "medusa_step_seconds_count") - steps_before
    start = threading.Barrier(len(prompts))

    def together(prompt):
        start.wait()
        return chat(client, prompt, max_tokens=12).choices[0].message.content

    with ThreadPoolExecutor(len(prompts)) as pool:
        batched = list(pool.map(together, prompts))
    assert batched == solo
    # They shared steps: far fewer collective steps than one after the other.
    steps_batched = metric(server.metrics(), "medusa_step_seconds_count") - steps_before - steps_solo
    assert steps_batched < steps_solo / 2, (steps_batched, steps_solo)


def expect_error(status_code, call, param=None, code=None, contains=None):
    """Runs `call`, which must fail with an OpenAI error of this status; returns the error body."""
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    error = caught.value
    assert error.status_code == status_code, error
    body = error.body
    assert set(body) == {"message", "type", "param", "code"}, body
    if status_code == 400:
        assert body["type"] == "invalid_request_error"
    if param is not None:
        assert body["param"] == param, body
    if code is not None:
        assert body["code"] == code, body
    if contains is not None:
        assert contains in body["message"], body
    return body


def test_request_errors_are_openai_errors_and_harmless(server):
    client = openai_client(server)
    user = [{"role": "user", "content": "Hi"}]
    create = client.chat.completions.create
    expect_error(404, lambda: create(model="gpt-4o", messages=user), param="model", code="model_not_found", contains=MODEL_ID)
    expect_error(400, lambda: create(model=MODEL_ID, messages=[]), param="messages")
    expect_error(400, lambda: create(model=MODEL_ID, messages=user, temperature=2.5), param="temperature", contains="between 0 and 2")
    expect_error(400, lambda: create(model=MODEL_ID, messages=user, temperature=-1), param="temperature")
    expect_error(400, lambda: create(model=MODEL_ID, messages=user, top_p=0), param="top_p")
    expect_error(400, lambda: create(model=MODEL_ID, messages=user, top_p=1.5), param="top_p")
    expect_error(400, lambda: create(model=MODEL_ID, messages=user, max_tokens=0), param="max_tokens")
    expect_error(400, lambda: create(model=MODEL_ID, messages=user, max_tokens=100000), param="max_tokens",
                 code="context_length_exceeded", contains="512")
    long_prompt = [{"role": "user", "content": "apple " * 600}]
    expect_error(400, lambda: create(model=MODEL_ID, messages=long_prompt, max_tokens=4), param="messages",
                 code="context_length_exceeded")
    expect_error(400, lambda: create(model=MODEL_ID, messages=user, n=2), param="n", code="unsupported_parameter")
    expect_error(400, lambda: client.completions.create(model=MODEL_ID, prompt="word " * 600, max_tokens=4),
                 param="prompt", code="context_length_exceeded")
    # What the client library would not send: raw bodies.
    for body, param, fragment in [
        (b'{"model": "x", "messages": [', None, "not valid JSON"),
        (b'[]', None, "must be a JSON object"),
        ({"model": MODEL_ID}, "messages", "missing required parameter 'messages'"),
        ({"messages": user}, "model", "missing required parameter 'model'"),
        ({"model": MODEL_ID, "messages": user, "max_tokens": "5"}, "max_tokens", "must be an integer"),
        ({"model": MODEL_ID, "messages": "Hi"}, "messages", "must be an array"),
        ({"model": MODEL_ID, "messages": [{"role": "user"}]}, "messages[0].content", "missing required parameter"),
        ({"model": MODEL_ID, "messages": user, "temperature": "warm"}, "temperature", "must be a number"),
    ]:
        status, answer = server.post("/v1/chat/completions", body)
        assert status == 400, (body, answer)
        assert answer["error"]["type"] == "invalid_request_error"
        assert answer["error"]["param"] == param, answer
        assert fragment in answer["error"]["message"], answer
    status, answer = server.get("/v1/embeddings")
    assert status == 404 and answer["error"]["code"] == "unknown_url"
    # The server is unharmed.
    assert chat(client, QUESTION).choices[0].message.content
    assert server.get("/health")[0] == 200


def test_extreme_numbers_are_refused_or_served(server):
    """Any number JSON can carry in a request field is a 400 naming the field, or is served:
    never a trap (a single request used to end the server, and under mpirun the whole job)."""
    user = [{"role": "user", "content": "Hi"}]
    big = [2**63 - 1, 2**63 - 2, 2**62, 2**53 + 1, 2**32, 2**31 - 1, 2**63, 2**64 - 1, 2**64, 10**30, 1e300, -(2**63), -(2**63) - 1]
    for route, base in [("/v1/chat/completions", {"model": MODEL_ID, "messages": user}),
                        ("/v1/completions", {"model": MODEL_ID, "prompt": "Hi"})]:
        for value in big:
            for key in ["max_tokens", "max_completion_tokens", "n", "best_of"]:
                if key == "max_completion_tokens" and route == "/v1/completions":
                    continue
                if key == "best_of" and route == "/v1/chat/completions":
                    continue
                status, answer = server.post(route, {**base, key: value})
                # A limit beyond the context is named as max_tokens, whichever key gave it.
                assert status == 400 and answer["error"]["param"] in (key, "max_tokens"), (route, key, value, status, answer)
            for key in ["temperature", "top_p", "presence_penalty", "frequency_penalty"]:
                status, answer = server.post(route, {**base, key: value, "max_tokens": 1})
                assert status == 400 and answer["error"]["param"] == key, (route, key, value, status, answer)
            # A seed is any 64-bit pattern; outside them, a 400.
            status, answer = server.post(route, {**base, "seed": value, "max_tokens": 1, "temperature": 1})
            assert status == 200 if -(2**63) <= value < 2**63 else (status == 400 and answer["error"]["param"] == "seed"), \
                (route, value, status, answer)
    # Tiny and denormal numbers are valid temperatures and top_p values.
    for value in [5e-324, 1e-310, 1e-45, 1e-40, 1e-38, 1e-30, 1e-8]:
        status, answer = server.post("/v1/completions", {"model": MODEL_ID, "prompt": "1, 2, 3,", "max_tokens": 2,
                                                         "temperature": value, "top_p": value, "seed": 1})
        assert status == 200, (value, answer)
    # Many stop strings: bounded, refused past the limit.
    status, answer = server.post("/v1/completions", {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 1, "stop": ["x"] * 100000})
    assert status == 400 and answer["error"]["param"] == "stop", answer
    assert chat(openai_client(server), QUESTION).choices[0].message.content
    assert server.get("/health")[0] == 200


def test_client_text_in_errors_is_quoted_and_cut(server):
    """What a client sent comes back in an error message escaped and cut: one short line."""
    user = [{"role": "user", "content": "Hi"}]
    long_line = "\x1b[31m" + "x\n" * 200_000
    for route, body, status in [
        ("/v1/chat/completions", {"model": long_line, "messages": user}, 404),
        ("/v1/chat/completions", {"model": MODEL_ID, "messages": [{"role": long_line, "content": "Hi"}]}, 400),
        ("/v1/chat/completions", {"model": MODEL_ID, "messages": [{"role": "user", "content": [{"type": long_line}]}]}, 400),
        ("/v1/chat/completions", {"model": MODEL_ID, "messages": user, "response_format": {"type": long_line}}, 400),
        ("/v1/" + "y%0A" * 2_000, {}, 404),
    ]:
        got, answer = server.post(route, body)
        message = answer["error"]["message"]
        assert got == status and len(message) < 600, (route, got, message[:200])
        assert not any(ord(c) < 0x20 for c in message), message[:200]


def test_metrics(server):
    """Prometheus text with the request counts by status and the engine's measurements."""
    chat(openai_client(server), QUESTION, max_tokens=4)
    server.post("/v1/chat/completions", {"model": MODEL_ID})
    values = server.metrics()
    assert metric(values, "medusa_http_requests_total", path="/v1/chat/completions", status="200") >= 1
    assert metric(values, "medusa_http_requests_total", path="/v1/chat/completions", status="400") >= 1
    assert metric(values, "medusa_prompt_tokens_total") > 0
    assert metric(values, "medusa_generated_tokens_total") >= 4
    assert metric(values, "medusa_verify_steps_total") > 0
    assert metric(values, "medusa_accepted_tokens_total") >= metric(values, "medusa_verify_steps_total")
    # Plain decoding: one token per verify step.
    assert metric(values, "medusa_mean_accepted_tokens_per_step") == 1
    assert metric(values, "medusa_active_sequences") == 0 and metric(values, "medusa_queued_sequences") == 0
    for timer in ["medusa_step_seconds", "medusa_allreduce_seconds"]:
        assert metric(values, timer + "_count") > 0
        assert metric(values, timer + "_bucket", le="+Inf") == metric(values, timer + "_count")
    assert metric(values, "medusa_allreduce_seconds_sum") > 0, "2 ranks allreduce every step"
