#!/usr/bin/env python3
"""Independent fp32 reference forward pass for llama-architecture GGUF models, in plain numpy.

Every tensor is dequantized to float32 with the `gguf` package (`gguf.quants.dequantize`), and the
forward pass is the textbook Llama computation with no quantized arithmetic anywhere. It is a
yardstick for the Swift engine (logits, perplexity, greedy tokens), not a fast runtime.

Usage
-----
  reference_forward.py MODEL.gguf --tokens IDS --logits-out LOGITS.npy
      Logits for every position, float32 array of shape (n_tokens, n_vocab).
  reference_forward.py MODEL.gguf --perplexity --tokens IDS --ctx 512 [--chunks N]
      Prints JSON {"ppl", "tokens_scored", "chunks", "nll"} in llama.cpp's perplexity convention.
  reference_forward.py MODEL.gguf --greedy N --tokens IDS [--stop-at-eos] [--top-k K]
      Prints JSON {"tokens", "text", "top"}: N greedy continuation ids after the prompt, their
      decoded text, and the top-K logits at the last prompt position.

IDS is a file (or `-` for stdin) holding a JSON list of token ids or whitespace-separated ids.
Tokenization is not done here; use the engine's tokenizer or llama.cpp's (see
validate_reference_forward.py). `--float64` runs the same forward in float64 (the dequantized
weights are exact in both), to tell a real preference from fp32 rounding in near ties.

Conventions
-----------
* Tensor shapes: GGML lists dimensions innermost first, so a weight of GGML dims [in, out] is a
  numpy (out, in) matrix after `dequantize` (GGUFReader's raw `data` already has the reversed
  shape; dequantize expands its last axis from bytes to values). A linear layer is y = x @ W.T.
* RMSNorm: x / sqrt(mean(x^2) + eps) * g, eps = llama.attention.layer_norm_rms_epsilon.
* RoPE: llama.cpp's "normal" mode for llama. convert_hf_to_gguf permutes the rows of the Q and K
  weights so that the rotated pairs are ADJACENT: (x[2i], x[2i+1]) within each head, rotated by
  angle pos * base^(-2i/n_rot), base = llama.rope.freq_base, n_rot = llama.rope.dimension_count
  (default head_dim). Positions start at 0 for each sequence.
* Attention: causal, softmax scale 1/sqrt(head_dim), grouped-query: query head h reads KV head
  h // (n_head / n_head_kv).
* MLP: SwiGLU, down(silu(gate(x)) * up(x)).
* LM head: output.weight, or token_embd.weight when the file has no output.weight (tied).
* Perplexity (llama.cpp tools/perplexity, default mode): take floor(n_tokens / ctx) consecutive,
  non-overlapping chunks of ctx tokens (at most --chunks; the incomplete tail is dropped) and
  evaluate each from an empty cache. If the vocabulary adds BOS (tokenizer.ggml.add_bos_token), the
  chunk's first token is replaced by BOS. With first = ctx // 2, the logits at positions
  first .. ctx-2 score the tokens at positions first+1 .. ctx-1: ctx - first - 1 tokens per chunk.
  Each score is -log_softmax (max and exp in float32, sum in float64, as llama.cpp does);
  ppl = exp(sum / count). llama.cpp requires at least 2 * ctx tokens; so does this script.

Validation (scripts/validate_reference_forward.py, SmolLM2-135M-Instruct Q4_1): against llama.cpp
running an all-F32 copy of the model with an F32 KV cache, logits agree to 7e-5 (max abs) and the
perplexity on Tests/Data/perplexity.txt at ctx 128 to 6 digits (34.6120). llama.cpp on the Q4_1
file itself differs by up to ~1.1 in logits (mean 0.23), because it quantizes activations to 8
bits in quantized matmuls and keeps the KV cache in F16; its perplexity there is 34.639.
"""

import argparse
import json
import math
import sys
import time

import numpy as np

try:
    import gguf
    from gguf import quants
except ImportError:  # pragma: no cover
    sys.exit("reference_forward.py needs the gguf package: pip install -r scripts/requirements.txt")


# ---------------------------------------------------------------------------------------------
# Model: configuration and dequantized weights
# ---------------------------------------------------------------------------------------------

