"""The real-text recall set: English sentences from docstrings on this machine, embedded with MiniLM.

Sentences come from the docstrings of the Python standard library and the installed packages
(parsed with ast, never imported), split at sentence ends, kept at 40-400 characters, and
de-duplicated; a fixed-seed shuffle picks the corpus and a disjoint set of queries. The
embeddings are cached in bench/.cache/ (not committed); this script is what is committed.

    python bench/textset.py [--corpus 20000] [--queries 300]
"""

from __future__ import annotations

import argparse
import ast
import random
import re
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from minilm import MiniLM

CACHE = Path(__file__).parent / ".cache"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def sentences() -> list[str]:
    roots = {Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])}
    seen: set[str] = set()
    found: list[str] = []
    for root in sorted(roots):
        for path in sorted(root.rglob("*.py")):
            if "test" in path.parts or "tests" in path.parts:
                continue
            try:
                tree = ast.parse(path.read_text(errors="ignore"))
            except (SyntaxError, ValueError, RecursionError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module | ast.AsyncFunctionDef):
                    continue
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for paragraph in doc.split("\n\n"):
                    if ">>>" in paragraph or "::" in paragraph:
                        continue
                    for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
                        if 40 <= len(sentence) <= 400 and sentence.lower() not in seen:
                            seen.add(sentence.lower())
                            found.append(sentence)
    return found


def load(corpus: int = 20_000, queries: int = 300) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    path = CACHE / f"textset-{corpus}-{queries}.npz"
    if path.exists():
        data = np.load(path, allow_pickle=False)
        return list(data["docs"]), data["doc_vectors"], list(data["queries"]), data["query_vectors"]
    texts = sentences()
    random.Random(7).shuffle(texts)
    if len(texts) < corpus + queries:
        raise SystemExit(f"only {len(texts)} sentences found; ask for fewer")
    docs, asks = texts[:corpus], texts[corpus : corpus + queries]
    model = MiniLM()
    started = time.monotonic()
    doc_vectors = model.embed(docs)
    query_vectors = model.embed(asks)
    print(f"embedded {corpus + queries} sentences in {time.monotonic() - started:.0f} s", file=sys.stderr)
    CACHE.mkdir(exist_ok=True)
    np.savez(path, docs=np.array(docs), doc_vectors=doc_vectors, queries=np.array(asks), query_vectors=query_vectors)
    return docs, doc_vectors, asks, query_vectors


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    print(f"{len(sentences())} candidate sentences")
    load(args.corpus, args.queries)
