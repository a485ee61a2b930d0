#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/smollm2_llamacpp.json: reference token ids for the
SmolLM2-135M-Instruct GGUF (tokenizer.ggml.pre = "smollm"), made by llama.cpp's
`llama-tokenize` (special tokens parsed, as keel's encode does; escapes not processed;
the text fed on stdin so every byte is kept).

Usage: tools/make-smollm-tokenizer-vectors.py LLAMA_TOKENIZE MODEL.gguf [OUT.json]
"""
import json
import pathlib
import subprocess
import sys

TEXTS = [
    "Hello world",
    " Hello world",
    "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
    "2024 was 365 days; 3.14159 and 1,000,000 and 0x1F",
    "   leading and trailing spaces   ",
    "line one\nline two\n\n\nthree newlines\r\nwindows\ttab",
    "    def f(x):\n        return x ** 2  # squares\n",
    "naïve café résumé — “quotes” and ‘single’ … ellipsis",
    "Ελληνικά, русский, العربية, हिन्दी, 日本語のテキスト, 한국어",
    "emoji: 🦙🚀 😶‍🌫️ 👍🏽 ✅ flags 🇫🇷",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea?",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text<|im_end|><|im_start|> spaced <|im_end|>",
    "<file_sep><filename>main.rs<jupyter_code>fn main() {}",
    "not special: <|im_start and im_end|> <|unknown|>",
    "",
    " ",
    "\n",
    "a" * 50 + " " + "ab" * 20,
    "$$$ ### @@@ !!! ??? ((( ))) [[[ ]]] {{{ }}} <<< >>>",
]


def tokenize(binary, model, text):
    out = subprocess.run(
        [binary, "-m", model, "--stdin", "--ids", "--no-escape", "--log-disable"],
        input=text.encode("utf-8"),
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8")
    line = [l for l in out.splitlines() if l.startswith("[")][-1]
    return json.loads(line)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    binary, model = sys.argv[1], sys.argv[2]
    root = pathlib.Path(__file__).resolve().parent.parent
    out = pathlib.Path(sys.argv[3]) if len(sys.argv) == 4 else root / "tests/fixtures/tokenizer/smollm2_llamacpp.json"
    cases = []
    for text in TEXTS:
        ids = tokenize(binary, model, text)
        # SmolLM2 sets tokenizer.ggml.add_bos_token = false: no BOS either way.
        cases.append({"text": text, "add_special": True, "ids": ids})
    cases.append({"text": TEXTS[0], "add_special": False, "ids": tokenize(binary, model, TEXTS[0])})
    head = {
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf (tokenizer.ggml.pre = smollm)",
        "reference": "llama.cpp llama-tokenize (vendored in llama-cpp-python 0.3.36), special tokens parsed",
        "generator": "tools/make-smollm-tokenizer-vectors.py",
    }
    # One case per line keeps the file reviewable.
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    lines.append(' "cases": [')
    lines.append(",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases))
    lines += [" ]", "}"]
    json.loads("\n".join(lines))  # well-formed
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
