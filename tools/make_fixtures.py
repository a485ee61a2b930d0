#!/usr/bin/env python3
"""Generate the tiny deterministic test fixtures under ``tests/fixtures/tiny/``.

Run from the repository root (or anywhere; paths are relative to this file):

    /opt/refenv/bin/python tools/make_fixtures.py

Python packages needed (PyPI): ``torch`` (CPU is enough), ``transformers`` (5.x; written
against 5.23), ``safetensors``, ``tokenizers``, ``numpy``, ``gguf`` (0.19+) and ``accelerate``
(not strictly needed).

What it writes (everything is seeded, so reruns give the same bytes up to library versions; the
output directories are deleted and rebuilt on every run):

* ``tiny/tokenizer/``: a byte-level BPE tokenizer trained on the small English text embedded
  below (``tokenizer.json`` + ``tokenizer_config.json``); every HF fixture gets a copy.
* ``tiny/llama_gqa_tied``           Llama, GQA 4/2, tied embeddings, f32, transformers-5 config.
* ``tiny/llama_untied_llama3rope``  Llama, 4/4, untied, llama3 rope scaling, bf16 weights,
                                    config rewritten in the legacy (transformers 4.x) key style.
* ``tiny/qwen2_bias``               Qwen2 with q/k/v biases, 4/2, tied, f16 weights, vocab padded
                                    past the tokenizer, legacy-style config.
* ``tiny/qwen2_bias_sharded``       the same model saved as 2+ safetensors shards + index.
* ``tiny/llama_f32_untied``         Llama, 8/2 heads, head_dim 8, untied, f32, transformers-5 config.
* ``tiny/llama_gguf_q/model.gguf``  llama GGUF with Q8_0/Q4_0/Q4_1/Q5_0/F16/BF16/F32 tensors, tied.
* ``tiny/llama_gguf_k/model.gguf``  llama GGUF (hidden 256) with Q4_K/Q6_K tensors, untied.

Each fixture directory has a ``reference.json`` (see ``tests/fixtures/README.md``) computed with
HF transformers in float32, eager attention.  Greedy continuations are a plain argmax over the
full logits row at every step (EOS is neither suppressed nor a stop condition).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

import gguf
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize, quantize
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "tiny"

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOKENIZER_VOCAB = 384
N_GREEDY = 12
MIN_MARGIN = 5e-3  # every greedy step must win by at least this much (f32 noise is ~1e-6)

# SmolLM2-Instruct's chat template, verbatim.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TRAIN_TEXT = """\
The quick brown fox jumps over the lazy dog. The dog was not amused, and the fox ran away into the forest.
Once upon a time there was a small village by the sea. The people of the village were fishers and farmers.
Every morning the boats went out, and every evening they came back with fish, stories and songs.
A helpful assistant answers questions clearly and politely. It says hello, thank you, and you are welcome.
What is the weather like today? It is sunny and warm, with a light wind from the west.
Where is the library? The library is next to the old church, behind the market square.
How do you make bread? Mix flour, water, salt and yeast, then knead the dough and let it rise.
Rust is a systems programming language. It is fast, safe and fun to use for writing software.
Machine learning models predict the next token from the previous tokens in the text.
She sells sea shells by the sea shore, and the shells she sells are surely sea shells.
We will meet at the station at noon; don't be late, and bring your ticket and a warm coat.
There are many things in the world: mountains, rivers, cities, people, animals and ideas.
The cat sat on the mat. The cat is happy. The dog is happy too. Everyone is happy.
Hello there! How are you? I am fine, thanks. Let's go for a walk in the park this afternoon.
Numbers like 1, 2, 3, 10, 42 and 2024 appear in text, and so do symbols such as $, %, & and #.
Café, naïve, résumé and jalapeño are words with accents; 日本 means Japan. 🙂
"""

TOKENIZER_TEXTS = [
    "Hello world, this is a test.",
    "  leading spaces,\ttabs and\nnew lines\n\n end",
    "<|im_start|>user\nWhat is the weather like?<|im_end|>\n",
    "Café naïve résumé — 日本語 🙂👍",
    " the quick brown fox jumps over the lazy dog",
    "Numbers 12345 and symbols: $%&*()[]{} \"quoted\" it's we'll",
]


# --------------------------------------------------------------------------------------------
# helpers


def f32_list(t: torch.Tensor):
    """Nested python lists of exact f32 values (python floats are doubles; f32 -> f64 is exact)."""
    return t.detach().to(torch.float32).cpu().tolist()


def write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# --------------------------------------------------------------------------------------------
# tokenizer


def build_tokenizer(out: Path) -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        min_frequency=1,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAIN_TEXT.splitlines(), trainer)
    assert tok.get_vocab_size() == TOKENIZER_VOCAB, tok.get_vocab_size()
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i
    fresh_dir(out)
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 256,
        "chat_template": CHAT_TEMPLATE,
    }
    write_json(out / "tokenizer_config.json", cfg)


QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def copy_tokenizer(tok_dir: Path, out: Path, qwen2: bool) -> None:
    """Copies the shared tokenizer into a model directory. For qwen2 models the
    pre-tokenizer becomes Qwen2's own (split regex, then byte-level without regex), as in
    real Qwen2 checkpoints: transformers 5 builds Qwen2's tokenizer class with that
    pre-tokenizer whatever tokenizer.json says, so the file must agree with it."""
    shutil.copy(tok_dir / "tokenizer_config.json", out / "tokenizer_config.json")
    tj = json.loads((tok_dir / "tokenizer.json").read_text())
    if qwen2:
        tj["pre_tokenizer"] = {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        }
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False))


def tokenizer_reference(tok, tokenizer_json: Path) -> tuple[list, dict]:
    cases = [{"text": t, "ids": tok(t, add_special_tokens=True)["input_ids"]} for t in TOKENIZER_TEXTS]
    # What the transformers class does must be what tokenizer.json says (keel reads the file).
    raw = Tokenizer.from_file(str(tokenizer_json))
    for c in cases:
        assert raw.encode(c["text"], add_special_tokens=False).ids == c["ids"], (tokenizer_json, c)
    for c in cases:  # the byte-level BPE must round-trip
        assert tok.decode(c["ids"], skip_special_tokens=False) == c["text"], c
    messages = [{"role": "user", "content": "Hi there"}]
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    chat = {
        "messages": messages,
        "add_generation_prompt": True,
        "rendered": rendered,
        "ids": tok(rendered, add_special_tokens=False)["input_ids"],
    }
    return cases, chat


# --------------------------------------------------------------------------------------------
# model reference outputs


def make_inputs(seed: int, tok_vocab: int) -> list[list[int]]:
    g = np.random.default_rng(seed)
    a = g.integers(3, tok_vocab, size=5).tolist()
    b = [1] + g.integers(3, tok_vocab, size=10).tolist()  # starts with <|im_start|>
    c = g.integers(3, tok_vocab, size=1).tolist()
    return [a, b, c]


@torch.no_grad()
def greedy(model, prompt: list[int], n: int) -> tuple[list[int], float]:
    """Plain argmax decoding with full recomputation every step. Returns (ids, min top-2 margin)."""
    ids = list(prompt)
    margin = float("inf")
    for _ in range(n):
        logits = model(torch.tensor([ids])).logits[0, -1].float()
        top2 = torch.topk(logits, 2).values
        margin = min(margin, float(top2[0] - top2[1]))
        ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):], margin


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


@torch.no_grad()
def model_reference(model, inputs: list[list[int]]) -> tuple[dict, float]:
    model.eval()
    logits = [f32_list(model(torch.tensor([ids])).logits[0]) for ids in inputs]
    gre = []
    worst = float("inf")
    for ids in inputs:
        comp, margin = greedy(model, ids, N_GREEDY)
        check_generate(model, ids, comp)
        worst = min(worst, margin)
        gre.append({"prompt_ids": ids, "completion_ids": comp, "min_margin": margin})
    return {"inputs": inputs, "logits": logits, "greedy": gre}, worst


def greedy_ok(ref: dict, worst: float) -> bool:
    distinct = set()
    for g in ref["greedy"]:
        distinct |= set(g["completion_ids"])
        if len(set(g["completion_ids"])) < 3:
            return False
    return worst >= MIN_MARGIN and len(distinct) >= 8


def randomize(model, seed: int, std: float) -> None:
    """Overwrite every parameter with seeded random values (norm weights around 1, biases nonzero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.2 * r)
            elif name.endswith(".bias"):
                p.copy_(0.5 * r)
            else:
                p.copy_(std * r)


