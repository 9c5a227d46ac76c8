"""search: what the memories say about a query, summarised with citations; optionally written to a
report under one of the allowed folders (agent.output_dirs, default <state_dir>/outputs).

The path is checked when the task is created (absolute outside the folders, ``..``, a symlink that
leads out, NUL, too long: refused naming output_path, before any work) and again when the report
is written, since the folders may change in between.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import Field, JsonValue

from appliance.config import ApplianceConfig
from appliance.control.caller import Role
from appliance.control.errors import CommandError
from appliance.phrases import Language, render
from appliance.protocol.common import Message
from appliance.taskkinds.ask import answer, result
from appliance.taskkinds.base import Creating, RunFailed, Running, TaskKind


class SearchFields(Message):
    query: str = Field(min_length=1, max_length=4000, description="what to look for")
    output_path: str | None = Field(None, min_length=1, max_length=1024,
                                    description="write the report here: relative to, or inside, agent.output_dirs")


def allowed_folders(config: ApplianceConfig) -> list[Path]:
    return list(config.agent.output_dirs) or [config.paths.state_dir / "outputs"]


def target(wanted: str, folders: list[Path]) -> Path:
    """Where ``wanted`` would be written, or ValueError saying why it may not be."""
    if "\x00" in wanted:
        raise ValueError("output_path has a NUL character")
    pure = PurePosixPath(wanted)
    if ".." in pure.parts:
        raise ValueError(f"output_path {wanted[:200]!r} has '..' in it")
    if pure.name in ("", ".") or wanted.endswith("/"):
        raise ValueError(f"output_path {wanted[:200]!r} names no file")
    path = Path(wanted) if pure.is_absolute() else folders[0] / wanted
    folder = next((folder for folder in folders if path.is_relative_to(folder)), None)
    if folder is None:
        raise ValueError(f"output_path {wanted[:200]!r} is outside the allowed folders "
                         f"({', '.join(map(str, folders))}: agent.output_dirs)")
    # A symlink on the way inside the folder (one that exists now) must not lead out of it.
    existing = path.parent
    while not existing.exists() and existing != folder and existing != existing.parent:
        existing = existing.parent
    if existing.is_relative_to(folder) and not Path(os.path.realpath(existing)).is_relative_to(
            os.path.realpath(folder)):
        raise ValueError(f"output_path {wanted[:200]!r} leads out of the allowed folders through a symlink")
    return path


def check(creating: Creating, fields: SearchFields) -> None:
    if fields.output_path is not None:
        try:
            target(fields.output_path, allowed_folders(creating.config))
        except ValueError as exc:
            raise CommandError("bad_request", str(exc), field="output_path") from None


def write_report(wanted: str, folders: list[Path], text: str) -> Path:
    """Atomically (a temporary file, then rename), under an allowed folder, never beside it."""
    path = target(wanted, folders)
    path.parent.mkdir(parents=True, exist_ok=True)
    real = path.parent.resolve(strict=True) / path.name
    if not any(real.is_relative_to(folder.resolve()) for folder in folders):
        raise ValueError(f"output_path {wanted[:200]!r} leads out of the allowed folders")
    temporary = real.with_name(f".{real.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(real)
    return real


# The request to the model and the report's headings are in the query's language (from the phrase
# catalogues): the model answers in the language it is asked in, and a Chinese query wrapped in
# English words got English answers.
HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def language_of(query: str) -> Language:
    """zh when the query has Han characters (a Chinese question with an English word is still one)."""
    return "zh" if HAN.search(query) else "en"


def report(query: str, answer_text: str, citations: list[dict[str, Any]]) -> str:
    language = language_of(query)

    def text(code: str, **args: str | int) -> str:
        return render(f"search.{code}", args, language)

    notes = "\n".join(text("note", n=c["n"], id=c["memory_id"], source=c["source"], snippet=c["snippet"])
                      for c in citations)
    return f"# {query}\n\n{answer_text or text('no_answer')}\n\n## {text('notes')}\n\n" \
           f"{notes or text('none_found')}\n"


async def run(running: Running, fields: SearchFields) -> JsonValue:
    message = render("search.request", {"query": fields.query}, language_of(fields.query))
    # Recalled for the query alone: the instructions' words would pull in whatever they match.
    found = result(await answer(running, message, k=8, recall=fields.query[:4096]))
    if fields.output_path:
        citations = [c for c in found["citations"] if isinstance(c, dict)]  # type: ignore[union-attr]
        text = report(fields.query, str(found["answer"]), citations)
        try:
            path = await asyncio.to_thread(write_report, fields.output_path, allowed_folders(running.config), text)
        except ValueError as exc:
            raise RunFailed(str(exc), found) from None
        found["output_path"] = str(path)
        await running.step("written", {"path": str(path)})
    return found


KIND = TaskKind("search", "What the memories say about a query, with citations; optionally a report file.",
                SearchFields, Role.VIEWER, run, check=check, resumable=True, model_work=True)
