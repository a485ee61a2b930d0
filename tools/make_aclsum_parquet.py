#!/usr/bin/env python3
"""Turns the ACLSum corpus (PyPI package `aclsum`) into a Parquet file for `runtime batch`.

    tools/make_aclsum_parquet.py --split test --limit 64 --max-words 300 --output docs.parquet

Columns: `id` (string, the ACL Anthology id), `title` (string), `text` (string: the
paper's abstract followed by its introduction, sentences joined with spaces, cut to the
first --max-words words so prompts stay short and runs quick; 0 keeps everything).

The wheel is fetched with `pip download --no-deps aclsum` into
$KEEL_HOME/datasets/aclsum (default ~/.cache/keel) and read from there, never imported.
Parquet is written with pyarrow: when this python lacks it, the script creates a venv
under $KEEL_HOME/venvs/pyarrow, installs pyarrow there and re-runs itself with it.
"""

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

KEEL_HOME = Path(os.environ.get("KEEL_HOME") or Path.home() / ".cache" / "keel")


def ensure_pyarrow():
    try:
        import pyarrow  # noqa: F401

        return
    except ImportError:
        pass
    venv = KEEL_HOME / "venvs" / "pyarrow"
    py = venv / "bin" / "python"
    if os.environ.get("KEEL_ACLSUM_REEXEC"):
        sys.exit(f"error: pyarrow is not importable from {sys.executable}")
    ready = py.exists() and subprocess.run([str(py), "-c", "import pyarrow"], capture_output=True).returncode == 0
    if not ready:
        print(f"installing pyarrow into {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "pyarrow"], check=True
        )
    env = dict(os.environ, KEEL_ACLSUM_REEXEC="1")
    os.execve(str(py), [str(py), __file__, *sys.argv[1:]], env)


def aclsum_wheel():
    d = KEEL_HOME / "datasets" / "aclsum"
    wheels = sorted(d.glob("aclsum-*.whl"))
    if not wheels:
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
             "aclsum", "-d", str(d)],
            check=True,
        )
        wheels = sorted(d.glob("aclsum-*.whl"))
    if not wheels:
        sys.exit(f"error: pip download left no aclsum wheel in {d}")
    return wheels[-1]


def sentences_of(value):
    """`sentences` is a dict in the released files; older ones hold a Python-literal string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = ast.literal_eval(value)
    return value if isinstance(value, dict) else {}


def detokenize(s):
    """The corpus is whitespace-tokenized (`word , word .`): glue punctuation back."""
    s = re.sub(r" ([,.;:!?%)\]])", r"\1", s)
    s = re.sub(r"([(\[]) ", r"\1", s)
    return s.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--limit", type=int, default=64, help="most documents (0 = all)")
    ap.add_argument("--max-words", type=int, default=300, help="cut each text to its first N words (0 = no cut)")
    ap.add_argument("--output", required=True)
    a = ap.parse_args()
    ensure_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids, titles, texts = [], [], []
    with zipfile.ZipFile(aclsum_wheel()) as z:
        with z.open(f"aclsum/dataset/{a.split}.jsonl") as f:
            for line in f:
                if a.limit and len(ids) >= a.limit:
                    break
                d = json.loads(line)
                s = sentences_of(d.get("sentences"))
                words = " ".join(s.get("abstract", []) + s.get("introduction", [])).split()
                if a.max_words:
                    words = words[: a.max_words]
                ids.append(str(d["id"]))
                titles.append(d.get("title") or "")
                texts.append(detokenize(" ".join(words)))
    table = pa.table({"id": pa.array(ids, pa.string()), "title": pa.array(titles, pa.string()),
                      "text": pa.array(texts, pa.string())})
    out = Path(a.output)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)
    print(f"wrote {len(ids)} documents ({a.split}, <= {a.max_words or 'all'} words each) to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
