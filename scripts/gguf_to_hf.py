#!/usr/bin/env python3
"""Convert a llama-architecture GGUF file into a Hugging Face checkpoint folder.

    gguf_to_hf.py MODEL.gguf OUT_DIR [--dtype f32|bf16] [--shards N]

Writes, in OUT_DIR:
  config.json            LlamaForCausalLM hyper-parameters from the llama.* keys
  model.safetensors      every tensor dequantized (gguf.quants.dequantize) and stored as F32
                         (exact: every GGUF format's values are fp32 numbers) or BF16 (rounded);
                         with --shards N > 1, model-0000K-of-0000N.safetensors files and
                         model.safetensors.index.json instead
  tokenizer.json         the GGUF vocabulary as a tokenizers BPE model: byte-level (gpt2 models,
                         with the pre-tokenizer of tokenizer.ggml.pre) or SentencePiece-style
                         (llama models; merges derived from the scores as transformers'
                         SentencePieceExtractor does)
  tokenizer_config.json  bos/eos/unk tokens, add_bos_token/add_eos_token, chat_template

Tensor names follow transformers' Llama (model.layers.N.self_attn.q_proj.weight, ...). llama.cpp's
converter permutes the rows of q_proj and k_proj so that RoPE rotates adjacent pairs:
    w.reshape(n_head, 2, head_dim // 2, n_in).swapaxes(1, 2).reshape(w.shape)
(n_head_kv heads for k_proj). This script applies the inverse, so the folder holds Hugging Face's
rotate-half layout. Only numpy and the gguf package are needed (no torch, no safetensors).

The medusa-tp tests use it to check that SmolLM2 loaded from a folder gives the same tokens and
perplexity as the GGUF it came from.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

try:
    import gguf
    from gguf import quants
except ImportError:  # pragma: no cover
    sys.exit("gguf_to_hf.py needs the gguf package: pip install numpy gguf")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def require(reader, key):
    value = field(reader, key)
    if value is None:
        sys.exit(f"{reader.path}: missing metadata key {key!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------

def unpermute(w, heads):
    """Inverse of llama.cpp's Q/K row permutation: GGUF (adjacent pairs) -> HF (halves)."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_bf16_bytes(a):
    """float32 -> bfloat16 bits, round to nearest even (NaNs stay NaN)."""
    bits = a.astype(np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded.tobytes()


def hf_name(name):
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    parts = name.split(".")
    if parts[0] != "blk":
        return None
    layer, rest = parts[1], ".".join(parts[2:])
    mapping = {
        "attn_norm.weight": "input_layernorm.weight",
        "attn_q.weight": "self_attn.q_proj.weight",
        "attn_k.weight": "self_attn.k_proj.weight",
        "attn_v.weight": "self_attn.v_proj.weight",
        "attn_output.weight": "self_attn.o_proj.weight",
        "ffn_norm.weight": "post_attention_layernorm.weight",
        "ffn_gate.weight": "mlp.gate_proj.weight",
        "ffn_up.weight": "mlp.up_proj.weight",
        "ffn_down.weight": "mlp.down_proj.weight",
    }
    return f"model.layers.{layer}.{mapping[rest]}" if rest in mapping else None


def write_safetensors(path, tensors):
    """tensors: list of (name, dtype string, shape, bytes). Header padded to 8 bytes, as the
    reference writer does."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, data in tensors:
            f.write(data)
    return offset


def convert_weights(reader, out_dir, dtype, shards):
    heads = int(require(reader, "llama.attention.head_count"))
    kv_heads = int(field(reader, "llama.attention.head_count_kv", heads))
    converted = []
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None:
            print(f"skipping tensor {t.name}", file=sys.stderr)
            continue
        values = np.asarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        values = values.reshape(shape)
        if t.name.endswith("attn_q.weight"):
            values = unpermute(values, heads)
        elif t.name.endswith("attn_k.weight"):
            values = unpermute(values, kv_heads)
        if dtype == "f32":
            data, st_dtype = np.ascontiguousarray(values, dtype="<f4").tobytes(), "F32"
        else:
            data, st_dtype = to_bf16_bytes(np.ascontiguousarray(values)), "BF16"
        converted.append((name, st_dtype, shape, data))

    if shards <= 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), converted)
        return
    per_shard = -(-len(converted) // shards)
    weight_map, total = {}, 0
    for s in range(shards):
        part = converted[s * per_shard:(s + 1) * per_shard]
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        total += write_safetensors(os.path.join(out_dir, file), part)
        for name, _, _, _ in part:
            weight_map[name] = file
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def write_config(reader, out_dir, dtype):
    heads = int(require(reader, "llama.attention.head_count"))
    hidden = int(require(reader, "llama.embedding_length"))
    tokens = require(reader, "tokenizer.ggml.tokens")
    head_dim = int(field(reader, "llama.attention.key_length", hidden // heads))
    if int(field(reader, "llama.rope.dimension_count", head_dim)) != head_dim:
        sys.exit(f"{reader.path}: partial RoPE has no Hugging Face Llama equivalent")
    if field(reader, "llama.rope.scaling.type", "none") not in ("none", ""):
        sys.exit(f"{reader.path}: RoPE scaling is not converted")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(require(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(require(reader, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(field(reader, "llama.attention.head_count_kv", heads)),
        "max_position_embeddings": int(require(reader, "llama.context_length")),
        "rms_norm_eps": float(require(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(reader, "llama.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "vocab_size": int(field(reader, "llama.vocab_size", len(tokens))),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32" if dtype == "f32" else "bfloat16",
    }
    if head_dim != hidden // heads:
        config["head_dim"] = head_dim
    for key in ("bos", "eos"):
        value = field(reader, f"tokenizer.ggml.{key}_token_id")
        if value is not None:
            config[f"{key}_token_id"] = int(value)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

def sentencepiece_merges(tokens, scores, types):
    """transformers' SentencePieceExtractor: for each normal piece, highest score first, every split
    into two pieces that are both tokens, ordered by (left id, right id)."""
    ids = {t: i for i, t in enumerate(tokens)}
    merges = []
    for piece, text in enumerate(tokens):
        if types[piece] != 1 or len(text) < 2:
            continue
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in ids and right in ids:
                merges.append((-scores[piece], piece, ids[left], ids[right], left, right))
    merges.sort()
    return [[m[4], m[5]] for m in merges]


def convert_tokenizer(reader, out_dir):
    tokens = [str(t) for t in require(reader, "tokenizer.ggml.tokens")]
    types = [int(t) for t in field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))]
    model_name = require(reader, "tokenizer.ggml.model")
    vocab = {t: i for i, t in enumerate(tokens)}
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": types[i] == 4, "special": types[i] != 4}
             for i, t in enumerate(tokens) if types[i] in (2, 3, 4)]
    model = {"type": "BPE", "dropout": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
             "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": vocab}
    tokenizer = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added}
    defaults = {}
    if model_name == "gpt2":
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        pre = field(reader, "tokenizer.ggml.pre", "gpt-2")
        if pre in ("llama-bpe", "llama3", "llama-v3"):
            split = {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False}
            tokenizer["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [split, dict(byte_level, use_regex=False)]}
            model["ignore_merges"] = True
        elif pre in ("starcoder", "smollm", "refact", "command-r"):
            digits = {"type": "Digits", "individual_digits": True}
            tokenizer["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [digits, byte_level]}
        elif pre in ("gpt-2", "default", "mpt", "phi-2", "olmo"):
            tokenizer["pre_tokenizer"] = byte_level
        else:
            sys.exit(f"{reader.path}: no tokenizer.json pre-tokenizer for tokenizer.ggml.pre {pre!r}")
        tokenizer["normalizer"] = None
        tokenizer["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
        tokenizer["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
        model["merges"] = [str(m).split(" ", 1) for m in require(reader, "tokenizer.ggml.merges")]
    elif model_name == "llama":
        scores = [float(s) for s in field(reader, "tokenizer.ggml.scores", [0.0] * len(tokens))]
        prefix = bool(field(reader, "tokenizer.ggml.add_space_prefix", True))
        normalizers = [{"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]
        if prefix:
            normalizers.insert(0, {"type": "Prepend", "prepend": "\u2581"})
        tokenizer["normalizer"] = {"type": "Sequence", "normalizers": normalizers}
        tokenizer["pre_tokenizer"] = None
        tokenizer["post_processor"] = None
        tokenizer["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
        model.update(byte_fallback=True, fuse_unk=True,
                     unk_token=tokens[int(field(reader, "tokenizer.ggml.unknown_token_id", 0))],
                     merges=sentencepiece_merges(tokens, scores, types))
        defaults = {"bos": 1, "eos": 2}
    else:
        sys.exit(f"{reader.path}: no tokenizer.json layout for tokenizer.ggml.model {model_name!r}")
    tokenizer["model"] = model
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)

    config = {"model_max_length": int(field(reader, "llama.context_length", 2048)),
              "clean_up_tokenization_spaces": False,
              "tokenizer_class": "LlamaTokenizer" if model_name == "llama" else "PreTrainedTokenizerFast"}
    for key in ("bos", "eos", "unknown"):
        value = field(reader, f"tokenizer.ggml.{key}_token_id", defaults.get(key))
        if value is not None:
            config["unk_token" if key == "unknown" else f"{key}_token"] = tokens[int(value)]
    for key in ("add_bos_token", "add_eos_token"):
        value = field(reader, f"tokenizer.ggml.{key}")
        if value is not None:
            config[key] = bool(value)
    template = field(reader, "tokenizer.chat_template")
    if template is not None:
        config["chat_template"] = str(template)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf", help="llama-architecture GGUF file")
    parser.add_argument("out", help="output folder (created if missing)")
    parser.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                        help="f32 keeps the dequantized values exactly; bf16 rounds them")
    parser.add_argument("--shards", type=int, default=1, help="split the weights over N safetensors files")
    args = parser.parse_args()

    reader = gguf.GGUFReader(args.gguf)
    arch = field(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"{args.gguf}: general.architecture is {arch!r}, expected 'llama'")
    os.makedirs(args.out, exist_ok=True)
    write_config(reader, args.out, args.dtype)
    convert_weights(reader, args.out, args.dtype, args.shards)
    convert_tokenizer(reader, args.out)
    print(json.dumps({"out": args.out, "dtype": args.dtype, "shards": max(1, args.shards)}))


if __name__ == "__main__":
    main()
