"""`appliance memory ...` and `appliance audit verify`: the memory store from the console.

Everything goes through the command table (and so the running store), except `memory restore`,
which needs the store stopped, and `audit verify`, which reads the file directly so that it
works whether or not the store runs.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from appliance.cli.base import EXIT_BAD_INPUT, CliError, actions, print_json, run_command, simple_action, stream_command
from appliance.config import ApplianceConfig
from appliance.protocol.store import MAX_DOCUMENT_CHARS, MEMORY_KINDS, ArchiveProgress


def _timestamp(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither unix seconds nor an ISO 8601 time") from None


def register(commands: Any) -> None:
    group = actions(commands, "memory", "the memory store: remember, recall, archive, back up")
    simple_action(group, "stats", "counts, sizes and the index in use", "memory.stats")
    simple_action(group, "remember", "store one memory (embedded by the engine when it is up)", "memory.remember",
            ("text", {}), ("--kind", {"choices": MEMORY_KINDS, "default": "fact"}), ("--source", {"default": "cli"}),
            ("--tag", {"action": "append", "default": [], "dest": "tags"}),
            ("--sensitive", {"action": "store_true", "help": "encrypt the text at rest"}),
            ("--pinned", {"action": "store_true", "help": "never archive it"}))
    simple_action(group, "recall", "search: hybrid, vector or text", "memory.search",
            ("q", {"metavar": "query"}), ("-k", {"type": int, "default": 5}),
            ("--mode", {"choices": ["hybrid", "vector", "text"], "default": "hybrid"}),
            ("--kind", {"action": "append", "choices": MEMORY_KINDS}), ("--source", {"action": "append"}),
            ("--tag", {"action": "append"}), ("--since", {"type": _timestamp, "help": "unix seconds or ISO 8601"}),
            ("--until", {"type": _timestamp}))
    simple_action(group, "forget", "erase one memory's content (a tombstone stays)", "memory.forget",
            ("id", {"type": int}))
    ingest = group.add_parser("ingest", help="store a text or markdown file as chunks; re-ingest replaces")
    ingest.add_argument("path", type=Path)
    ingest.add_argument("--tag", action="append", default=[], dest="tags")
    ingest.set_defaults(handler=_ingest)
    archive = group.add_parser("archive", help="move old unpinned memories into compressed archive segments")
    archive.add_argument("--older-than-days", type=float, default=None)
    archive.set_defaults(handler=_archive)
    simple_action(group, "find-archived", "archived memories by time range and source", "memory.find_archived",
            ("--since", {"type": _timestamp}), ("--until", {"type": _timestamp}), ("--source", {}),
            ("--limit", {"type": int, "default": 20}))
    simple_action(group, "unarchive", "bring archived memories back (they come back pinned)", "memory.unarchive",
            ("ids", {"type": int, "nargs": "+"}))
    backup = group.add_parser("backup", help="online backup of the memory file while the store serves")
    backup.add_argument("path", type=Path)
    backup.set_defaults(handler=lambda config, args: _print(run_command(
        config, "memory.backup", {"path": str(args.path.resolve())})))
    restore = group.add_parser("restore", help="replace the memory file with a backup (store stopped)")
    restore.add_argument("path", type=Path)
    restore.set_defaults(handler=_restore)
    simple_action(group, "rotate-key", "re-encrypt every sealed value under a new key", "memory.rotate_key")

    audit = actions(commands, "audit", "the audit log")
    audit.add_parser("verify", help="check the hash chain; exit 1 naming the first bad row").set_defaults(
        handler=_verify_audit)




def _print(reply: BaseModel) -> int:
    print_json(reply)
    return 0


def _ingest(config: ApplianceConfig, args: argparse.Namespace) -> int:
    path: Path = args.path
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_BAD_INPUT) from None
    if len(raw) > MAX_DOCUMENT_CHARS:
        raise CliError(f"{path} is {len(raw)} bytes; the limit is {MAX_DOCUMENT_CHARS}", EXIT_BAD_INPUT)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text (invalid byte at offset {exc.start})", EXIT_BAD_INPUT) from None
    if not text.strip():
        raise CliError(f"{path} holds no text", EXIT_BAD_INPUT)
    return _print(run_command(config, "memory.ingest", {"path": str(path.resolve()), "text": text,
                                                        "tags": args.tags}))


def _archive(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    bar = tqdm(total=0, unit="memories", file=sys.stderr, disable=None)
    last: list[ArchiveProgress] = []

    def each(progress: BaseModel) -> None:
        assert isinstance(progress, ArchiveProgress)
        bar.total = progress.total
        bar.update(progress.done - bar.n)
        last[:] = [progress]

    payload = {} if args.older_than_days is None else {"older_than_days": args.older_than_days}
    stream_command(config, "memory.archive", payload, each)
    bar.close()
    if last:
        done = last[0]
        ratio = done.raw_bytes / done.stored_bytes if done.stored_bytes else 0.0
        sys.stdout.write(f"archived {done.done} memories into {done.segments} segments; "
                         f"{done.raw_bytes} -> {done.stored_bytes} bytes ({ratio:.2f}x)\n")
    return 0


def _restore(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from appliance.store import offline

    try:
        restored = offline.restore_backup(config, args.path)
    except offline.OfflineError as exc:
        raise CliError(str(exc), exc.code) from None
    sys.stdout.write(f"restored {config.memory_dir / 'memory.db'} from {args.path}: {restored}\n")
    return 0


def _verify_audit(config: ApplianceConfig, _: argparse.Namespace) -> int:
    from appliance.store import offline

    try:
        verdict = offline.verify_audit(config)
    except offline.OfflineError as exc:
        raise CliError(str(exc), exc.code) from None
    print_json(verdict)
    if not verdict.ok:
        raise CliError(f"audit chain broken at row {verdict.first_bad_id}: {verdict.reason}")
    return 0
