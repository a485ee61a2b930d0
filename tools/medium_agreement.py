#!/usr/bin/env python3
"""Greedy agreement of keel's opt-in approximations with the exact default, per prompt.

    python3 tools/medium_agreement.py MODEL [--threads N] [--matmul-precision medium|highest]
                                            [--kv-cache-dtype f32|f16|bf16]

Runs the 8 prompts of tests/fixtures/smollm2_reference.json (raw and chat) through
`target/release/runtime generate` exactly (the defaults) and with the given options (default:
`--matmul-precision medium`, f32 KV cache), 32 tokens each with EOS ignored, and prints how
many leading tokens the two continuations share (see the README's kernel options for what
each option rounds).
"""
import argparse
import json
import pathlib
import subprocess

root = pathlib.Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--threads", default="2")
ap.add_argument("--matmul-precision", default="medium", choices=["highest", "medium"])
ap.add_argument("--kv-cache-dtype", default="f32", choices=["f32", "f16", "bf16"])
a = ap.parse_args()
runs = {
    "exact": [],
    "approx": ["--matmul-precision", a.matmul_precision, "--kv-cache-dtype", a.kv_cache_dtype],
}
ref = json.loads((root / "tests/fixtures/smollm2_reference.json").read_text())
for case in ref["cases"]:
    outs = {}
    for run, opts in runs.items():
        args = [str(root / "target/release/runtime"), "generate", "--model", a.model, "--prompt", case["prompt"],
                "--max-tokens", "32", "--ignore-eos", "--json", "--threads", a.threads, *opts]
        if case["kind"] == "chat":
            args.append("--chat")
        outs[run] = json.loads(subprocess.run(args, capture_output=True, check=True).stdout)["completion_ids"]
    h, m = outs["exact"], outs["approx"]
    same = next((i for i, (x, y) in enumerate(zip(h, m)) if x != y), min(len(h), len(m)))
    print(f"{case['kind']:5} {case['prompt'][:40]!r:44} first {same} of {len(h)} tokens equal")
