"""`appliance agent "GOAL"`: an agent task, its steps printed as they happen, then its answer.

The task is created and followed through the command table as the console (an admin), like any
other surface would; Ctrl-C stops following, not the task (`appliance tasks cancel ID` does).
Exit 0 when it succeeded, 1 when it failed or timed out, 4 while it waits for a person's approval
(the line says how to approve it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from appliance.cli.base import EXIT_BUSY, EXIT_FAILED, CliError, with_dispatcher
from appliance.config import ApplianceConfig
from appliance.control.caller import Caller
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError

POLL_S = 0.3


def register(commands: Any) -> None:
    parser = commands.add_parser("agent", help="give the agent a goal; its steps and its answer are printed")
    parser.add_argument("goal", metavar="GOAL", help="what to do or find out, in your own words")
    parser.add_argument("--timeout", type=float, default=300.0, dest="timeout_s", help="seconds the run may take")
    parser.add_argument("--json", action="store_true", help="print the result as JSON at the end")
    parser.set_defaults(handler=_agent)


def _line(message: str, data: Any) -> str:
    if not isinstance(data, dict):
        return f"  {message}"
    if "tokens_in" in data:
        return f"  {message}: {data['tokens_in']} tokens in, {data['tokens_out']} out, {data['ms'] / 1000:.1f} s"
    if "tool" in data and "outcome" in data:
        flag = " (after reading untrusted data)" if data.get("untrusted_read") else ""
        return (f"  {data['tool']} {json.dumps(data.get('args'), ensure_ascii=False)} -> {data['outcome']}"
                f"{': ' + data['detail'] if data.get('detail') else ''}{flag}")
    if "steps" in data:
        return f"  {message}: {data['steps']}"
    if "offered" in data:
        return f"  tools: {', '.join(data['offered'])} ({data['system_tokens']} tokens of instructions)"
    return f"  {message}: {json.dumps(data, ensure_ascii=False)[:200]}"


async def _follow(dispatcher: Dispatcher, args: argparse.Namespace) -> int:
    caller = Caller.local()
    task = await dispatcher.call("tasks.create", {"kind": "agent", "goal": args.goal, "timeout_s": args.timeout_s},
                                 caller)
    ident, seen = task.id, 0  # type: ignore[attr-defined]
    sys.stdout.write(f"task {ident}\n")
    while True:
        detail = await dispatcher.call("tasks.get", {"id": ident, "after_seq": seen}, caller)
        for step in detail.steps:  # type: ignore[attr-defined]
            sys.stdout.write(_line(step.message, step.data) + "\n")
            seen = step.seq
        sys.stdout.flush()
        row = detail.task  # type: ignore[attr-defined]
        if row.state.value == "waiting_approval":
            sys.stdout.write(f"waits for approval: {row.error}\n  approve: appliance tasks approve {ident}\n")
            return EXIT_BUSY
        if row.state.value in ("succeeded", "failed", "cancelled", "timed_out") and seen >= row.last_seq:
            break
        await asyncio.sleep(POLL_S)
    if row.state.value != "succeeded":
        sys.stdout.write(f"{row.state.value}: {row.error}\n")
        return EXIT_FAILED
    result = row.result or {}
    sys.stdout.write((json.dumps(result, ensure_ascii=False, indent=2) if args.json else str(result.get("answer")))
                     + "\n")
    return 0


def _agent(config: ApplianceConfig, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(with_dispatcher(config, lambda dispatcher: _follow(dispatcher, args)))
    except CommandError as exc:
        raise CliError.of(exc) from None
