"""Can the engine run this file? `python -m appliance.engine.selfcheck MODEL [--embed]`.

Run in a child process by the model tooling (appliance/modelfiles/trial.py), so a file that
crashes llama.cpp cannot take the caller down. It loads the model as the engine would and runs
it once: a few tokens for a chat model; for an embedding model, the sentences read as a JSON
list from stdin (with --embed). It prints one JSON line: ok, kind, detail, and the vectors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any


def check(path: Path, sentences: list[str]) -> dict[str, Any]:
    from appliance.engine.embedder import EmbeddingModel
    from appliance.engine.llama import Batch, ContextSettings, LlamaContext, LlamaModel
    from appliance.engine.metrics import EngineCounters
    from appliance.modelfiles.gguf_info import read_model_info

    info = read_model_info(path)
    if info.kind == "chat":
        model = LlamaModel(path, n_gpu_layers=0)
        ctx = LlamaContext(model, ContextSettings(n_ctx=512, n_batch=512, n_ubatch=512, n_seq_max=1,
                                                  n_threads=2, n_threads_batch=2))
        tokens = model.tokenize("Hello", add_special=True, parse_special=False)
        batch = Batch(len(tokens))
        for i, token in enumerate(tokens):
            batch.add(token, i, 0, i == len(tokens) - 1)
        status = batch.decode(ctx)
        return {"ok": status == 0, "kind": "chat", "detail": f"decoded {len(tokens)} tokens, status {status}"}

    async def embed() -> list[list[float]]:
        model = await EmbeddingModel.load(path, n_threads=2, n_gpu_layers=0, counters=EngineCounters())
        return (await model.embed(sentences or ["hello"])).vectors

    vectors = asyncio.run(embed())
    return {"ok": True, "kind": "embedding", "dim": len(vectors[0]), "vectors": vectors if sentences else []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("--embed", action="store_true", help="embed the JSON list of sentences on stdin")
    args = parser.parse_args()
    from appliance.modelfiles.gguf_info import ModelFileError

    try:
        sentences = json.loads(sys.stdin.read()) if args.embed else []
        result = check(args.model, sentences)
    except (ModelFileError, OSError, ValueError, KeyError) as exc:
        result = {"ok": False, "detail": str(exc)}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
