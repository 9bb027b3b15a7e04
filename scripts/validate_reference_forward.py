#!/usr/bin/env python3
"""Checks scripts/reference_forward.py against llama.cpp (through llama-cpp-python).

  validate_reference_forward.py [MODEL.gguf] [--text Tests/Data/perplexity.txt] [--ctx 128] [--json OUT]

MODEL defaults to $MEDUSA_MODEL. Steps:
 1. Dequantization: a few rows of each quantized tensor type decoded by hand here agree exactly with
    gguf.quants.dequantize, and the dequantized shapes are GGML's dims reversed.
 2. An "F32 twin" of the model (every tensor dequantized and stored as F32, metadata copied) is
    written to a temporary file. llama.cpp runs it with an F32 KV cache, so no arithmetic is
    quantized on either side: its logits must match the reference to fp32 rounding. This is the
    check of the forward itself (RoPE pairing, GQA, norms, tied head).
 3. The original quantized file in llama.cpp with default settings (8-bit activations in quantized
    matmuls, F16 KV cache) against the reference: the differences llama.cpp's arithmetic makes.
 4. Perplexity on --text at --ctx from the reference and from both llama.cpp runs, all scored by
    the same convention (reference_forward.perplexity's indices, llama.cpp's log-softmax).
 5. The SmolLM2 chat prompt "What is the capital of France?": top-5 first-token logits and the
    40-token greedy continuation from every side.
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_forward as rf  # noqa: E402

import gguf  # noqa: E402
from gguf import quants  # noqa: E402

try:
    import llama_cpp
    from llama_cpp import Llama
except ImportError:  # pragma: no cover
    sys.exit("validation needs llama-cpp-python: pip install -r scripts/requirements.txt")

SHORT_PROMPT = (
    b"The old lighthouse keeper climbed the spiral stairs every evening, counting each step aloud, "
    b"because the habit reminded him that even small things add up over the years, like grains of sand "
    b"drifting onto the beach below."
)
FRANCE_IDS = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712,
              8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# 1. Dequantization by hand
# ---------------------------------------------------------------------------------------------

def f16(raw, at):
    return raw[..., at:at + 2].copy().view(np.float16).astype(np.float32)[..., 0]


def decode_q8_0(raw):
    """raw: (rows, blocks*34) bytes. Block: f16 scale d, 32 int8 q; value = d * q."""
    b = raw.reshape(raw.shape[0], -1, 34)
    d = f16(b, 0)
    q = b[..., 2:].view(np.int8).astype(np.float32)
    return (d[..., None] * q).reshape(raw.shape[0], -1)


def decode_q4_1(raw):
    """Block: f16 d, f16 m, 16 bytes; value j = d * nibble + m, with the low nibbles of the 16 bytes
    holding values 0..15 and the high nibbles values 16..31."""
    b = raw.reshape(raw.shape[0], -1, 20)
    d, m = f16(b, 0), f16(b, 2)
    qs = b[..., 4:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)
    return (d[..., None] * q + m[..., None]).reshape(raw.shape[0], -1)


def decode_q4_0(raw):
    """Block: f16 d, 16 bytes; value = d * (nibble - 8), nibbles ordered as in Q4_1."""
    b = raw.reshape(raw.shape[0], -1, 18)
    d = f16(b, 0)
    qs = b[..., 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32) - 8
    return (d[..., None] * q).reshape(raw.shape[0], -1)


def check_dequantization(reader):
    by_hand = {
        gguf.GGMLQuantizationType.Q8_0: decode_q8_0,
        gguf.GGMLQuantizationType.Q4_1: decode_q4_1,
        gguf.GGMLQuantizationType.Q4_0: decode_q4_0,
    }
    checked = {}
    for t in reader.tensors:
        expected_shape = tuple(int(d) for d in reversed(t.shape))
        if t.tensor_type in by_hand:
            if t.tensor_type.name in checked:
                continue
            rows = np.asarray(t.data[:7])
            mine = by_hand[t.tensor_type](rows)
            theirs = quants.dequantize(rows, t.tensor_type)
            assert mine.shape == theirs.shape == (7, expected_shape[-1]), (t.name, mine.shape, theirs.shape)
            assert np.array_equal(mine, theirs), f"{t.name}: hand-decoded {t.tensor_type.name} differs"
            full = quants.dequantize(t.data, t.tensor_type)
            assert full.shape == expected_shape, (t.name, full.shape, list(t.shape))
            checked[t.tensor_type.name] = t.name
    return checked


# ---------------------------------------------------------------------------------------------
# 2. The F32 twin
# ---------------------------------------------------------------------------------------------

def write_f32_twin(reader, path):
    w = gguf.GGUFWriter(path, rf.field(reader, "general.architecture"))
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == "general.file_type":
            w.add_key_value(key, 0, gguf.GGUFValueType.UINT32)  # all F32
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), vtype, sub)
    for t in reader.tensors:
        w.add_tensor(t.name, np.ascontiguousarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------------------------------------
# llama.cpp side
# ---------------------------------------------------------------------------------------------

class LlamaCpp:
    def __init__(self, path, n_ctx, f32_cache=False):
        extra = dict(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32) if f32_cache else {}
        self.llm = Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False,
                         n_threads=max(1, min(2, os.cpu_count() or 1)), **extra)

    def logits(self, tokens):
        """Logits of every position, from an empty cache."""
        self.llm.reset()
        self.llm.eval(list(tokens))
        return np.array(self.llm.scores[:len(tokens)], dtype=np.float32)

    def greedy(self, prompt, n):
        self.llm.reset()
        self.llm.eval(list(prompt))
        first = np.array(self.llm.scores[len(prompt) - 1], dtype=np.float32)
        out = []
        last = first
        for _ in range(n):
            t = int(np.argmax(last))
            out.append(t)
            if len(out) == n:
                break
            self.llm.eval([t])
            last = np.array(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float32)
        return first, out

    def perplexity(self, tokens, ctx, bos_id=None):
        """llama.cpp's perplexity convention, with its logits (see reference_forward.py)."""
        n_chunk = len(tokens) // ctx
        first = ctx // 2
        nll, count = 0.0, 0
        for c in range(n_chunk):
            chunk = list(tokens[c * ctx:(c + 1) * ctx])
            if bos_id is not None:
                chunk[0] = bos_id
            logits = self.logits(chunk)
            for i in range(first, ctx - 1):
                nll -= rf.log_softmax_at(logits[i], tokens[c * ctx + i + 1])
                count += 1
        return {"ppl": math.exp(nll / count), "tokens_scored": count, "chunks": n_chunk, "nll": nll / count}


