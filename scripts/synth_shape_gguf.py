#!/usr/bin/env python3
"""Writes a Llama-shaped GGUF with random quantized weights, for measuring a big model's step costs
(matmuls, allreduces, bytes on the network) without its weights: e.g. the first layers of a 13B.

    scripts/synth_shape_gguf.py OUT.gguf [--layers 4] [--hidden 5120] [--heads 40] [--kv-heads 40]
        [--ffn 13824] [--type q4_0|q8_0] [--vocab-from .cache/vocab/ggml-vocab-llama-spm.gguf]

The tokenizer (and so the vocabulary size) comes from --vocab-from, a vocabulary-only GGUF
(llama.cpp's conformance files, fetched by `make setup`); the default, llama-spm, is Llama 2's
32000-token SentencePiece vocabulary. Weights are random blocks with a small fixed scale (their
text is noise, their cost is real); norms are ones. Needs numpy and gguf (`make setup`).
"""

import argparse
import os
import sys

import numpy as np
import gguf

BLOCK = 32


def random_blocks(rows, cols, kind, scale, rng):
    """rows x cols values as Q4_0 or Q8_0 blocks: a float16 scale then the quants, per 32 values."""
    if cols % BLOCK:
        sys.exit(f"error: {cols} columns are not a whole number of {BLOCK}-value blocks")
    blocks = rows * cols // BLOCK
    d = np.full((blocks, 1), scale, dtype=np.float16).view(np.uint8)
    if kind == "q4_0":
        qs = rng.integers(0, 256, size=(blocks, 16), dtype=np.uint8)
    else:
        qs = rng.integers(-127, 128, size=(blocks, 32), dtype=np.int8).view(np.uint8)
    return np.concatenate([d, qs], axis=1).reshape(rows, -1)


def copy_tokenizer(writer, path):
    reader = gguf.GGUFReader(path)
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        kind = field.types[0]
        value = field.contents()
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, value)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(name, value)
        else:
            writer.add_key_value(name, value, kind)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    return len(tokens.data)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=5120)
    p.add_argument("--heads", type=int, default=40)
    p.add_argument("--kv-heads", type=int)
    p.add_argument("--ffn", type=int, default=13824)
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--type", choices=["q4_0", "q8_0"], default="q4_0")
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    p.add_argument("--vocab-from", default=os.path.join(root, ".cache", "vocab", "ggml-vocab-llama-spm.gguf"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    kv_heads = a.kv_heads or a.heads
    if a.hidden % a.heads:
        sys.exit(f"error: hidden {a.hidden} is not a multiple of {a.heads} heads")
    head_dim = a.hidden // a.heads
    quant = gguf.GGMLQuantizationType.Q4_0 if a.type == "q4_0" else gguf.GGMLQuantizationType.Q8_0
    rng = np.random.default_rng(a.seed)

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name(f"random {a.layers}-layer llama, hidden {a.hidden}")
    vocab = copy_tokenizer(w, a.vocab_from)
    w.add_context_length(a.context)
    w.add_embedding_length(a.hidden)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(a.ffn)
    w.add_head_count(a.heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(vocab)

    def matrix(name, rows, cols, scale=0.002):
        w.add_tensor(name, random_blocks(rows, cols, a.type, scale, rng), raw_dtype=quant)

    ones = np.ones(a.hidden, dtype=np.float32)
    matrix("token_embd.weight", vocab, a.hidden, scale=0.02)
    for layer in range(a.layers):
        b = f"blk.{layer}."
        w.add_tensor(b + "attn_norm.weight", ones)
        matrix(b + "attn_q.weight", a.heads * head_dim, a.hidden)
        matrix(b + "attn_k.weight", kv_heads * head_dim, a.hidden)
        matrix(b + "attn_v.weight", kv_heads * head_dim, a.hidden)
        matrix(b + "attn_output.weight", a.hidden, a.heads * head_dim)
        w.add_tensor(b + "ffn_norm.weight", ones)
        matrix(b + "ffn_gate.weight", a.ffn, a.hidden)
        matrix(b + "ffn_up.weight", a.ffn, a.hidden)
        matrix(b + "ffn_down.weight", a.hidden, a.ffn)
    w.add_tensor("output_norm.weight", ones)
    matrix("output.weight", vocab, a.hidden)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{a.out}: {a.layers} layers, hidden {a.hidden}, {a.heads} heads ({kv_heads} KV), FFN {a.ffn}, "
          f"vocabulary {vocab}, {a.type}, {os.path.getsize(a.out) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