def field(reader, key, default=None):
    """A metadata value as a Python value (scalar, str or list), or default when absent."""
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise KeyError(f"missing metadata key {key!r}")
        return default
    return f.contents()


class LlamaModel:
    """Hyperparameters and float weights of a llama GGUF file. Shapes are numpy (out, in)."""

    def __init__(self, path, dtype=np.float32):
        reader = gguf.GGUFReader(path)
        arch = field(reader, "general.architecture")
        if arch != "llama":
            raise ValueError(f"{path}: architecture {arch!r} is not llama")
        self.dtype = dtype
        self.n_embd = int(field(reader, "llama.embedding_length"))
        self.n_layer = int(field(reader, "llama.block_count"))
        self.n_head = int(field(reader, "llama.attention.head_count"))
        self.n_head_kv = int(field(reader, "llama.attention.head_count_kv", self.n_head))
        self.head_dim = self.n_embd // self.n_head
        self.n_rot = int(field(reader, "llama.rope.dimension_count", self.head_dim))
        self.rope_base = float(field(reader, "llama.rope.freq_base", 10000.0))
        self.eps = float(field(reader, "llama.attention.layer_norm_rms_epsilon"))
        tokenizer_model = field(reader, "tokenizer.ggml.model", "gpt2")
        self.add_bos = bool(field(reader, "tokenizer.ggml.add_bos_token", tokenizer_model == "llama"))
        self.bos_id = int(field(reader, "tokenizer.ggml.bos_token_id", 1))
        self.eos_id = int(field(reader, "tokenizer.ggml.eos_token_id", 2))
        self.vocab = field(reader, "tokenizer.ggml.tokens", [])
        if self.n_head % self.n_head_kv or self.n_rot % 2 or self.n_rot > self.head_dim:
            raise ValueError(f"{path}: unsupported head layout")
        if field(reader, "llama.rope.scaling.type", "none") != "none":
            raise ValueError(f"{path}: RoPE scaling is not implemented")

        self.w = {}
        for t in reader.tensors:
            values = quants.dequantize(t.data, t.tensor_type)
            # GGML dims are innermost first; the numpy array must be their reverse.
            expected = tuple(int(d) for d in reversed(t.shape))
            if values.shape != expected:
                raise ValueError(f"{t.name}: dequantized shape {values.shape}, GGML dims {list(t.shape)}")
            self.w[t.name] = np.ascontiguousarray(values, dtype=dtype)
        self.token_embd = self.w["token_embd.weight"]            # (n_vocab, n_embd)
        self.output = self.w.get("output.weight", self.token_embd)  # (n_vocab, n_embd), tied if absent
        self.n_vocab = self.token_embd.shape[0]

    def layer(self, i, name):
        return self.w[f"blk.{i}.{name}.weight"]


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------

def rms_norm(x, gain, eps):
    """x: (T, n_embd) -> (T, n_embd)."""
    ms = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(ms + eps) * gain