def compare(name, ref, other):
    d = np.abs(ref.astype(np.float64) - other.astype(np.float64))
    agree = ref.argmax(-1) == other.argmax(-1)
    r = {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
         "top1_agreement": float(np.mean(agree)), "positions": int(ref.shape[0]),
         "logit_std": float(ref.std())}
    log(f"  {name}: max |diff| {r['max_abs_diff']:.3g}, mean |diff| {r['mean_abs_diff']:.3g}, "
        f"top-1 agreement {agree.sum()}/{len(agree)} (reference logit std {r['logit_std']:.2f})")
    return r


def top_k(model, logits, k=5):
    order = np.argsort(-logits.astype(np.float64), kind="stable")[:k]
    return [{"id": int(i), "piece": rf.decode(model, [int(i)]), "logit": round(float(logits[i]), 4)} for i in order]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default=os.environ.get("MEDUSA_MODEL"))
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--text", default=os.path.join(here, "..", "Tests", "Data", "perplexity.txt"))
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--greedy", type=int, default=40)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    if not args.model:
        p.error("give the model path or set MEDUSA_MODEL")
    results = {"model": args.model}

    log("1. dequantization by hand vs gguf.quants")
    reader = gguf.GGUFReader(args.model)
    results["dequantization_checked"] = check_dequantization(reader)
    log(f"  exact for {results['dequantization_checked']}")

    t0 = time.time()
    ref32 = rf.LlamaModel(args.model, np.float32)
    log(f"reference model loaded in {time.time() - t0:.1f}s")
    cpp_q = LlamaCpp(args.model, n_ctx=max(256, args.ctx))
    prompt = cpp_q.llm.tokenize(SHORT_PROMPT, add_bos=ref32.add_bos, special=True)
    text = open(args.text, "rb").read()
    # llama.cpp's perplexity tool tokenizes with add_special=true, parse_special=false.
    text_tokens = cpp_q.llm.tokenize(text, add_bos=ref32.add_bos, special=False)
    results["prompt_tokens"] = len(prompt)
    results["text"] = {"path": os.path.relpath(args.text), "bytes": len(text), "tokens": len(text_tokens)}

    with tempfile.TemporaryDirectory() as tmp:
        twin_path = os.path.join(tmp, "f32-twin.gguf")
        log("2. F32 twin in llama.cpp (F32 KV cache) vs reference")
        write_f32_twin(reader, twin_path)
        cpp_f32 = LlamaCpp(twin_path, n_ctx=max(256, args.ctx), f32_cache=True)
        ref_logits = rf.forward(ref32, prompt)
        results["logits_f32_twin"] = compare("F32 twin", ref_logits, cpp_f32.logits(prompt))

        log("3. quantized file in llama.cpp (default settings) vs reference")
        results["logits_quantized"] = compare("Q4_1 file", ref_logits, cpp_q.logits(prompt))

        log(f"4. perplexity at ctx {args.ctx} on {args.text} ({len(text_tokens)} tokens)")
        bos = ref32.bos_id if ref32.add_bos else None
        t0 = time.time()
        results["ppl_reference"] = rf.perplexity(ref32, text_tokens, args.ctx)
        log(f"  reference fp32: {results['ppl_reference']} ({time.time() - t0:.1f}s)")
        results["ppl_llama_cpp_f32_twin"] = cpp_f32.perplexity(text_tokens, args.ctx, bos)
        log(f"  llama.cpp F32 twin: {results['ppl_llama_cpp_f32_twin']}")
        results["ppl_llama_cpp"] = cpp_q.perplexity(text_tokens, args.ctx, bos)
        log(f"  llama.cpp Q4_1 file: {results['ppl_llama_cpp']}")

        log(f"5. France prompt: top-5 and {args.greedy} greedy tokens")
        france = {}
        for name, model in [("reference_fp32", ref32), ("reference_fp64", None)]:
            if model is None:
                model = rf.LlamaModel(args.model, np.float64)
            g = rf.greedy(model, FRANCE_IDS, args.greedy, top_k=5)
            france[name] = {"top5": [{**t, "logit": round(t["logit"], 4)} for t in g["top"]],
                            "tokens": g["tokens"], "text": g["text"]}
            del model
        for name, cpp in [("llama_cpp_q4_1", cpp_q), ("llama_cpp_f32_twin", cpp_f32)]:
            first, ids = cpp.greedy(FRANCE_IDS, args.greedy)
            france[name] = {"top5": top_k(ref32, first), "tokens": ids, "text": rf.decode(ref32, ids)}
        results["france"] = france
        for name, r in france.items():
            top = ", ".join(f"{t['piece']!r} {t['logit']:.3f}" for t in r["top5"])
            log(f"  {name}: {top}\n    {r['text']!r}")
        del cpp_f32

    out = json.dumps(results, ensure_ascii=False, indent=1)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(out + "\n")
    print(out)


if __name__ == "__main__":
    main()
