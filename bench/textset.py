"""The real-text recall set: English sentences from docstrings on this machine, embedded with MiniLM.

Sentences come from the docstrings of the Python standard library and the installed packages
(parsed with ast, never imported), split at sentence ends, kept at 40-400 characters, and
de-duplicated; a fixed-seed shuffle orders them. The queries are shuffled sentences
20000..20299; the corpus is the 20000 before them, then those after them, so every corpus size
holds the smaller ones and only the new sentences are embedded. Embeddings are cached in
bench/.cache/ (not committed); this script is what is committed.

    python bench/textset.py [--corpus 20000]
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


QUERY_AT = 20_000
QUERIES = 300


def _cached(corpus: int) -> tuple[list[str], np.ndarray, list[str], np.ndarray] | None:
    path = CACHE / f"textset-{corpus}-{QUERIES}.npz"
    if not path.exists():
        return None
    data = np.load(path, allow_pickle=False)
    return list(data["docs"]), data["doc_vectors"], list(data["queries"]), data["query_vectors"]


def load(corpus: int = 20_000) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    if (hit := _cached(corpus)) is not None:
        return hit
    texts = sentences()
    random.Random(7).shuffle(texts)
    if len(texts) < corpus + QUERIES:
        raise SystemExit(f"only {len(texts)} sentences found; ask for fewer")
    docs = texts[:QUERY_AT] + texts[QUERY_AT + QUERIES :][: max(0, corpus - QUERY_AT)]
    docs = docs[:corpus]
    asks = texts[QUERY_AT : QUERY_AT + QUERIES]
    model = MiniLM()
    started = time.monotonic()
    smaller = max((int(p.name.split("-")[1]) for p in CACHE.glob(f"textset-*-{QUERIES}.npz")
                   if int(p.name.split("-")[1]) < corpus), default=0)
    prefix = _cached(smaller) if smaller else None
    if prefix is not None:
        doc_vectors = np.concatenate([prefix[1], model.embed(docs[smaller:])])
        query_vectors = prefix[3]
    else:
        doc_vectors = model.embed(docs)
        query_vectors = model.embed(asks)
    print(f"embedded {len(docs) - smaller} new sentences in {time.monotonic() - started:.0f} s", file=sys.stderr)
    CACHE.mkdir(exist_ok=True)
    np.savez(CACHE / f"textset-{corpus}-{QUERIES}.npz", docs=np.array(docs), doc_vectors=doc_vectors,
             queries=np.array(asks), query_vectors=query_vectors)
    return docs, doc_vectors, asks, query_vectors


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=int, default=20_000)
    args = parser.parse_args()
    print(f"{len(sentences())} candidate sentences")
    load(args.corpus)