# --------------------------------------------------------------------------------------------
# config rewriting (legacy key style)


def legacy_config(path: Path, rope_scaling) -> None:
    """Rewrite a transformers-5 config.json into the transformers-4.x key style used by most Hub
    checkpoints: top-level ``rope_theta`` + ``rope_scaling`` instead of ``rope_parameters``, and
    ``torch_dtype`` instead of ``dtype``.  (Transformers 5 still reads this style; the reference is
    computed from a reload of the rewritten directory.)"""
    cfg = json.loads(path.read_text())
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp["rope_theta"]
    cfg["rope_scaling"] = rope_scaling
    cfg["torch_dtype"] = cfg.pop("dtype")
    cfg.pop("layer_types", None)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------
# HF fixtures


def hf_fixture(name, cls, cfg, seed, save_dtype, tok_dir, tok_vocab, std, legacy=False, rope_scaling=None, shard_copy=None):
    """Build, randomize (re-seeding until greedy decoding is varied and robust), save, reload in
    f32 from disk and record the reference."""
    out = OUT / name
    for attempt in range(50):
        s = seed + attempt
        torch.manual_seed(s)
        model = cls(cfg).eval()
        randomize(model, s, std)
        # round the weights (not the rope buffers) to the storage dtype, so that what we test is
        # what we save
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(save_dtype).to(torch.float32))
        inputs = make_inputs(s, tok_vocab)
        ref, worst = model_reference(model, inputs)
        if greedy_ok(ref, worst):
            break
    else:
        raise RuntimeError(f"{name}: no seed gave varied greedy output")
    print(f"{name}: seed {s}, min greedy margin {worst:.4g}")

    fresh_dir(out)
    copy.deepcopy(model).to(save_dtype).save_pretrained(out, safe_serialization=True)
    if legacy:
        legacy_config(out / "config.json", rope_scaling)
    copy_tokenizer(tok_dir, out, qwen2=cls is Qwen2ForCausalLM)

    # reference from what is on disk: weights in the storage dtype, upcast to f32, f32 math
    disk = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    assert disk.dtype == torch.float32
    ref2, worst2 = model_reference(disk, inputs)
    assert ref2["logits"] == ref["logits"], f"{name}: reload changed the logits"
    tok = AutoTokenizer.from_pretrained(out)
    ref2["tokenizer"], ref2["chat"] = tokenizer_reference(tok, out / "tokenizer.json")
    ref2["config"] = {"vocab_size": disk.config.vocab_size, "tokenizer_vocab_size": tok_vocab, "weights_dtype": str(save_dtype).replace("torch.", ""), "seed": s}
    write_json(out / "reference.json", ref2)

    if shard_copy is not None:
        sdir = fresh_dir(OUT / shard_copy)
        copy.deepcopy(model).to(save_dtype).save_pretrained(sdir, safe_serialization=True, max_shard_size="100KB")
        if legacy:
            legacy_config(sdir / "config.json", rope_scaling)
        copy_tokenizer(tok_dir, sdir, qwen2=cls is Qwen2ForCausalLM)
        shards = sorted(p.name for p in sdir.glob("*.safetensors"))
        assert len(shards) >= 2 and (sdir / "model.safetensors.index.json").exists(), shards
        sm = AutoModelForCausalLM.from_pretrained(sdir, dtype=torch.float32, attn_implementation="eager").eval()
        ref3, _ = model_reference(sm, inputs)
        assert ref3["logits"] == ref2["logits"]
        write_json(sdir / "reference.json", ref2)
        print(f"{shard_copy}: {len(shards)} shards")
    return ref2


