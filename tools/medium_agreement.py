#!/usr/bin/env python3
"""Greedy agreement of --matmul-precision medium with the exact default, per prompt.

    python3 tools/medium_agreement.py MODEL [--threads N]

Runs the 8 prompts of tests/fixtures/smollm2_reference.json (raw and chat) through
`target/release/runtime generate` at `highest` and at `medium`, 32 tokens each with EOS
ignored, and prints how many leading tokens the two continuations share (see the README's
kernel options for what `medium` rounds).
"""
import argparse
import json
import pathlib
import subprocess

root = pathlib.Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--threads", default="2")
a = ap.parse_args()
ref = json.loads((root / "tests/fixtures/smollm2_reference.json").read_text())
for case in ref["cases"]:
    outs = {}
    for precision in ("highest", "medium"):
        args = [str(root / "target/release/runtime"), "generate", "--model", a.model, "--prompt", case["prompt"],
                "--max-tokens", "32", "--ignore-eos", "--json", "--threads", a.threads,
                "--matmul-precision", precision]
        if case["kind"] == "chat":
            args.append("--chat")
        outs[precision] = json.loads(subprocess.run(args, capture_output=True, check=True).stdout)["completion_ids"]
    h, m = outs["highest"], outs["medium"]
    same = next((i for i, (x, y) in enumerate(zip(h, m)) if x != y), min(len(h), len(m)))
    print(f"{case['kind']:5} {case['prompt'][:40]!r:44} first {same} of {len(h)} tokens equal")
