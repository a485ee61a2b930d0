#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vectors — models/ggml-vocab-<name>.gguf (vocab only,
# no tensors) with their .inp/.out files — for the tokenizer.ggml.pre types keel supports,
# into ${KEEL_HOME:-$HOME/.cache/keel}/test-assets/llama-vocab/ (runtime/tests/tokenizer_vectors.rs
# reads them from there, or from $KEEL_VOCAB_DIR).
#
# Source: the llama-cpp-python sdist on PyPI, which vendors llama.cpp (pinned so that the
# expected ids do not move under the tests). Idempotent: does nothing when all files exist.
set -euo pipefail

version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
dest="${KEEL_VOCAB_DIR:-${KEEL_HOME:-$HOME/.cache/keel}/test-assets/llama-vocab}"
names=(gpt-2 llama-bpe qwen2 qwen35 starcoder refact command-r mpt falcon)

files=()
for n in "${names[@]}"; do
    for ext in gguf gguf.inp gguf.out; do
        files+=("ggml-vocab-$n.$ext")
    done
done

missing=()
for f in "${files[@]}"; do
    [ -s "$dest/$f" ] || missing+=("$f")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "llama.cpp vocab test files already in $dest"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "downloading llama-cpp-python $version sdist (~75 MB) for ${#missing[@]} missing files"
# --no-binary for this one package only: `--no-binary :all:` would build cmake from source.
python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$version" -d "$tmp"
sdist="$(ls "$tmp"/llama_cpp_python-*.tar.gz)"

patterns=()
for f in "${missing[@]}"; do
    patterns+=("*/vendor/llama.cpp/models/$f")
done
mkdir -p "$tmp/x"
tar -xzf "$sdist" -C "$tmp/x" --wildcards "${patterns[@]}"

mkdir -p "$dest"
for f in "${missing[@]}"; do
    src="$(find "$tmp/x" -path "*/vendor/llama.cpp/models/$f" -print -quit)"
    if [ -z "$src" ]; then
        echo "error: $f is not in llama-cpp-python $version" >&2
        exit 1
    fi
    # Copy then rename, so an interrupted run never leaves a truncated file behind.
    cp "$src" "$dest/.$f.part"
    mv "$dest/.$f.part" "$dest/$f"
done
echo "llama.cpp vocab test files in $dest"