# --------------------------------------------------------------------------------------------
# k-quant packers (gguf-py 0.19 can dequantize but not quantize Q4_K / Q6_K)


def quant_q4_k(x: np.ndarray) -> np.ndarray:
    """Simple (not llama.cpp's search-based) Q4_K quantizer producing valid block_q4_K bytes."""
    rows, cols = x.shape
    assert cols % 256 == 0
    b = x.reshape(-1, 8, 32).astype(np.float32)
    nb = b.shape[0]
    m = np.maximum(0.0, -b.min(-1))  # per-subblock min offset (>= 0)
    s = (b.max(-1) + m) / 15.0
    d = (s.max(-1) / 63.0).astype(np.float16)
    dmin = (m.max(-1) / 63.0).astype(np.float16)
    df = d.astype(np.float32)[:, None]
    dmf = dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(df > 0, np.clip(np.round(s / df), 0, 63), 0).astype(np.uint8)
        mq = np.where(dmf > 0, np.clip(np.round(m / dmf), 0, 63), 0).astype(np.uint8)
        es = (df * sc)[..., None]
        em = (dmf * mq)[..., None]
        q = np.where(es > 0, np.clip(np.round((b + em) / es), 0, 15), 0).astype(np.uint8)
    scales = np.zeros((nb, 12), np.uint8)
    scales[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = mq[:, 0:4] | ((mq[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0xF) | ((mq[:, 4:8] & 0xF) << 4)
    q = q.reshape(nb, 4, 2, 32)
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(nb, 128)
    blk = np.concatenate([d.reshape(nb, 1).view(np.uint8), dmin.reshape(nb, 1).view(np.uint8), scales, qs], axis=1)
    assert blk.shape[1] == 144
    return blk.reshape(rows, -1)


def quant_q6_k(x: np.ndarray) -> np.ndarray:
    """Simple Q6_K quantizer producing valid block_q6_K bytes."""
    rows, cols = x.shape
    assert cols % 256 == 0
    b = x.reshape(-1, 16, 16).astype(np.float32)
    nb = b.shape[0]
    s = np.abs(b).max(-1) / 31.0
    d = (s.max(-1) / 127.0).astype(np.float16)
    df = d.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(df > 0, np.clip(np.round(s / df), -128, 127), 0).astype(np.int8)
        es = (df * sc)[..., None]
        q = (np.where(es != 0, np.clip(np.round(b / es), -32, 31), 0) + 32).astype(np.uint8)
    q = q.reshape(nb, 2, 4, 32)  # [half, quarter, l]
    ql = np.concatenate(
        [(q[:, :, 0] & 0xF) | ((q[:, :, 2] & 0xF) << 4), (q[:, :, 1] & 0xF) | ((q[:, :, 3] & 0xF) << 4)], axis=2
    ).reshape(nb, 128)
    qh = ((q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6)).reshape(nb, 64)
    blk = np.concatenate([ql, qh, sc.view(np.uint8), d.reshape(nb, 1).view(np.uint8)], axis=1)
    assert blk.shape[1] == 210
    return blk.reshape(rows, -1)


def encode_tensor(x: np.ndarray, qtype: QT) -> np.ndarray:
    if qtype == QT.F32:
        return x.astype(np.float32)
    if qtype == QT.F16:
        return x.astype(np.float16)
    if qtype == QT.Q4_K:
        return quant_q4_k(x)
    if qtype == QT.Q6_K:
        return quant_q6_k(x)
    return quantize(x.astype(np.float32), qtype)


def self_test_kquants() -> None:
    g = np.random.default_rng(0)
    x = (g.standard_normal((4, 512)) * 0.1 + g.standard_normal((4, 1)) * 0.05).astype(np.float32)
    # a wrong bit layout gives a relative RMS error > 1; a right one about that of Q4_1 / Q8-ish
    for qt, fn, tol in ((QT.Q4_K, quant_q4_k, 0.1), (QT.Q6_K, quant_q6_k, 0.03)):
        y = dequantize(fn(x), qt)
        err = float(np.sqrt(((y - x) ** 2).mean() / (x**2).mean()))
        assert err < tol, (qt.name, err)
        print(f"{qt.name} packer round-trip relative RMS error {err:.4f}")


# --------------------------------------------------------------------------------------------
# GGUF fixtures


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute (n_head already replaced by n_head_kv for K)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def tokenizer_vocab_meta(tok_dir: Path):
    tj = json.loads((tok_dir / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    assert all(t is not None for t in tokens)
    special = {a["id"] for a in tj["added_tokens"] if a["special"]}
    types = [3 if i in special else 1 for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    return tokens, types, merges


def write_gguf(path: Path, hf_model, types: dict, tok_dir: Path | None, name: str) -> dict:
    """Write ``hf_model`` as llama.cpp's convert_hf_to_gguf.py would (LlamaForCausalLM), with the
    per-tensor types in ``types`` (keyed by gguf short name). Returns {gguf_name: qtype}."""
    c = hf_model.config
    nh, nkv = c.num_attention_heads, c.num_key_value_heads
    head_dim = c.hidden_size // nh
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(c.vocab_size)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if tok_dir is not None:
        tokens, ttypes, merges = tokenizer_vocab_meta(tok_dir)
        assert len(tokens) == c.vocab_size
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(tokens)
        w.add_token_types(ttypes)
        w.add_token_merges(merges)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_pad_token_id(2)
        w.add_add_bos_token(False)
        w.add_chat_template(CHAT_TEMPLATE)

    sd = {k: v.detach().float().numpy() for k, v in hf_model.state_dict().items()}
    written = {}

    def add(gname: str, x: np.ndarray, qt: QT):
        data = encode_tensor(x, qt)
        w.add_tensor(gname, data, raw_dtype=None if qt in (QT.F32, QT.F16) else qt)
        written[gname] = qt

    add("token_embd.weight", sd["model.embed_tokens.weight"], types["token_embd"])
    for i in range(c.num_hidden_layers):
        for hf, short in GGUF_NAMES.items():
            x = sd[f"model.layers.{i}.{hf}.weight"]
            if short == "attn_q":
                x = permute(x, nh)
            elif short == "attn_k":
                x = permute(x, nkv)
            add(f"blk.{i}.{short}.weight", x, QT.F32 if short.endswith("norm") else types[short])
    add("output_norm.weight", sd["model.norm.weight"], QT.F32)
    if not c.tie_word_embeddings:
        add("output.weight", sd["lm_head.weight"], types["output"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return written


def dequantized_model(path: Path, cfg) -> LlamaForCausalLM:
    """An HF Llama whose weights are exactly the dequantized GGUF tensors (Q/K un-permuted)."""
    r = gguf.GGUFReader(str(path))
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    inv = {v: k for k, v in GGUF_NAMES.items()}
    sd = {}
    for t in r.tensors:
        x = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if t.name == "token_embd.weight":
            hf = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            hf = "model.norm.weight"
        elif t.name == "output.weight":
            hf = "lm_head.weight"
        else:
            _, i, short, _ = t.name.split(".")
            if short == "attn_q":
                x = unpermute(x, nh)
            elif short == "attn_k":
                x = unpermute(x, nkv)
            hf = f"model.layers.{i}.{inv[short]}.weight"
        sd[hf] = torch.from_numpy(x.copy())
    model = LlamaForCausalLM(cfg).eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def gguf_fixture(name, cfg, seed, std, types, tok_dir, tok_vocab, tokenizer_ref=True):
    out = fresh_dir(OUT / name)
    path = out / "model.gguf"
    for attempt in range(50):
        s = seed + attempt
        torch.manual_seed(s)
        src = LlamaForCausalLM(cfg).eval()
        randomize(src, s, std)
        written = write_gguf(path, src, types, tok_dir, name)
        model = dequantized_model(path, cfg)
        inputs = make_inputs(s, tok_vocab)
        ref, worst = model_reference(model, inputs)
        if greedy_ok(ref, worst):
            break
    else:
        raise RuntimeError(f"{name}: no seed gave varied greedy output")
    print(f"{name}: seed {s}, min greedy margin {worst:.4g}, tensor types {sorted({q.name for q in written.values()})}")

    # cross-check: transformers' own GGUF loader (dequantize + reverse permute) gives the same logits
    try:
        hfm = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            diff = max(
                float((hfm(torch.tensor([ids])).logits[0] - torch.tensor(lg)).abs().max())
                for ids, lg in zip(inputs, ref["logits"])
            )
        print(f"{name}: transformers gguf_file loader max |logit diff| = {diff:.3g}")
        assert diff <= 1e-5, diff
    except (ValueError, NotImplementedError, OSError) as e:  # pragma: no cover
        print(f"{name}: NOTE transformers' GGUF loader could not load the file, cross-check skipped: {e}")

    if tokenizer_ref:
        tok = AutoTokenizer.from_pretrained(tok_dir)
        ref["tokenizer"], ref["chat"] = tokenizer_reference(tok, tok_dir / "tokenizer.json")
        # the tokenizer transformers rebuilds from the GGUF metadata must agree
        gtok = AutoTokenizer.from_pretrained(out, gguf_file="model.gguf")
        for c in ref["tokenizer"]:
            assert gtok(c["text"], add_special_tokens=True)["input_ids"] == c["ids"], c
        assert gtok.apply_chat_template(ref["chat"]["messages"], add_generation_prompt=True, tokenize=False) == ref["chat"]["rendered"]
    ref["config"] = {
        "vocab_size": cfg.vocab_size,
        "tokenizer_vocab_size": tok_vocab,
        "tensor_types": {k: v.name for k, v in written.items()},
        "seed": s,
    }
    write_json(out / "reference.json", ref)


# --------------------------------------------------------------------------------------------


def main() -> None:
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(parents=True, exist_ok=True)
    self_test_kquants()

    tok_dir = OUT / "tokenizer"
    build_tokenizer(tok_dir)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    V = len(tok)
    assert V == TOKENIZER_VOCAB

    common = dict(
        hidden_size=64,
        num_hidden_layers=2,
        intermediate_size=96,
        rms_norm_eps=1e-5,
        max_position_embeddings=256,
        initializer_range=0.1,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        hidden_act="silu",
    )

    # 1. llama, GQA 4/2, tied, f32
    cfg = LlamaConfig(**common, vocab_size=V, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=10000.0)
    cfg._attn_implementation = "eager"
    hf_fixture("llama_gqa_tied", LlamaForCausalLM, cfg, 1000, torch.float32, tok_dir, V, std=0.15)

    # 2. llama, untied, llama3 rope scaling, bf16 weights
    rs = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    cfg = LlamaConfig(**common, vocab_size=V, num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False, rope_theta=500000.0, rope_scaling=dict(rs))
    cfg._attn_implementation = "eager"
    assert cfg.rope_parameters["rope_type"] == "llama3"
    hf_fixture("llama_untied_llama3rope", LlamaForCausalLM, cfg, 2000, torch.bfloat16, tok_dir, V, std=0.15, legacy=True, rope_scaling=rs)

    # 3. qwen2 with qkv bias, tied, f16, vocab padded past the tokenizer (400 > 384), + sharded copy
    cfg = Qwen2Config(**common, vocab_size=V + 16, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000000.0, use_sliding_window=False)
    cfg._attn_implementation = "eager"
    hf_fixture("qwen2_bias", Qwen2ForCausalLM, cfg, 3000, torch.float16, tok_dir, V, std=0.15, legacy=True, shard_copy="qwen2_bias_sharded")

    # 4. llama, 8 heads / 2 KV heads, head_dim 8, untied, f32
    cfg = LlamaConfig(**common, vocab_size=V, num_attention_heads=8, num_key_value_heads=2, head_dim=8, tie_word_embeddings=False, rope_theta=10000.0)
    cfg._attn_implementation = "eager"
    hf_fixture("llama_f32_untied", LlamaForCausalLM, cfg, 4000, torch.float32, tok_dir, V, std=0.15)

    # 5a. GGUF with legacy quants, tied
    cfg = LlamaConfig(**common, vocab_size=V, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=10000.0)
    cfg._attn_implementation = "eager"
    types = {
        "token_embd": QT.Q8_0,
        "attn_q": QT.Q4_0,
        "attn_k": QT.Q4_1,
        "attn_v": QT.Q5_0,
        "attn_output": QT.F16,
        "ffn_gate": QT.Q8_0,
        "ffn_up": QT.BF16,
        "ffn_down": QT.Q4_1,
    }
    gguf_fixture("llama_gguf_q", cfg, 5000, 0.15, types, tok_dir, V)

    # 5b. GGUF with k-quants, hidden 256, untied
    cfg = LlamaConfig(
        **{**common, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 1},
        vocab_size=V, num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False, rope_theta=10000.0,
    )
    cfg._attn_implementation = "eager"
    types = {
        "token_embd": QT.Q4_K,
        "attn_q": QT.Q4_K,
        "attn_k": QT.Q4_K,
        "attn_v": QT.Q6_K,
        "attn_output": QT.Q6_K,
        "ffn_gate": QT.Q4_K,
        "ffn_up": QT.Q6_K,
        "ffn_down": QT.Q6_K,
        "output": QT.Q6_K,
    }
    gguf_fixture("llama_gguf_k", cfg, 6000, 0.08, types, tok_dir, V, tokenizer_ref=False)

    total = 0
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
    print(f"total size of {OUT.relative_to(ROOT)}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    sys.exit(main())
