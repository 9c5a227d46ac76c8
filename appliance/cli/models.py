"""`appliance model import|list|demo`: the model files on this box."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from appliance.cli.base import actions, fail
from appliance.config import ApplianceConfig
from appliance.modelfiles.catalog import Catalog
from appliance.modelfiles.gguf_info import ModelFileError


def register(commands: Any) -> None:
    group = actions(commands, "model", "models on this box")
    imp = group.add_parser("import", help="add a GGUF file, or convert a sentence-transformers BERT folder to GGUF")
    imp.add_argument("path", help="a .gguf file or a folder with model.safetensors, vocab.txt, config.json")
    imp.add_argument("--name", help="what to call it (default: the file or folder name)")
    imp.add_argument("--default", action="store_true", help="make it the chat or embedding model the engine loads")
    imp.set_defaults(handler=_import)
    listing = group.add_parser("list", help="models with kind, size and sha256")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    demo = group.add_parser("demo", help="write tiny random-weight demo models where none are")
    demo.add_argument("--force", action="store_true", help="overwrite existing files")
    demo.set_defaults(handler=_demo)


def _catalog(config: ApplianceConfig) -> Catalog:
    return Catalog(config.paths.state_dir / "models")


def _import(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    with tqdm(total=0, unit="", file=sys.stderr, desc="import", leave=False) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            entry = _catalog(config).import_model(Path(args.path), name=args.name, make_default=args.default,
                                                  progress=progress)
        except ModelFileError as exc:
            bar.close()
            fail(f"import failed: {exc}", code=1)
    sys.stdout.write(f"imported {entry.name}: {entry.kind} ({entry.arch}), {entry.size_bytes:,} bytes, "
                     f"sha256 {entry.sha256}\n  check: {entry.check}\n"
                     + (f"  now the default {entry.kind} model\n" if args.default else ""))
    return 0


def _list(config: ApplianceConfig, args: argparse.Namespace) -> int:
    try:
        rows = _catalog(config).listing()
    except ModelFileError as exc:
        fail(str(exc), code=1)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    header = f"{'NAME':<24} {'KIND':<10} {'SIZE':>10}  {'DEFAULT':<9} SHA256"
    lines = [header] + [f"{r['name']:<24} {r['kind']:<10} {r['size_bytes'] / 2**20:>8.1f}MB  "
                        f"{r['default'] or '-':<9} {r['sha256'] or '(' + r['source'] + ')'}" for r in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _demo(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from appliance.modelfiles.tinymodel import CHAT_SHAPE, embedding_shape, write_tiny_llama

    try:
        wanted = [(config.chat_model_path, CHAT_SHAPE, "demo-chat"),
                  (config.embedding_model_path, embedding_shape(config.memory.vector_dim), "demo-embedding")]
    except ValueError as exc:
        fail(f"memory.vector_dim: {exc}")
    for seed, (path, shape, name) in enumerate(wanted):
        if path.exists() and not args.force:
            sys.stdout.write(f"kept {path} (exists)\n")
            continue
        write_tiny_llama(path, shape, seed=seed, name=name)
        sys.stdout.write(f"wrote {path}: {name}, random weights - its output is noise\n")
    return 0