def rope(x, positions, n_rot, base):
    """Rotates adjacent pairs (x[2i], x[2i+1]) of the first n_rot dims of each head.
    x: (T, heads, head_dim); positions: (T,) ints."""
    dtype = x.dtype
    i = np.arange(n_rot // 2, dtype=np.float64)
    theta = base ** (-2.0 * i / n_rot)                                   # (n_rot/2,)
    angle = positions.astype(np.float64)[:, None] * theta[None, :]       # (T, n_rot/2)
    cos = np.cos(angle).astype(dtype)[:, None, :]                        # (T, 1, n_rot/2)
    sin = np.sin(angle).astype(dtype)[:, None, :]
    even = x[..., 0:n_rot:2]
    odd = x[..., 1:n_rot:2]
    out = x.copy()
    out[..., 0:n_rot:2] = even * cos - odd * sin
    out[..., 1:n_rot:2] = even * sin + odd * cos
    return out


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def silu(x):
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x << 0, giving silu = -0
        return x / (1 + np.exp(-x))


class KVCache:
    """Per layer K and V of every position seen so far: (n_past, n_head_kv, head_dim)."""

    def __init__(self, model):
        empty = np.zeros((0, model.n_head_kv, model.head_dim), dtype=model.dtype)
        self.k = [empty] * model.n_layer
        self.v = [empty] * model.n_layer

    @property
    def n_past(self):
        return self.k[0].shape[0]


def forward(model, tokens, cache=None, logits_for="all"):
    """Runs `tokens` after what `cache` holds (an empty cache when None) and returns logits:
    (T, n_vocab) for logits_for="all", (n_vocab,) for "last"."""
    m = model
    cache = cache if cache is not None else KVCache(m)
    tokens = np.asarray(tokens, dtype=np.int64)
    T = len(tokens)
    n_past = cache.n_past
    positions = np.arange(n_past, n_past + T)
    group = m.n_head // m.n_head_kv
    scale = m.dtype(1.0 / math.sqrt(m.head_dim))
    # Causal mask over [cache | new]: new token t sees cached positions and new positions <= t.
    visible = np.arange(n_past + T)[None, :] <= positions[:, None]        # (T, n_past + T)
    mask = np.where(visible, 0, -np.inf).astype(m.dtype)

    x = m.token_embd[tokens]                                              # (T, n_embd)
    for l in range(m.n_layer):
        h = rms_norm(x, m.layer(l, "attn_norm"), m.eps)                   # (T, n_embd)
        q = (h @ m.layer(l, "attn_q").T).reshape(T, m.n_head, m.head_dim)
        k = (h @ m.layer(l, "attn_k").T).reshape(T, m.n_head_kv, m.head_dim)
        v = (h @ m.layer(l, "attn_v").T).reshape(T, m.n_head_kv, m.head_dim)
        q = rope(q, positions, m.n_rot, m.rope_base)
        k = rope(k, positions, m.n_rot, m.rope_base)
        cache.k[l] = np.concatenate([cache.k[l], k])                       # (S, n_head_kv, head_dim)
        cache.v[l] = np.concatenate([cache.v[l], v])
        # Heads grouped by the KV head they read: q (n_head_kv, group*T, head_dim).
        qg = q.reshape(T, m.n_head_kv, group, m.head_dim).transpose(1, 2, 0, 3).reshape(m.n_head_kv, group * T, m.head_dim)
        kt = cache.k[l].transpose(1, 2, 0)                                 # (n_head_kv, head_dim, S)
        vt = cache.v[l].transpose(1, 0, 2)                                 # (n_head_kv, S, head_dim)
        scores = (qg @ kt) * scale                                         # (n_head_kv, group*T, S)
        scores = scores.reshape(m.n_head_kv, group, T, -1) + mask           # (n_head_kv, group, T, S)
        probs = softmax(scores).reshape(m.n_head_kv, group * T, -1)
        att = (probs @ vt).reshape(m.n_head_kv, group, T, m.head_dim)      # (n_head_kv, group, T, head_dim)
        att = att.transpose(2, 0, 1, 3).reshape(T, m.n_embd)               # heads in order h = kv*group + g
        x = x + att @ m.layer(l, "attn_output").T

        h = rms_norm(x, m.layer(l, "ffn_norm"), m.eps)
        gate = h @ m.layer(l, "ffn_gate").T                                # (T, n_ff)
        up = h @ m.layer(l, "ffn_up").T
        x = x + (silu(gate) * up) @ m.layer(l, "ffn_down").T

    if logits_for == "last":
        x = x[-1:]
    x = rms_norm(x, m.w["output_norm.weight"], m.eps)
    logits = x @ m.output.T                                                # (T or 1, n_vocab)
    return logits[-1] if logits_for == "last" else logits


# ---------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------

def log_softmax_at(logits, token):
    """llama.cpp's log_softmax: max and exp in float32, the sum accumulated in float64."""
    logits = logits.astype(np.float32)
    top = np.max(logits)
    total = np.sum(np.exp(logits - top), dtype=np.float64)
    return float(logits[token]) - float(top) - math.log(total)


def perplexity(model, tokens, ctx, chunks=None):
    if ctx < 4:
        raise ValueError("--ctx must be at least 4")
    if len(tokens) < 2 * ctx:
        raise ValueError(f"need at least {2 * ctx} tokens for a context of {ctx}, got {len(tokens)}")
    n_chunk = len(tokens) // ctx
    if chunks is not None and chunks >= 0:
        n_chunk = min(n_chunk, chunks)
    first = ctx // 2
    nll = 0.0
    count = 0
    for c in range(n_chunk):
        chunk = list(tokens[c * ctx:(c + 1) * ctx])
        if model.add_bos:
            chunk[0] = model.bos_id
        logits = forward(model, chunk)
        for i in range(first, ctx - 1):
            # tokens[start + first + 1 ..] in llama.cpp: the original tokens, never the BOS.
            nll -= log_softmax_at(logits[i], tokens[c * ctx + i + 1])
            count += 1
    return {"ppl": math.exp(nll / count), "tokens_scored": count, "chunks": n_chunk, "nll": nll / count}


def byte_decoder():
    """GPT-2 byte-level BPE: the printable stand-in character of each byte, inverted."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def decode(model, ids):
    table = byte_decoder()
    out = bytearray()
    for i in ids:
        piece = model.vocab[i] if 0 <= i < len(model.vocab) else ""
        for ch in piece:
            if ch in table:
                out.append(table[ch])
            else:
                out.extend(ch.encode("utf-8"))
    return out.decode("utf-8", errors="replace")


def greedy(model, prompt, n, stop_at_eos=False, top_k=5):
    cache = KVCache(model)
    logits = forward(model, prompt, cache, logits_for="last")
    order = np.argsort(-logits.astype(np.float64), kind="stable")[:top_k]
    top = [{"id": int(i), "logit": float(logits[i]), "piece": decode(model, [int(i)])} for i in order]
    out = []
    for _ in range(n):
        t = int(np.argmax(logits))
        out.append(t)
        if stop_at_eos and t == model.eos_id:
            break
        if len(out) == n:
            break
        logits = forward(model, [t], cache, logits_for="last")
    return {"tokens": out, "text": decode(model, out), "top": top}


def read_tokens(source):
    text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
    text = text.strip()
    if text.startswith("["):
        ids = json.loads(text)
    else:
        ids = [int(s) for s in text.split()]
    if not ids or not all(isinstance(i, int) for i in ids):
        raise ValueError(f"{source}: expected a JSON list of token ids or whitespace-separated ids")
    return ids


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="llama-architecture GGUF file")
    p.add_argument("--tokens", required=True, help="token ids: a file or '-' (JSON list or whitespace-separated)")
    p.add_argument("--logits-out", help="write logits for every position to this .npy file")
    p.add_argument("--perplexity", action="store_true", help="perplexity in llama.cpp's convention")
    p.add_argument("--ctx", type=int, default=512, help="perplexity chunk length (default 512)")
    p.add_argument("--chunks", type=int, default=None, help="at most this many perplexity chunks")
    p.add_argument("--greedy", type=int, metavar="N", help="greedy continuation of N tokens")
    p.add_argument("--stop-at-eos", action="store_true", help="stop the greedy continuation at EOS")
    p.add_argument("--top-k", type=int, default=5, help="top logits to report in --greedy mode")
    p.add_argument("--float64", action="store_true", help="compute in float64 instead of float32")
    args = p.parse_args(argv)
    if sum([args.logits_out is not None, args.perplexity, args.greedy is not None]) != 1:
        p.error("choose exactly one of --logits-out, --perplexity, --greedy")

    tokens = read_tokens(args.tokens)
    t0 = time.time()
    model = LlamaModel(args.model, np.float64 if args.float64 else np.float32)
    bad = [t for t in tokens if not 0 <= t < model.n_vocab]
    if bad:
        p.error(f"token ids out of range for a vocabulary of {model.n_vocab}: {bad[:5]}")
    print(f"loaded {args.model} in {time.time() - t0:.1f}s", file=sys.stderr)

    t0 = time.time()
    if args.logits_out:
        logits = forward(model, tokens)
        np.save(args.logits_out, logits.astype(np.float32))
        result = {"logits": args.logits_out, "shape": list(logits.shape)}
    elif args.perplexity:
        result = perplexity(model, tokens, args.ctx, args.chunks)
    else:
        result = greedy(model, tokens, args.greedy, args.stop_at_eos, args.top_k)
    print(f"computed in {time.time() - t0:.1f}s", file=sys.stderr)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
