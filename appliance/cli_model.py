"""`appliance model import|list|demo`: the models on this box."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from appliance.config import ApplianceConfig
from appliance.modelfiles.catalog import Catalog
from appliance.modelfiles.gguf_info import ModelFileError


def add_parsers(model_actions: Any) -> None:
    imp = model_actions.add_parser(
        "import", help="add a GGUF file, or convert a sentence-transformers BERT folder to GGUF")
    imp.add_argument("path", help="a .gguf file or a folder with model.safetensors, vocab.txt, config.json")
    imp.add_argument("--name", help="what to call it (default: the file or folder name)")
    imp.add_argument("--default", action="store_true", help="make it the chat or embedding model the engine loads")
    listing = model_actions.add_parser("list", help="models with kind, size and sha256")
    listing.add_argument("--json", action="store_true")


def _catalog(config: ApplianceConfig) -> Catalog:
    return Catalog(config.paths.state_dir / "models")


def run(config: ApplianceConfig, args: argparse.Namespace) -> int:
    catalog = _catalog(config)
    if args.action == "import":
        from tqdm import tqdm

        with tqdm(total=0, unit="", file=sys.stderr, desc="import", leave=False) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            try:
                entry = catalog.import_model(Path(args.path), name=args.name, make_default=args.default,
                                            progress=progress)
            except ModelFileError as exc:
                bar.close()
                sys.stderr.write(f"appliance: import failed: {exc}\n")
                return 1
        sys.stdout.write(f"imported {entry.name}: {entry.kind} ({entry.arch}), {entry.size_bytes:,} bytes, "
                         f"sha256 {entry.sha256}\n  check: {entry.check}\n"
                         + (f"  now the default {entry.kind} model\n" if args.default else ""))
        return 0
    try:
        rows = catalog.listing()
    except ModelFileError as exc:
        sys.stderr.write(f"appliance: {exc}\n")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    header = f"{'NAME':<24} {'KIND':<10} {'SIZE':>10}  {'DEFAULT':<9} SHA256"
    lines = [header] + [f"{r['name']:<24} {r['kind']:<10} {r['size_bytes'] / 2**20:>8.1f}MB  "
                        f"{r['default'] or '-':<9} {r['sha256'] or '(' + r['source'] + ')'}" for r in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
