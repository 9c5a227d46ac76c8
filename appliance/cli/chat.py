"""`appliance chat QUESTION`: ask the agent; the reply is printed as it is generated."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import BaseModel

from appliance.cli.base import stream_command
from appliance.config import ApplianceConfig
from appliance.control.chat import ChatEvent


def register(commands: Any) -> None:
    chat = commands.add_parser("chat", help="ask the agent; memories are recalled and cited")
    chat.add_argument("message")
    chat.add_argument("--conversation", help="keep the turns in this conversation")
    chat.add_argument("--no-memory", action="store_true", help="do not recall memories for the question")
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.set_defaults(handler=_chat)


def _chat(config: ApplianceConfig, args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"message": args.message, "use_memory": not args.no_memory,
                               "max_tokens": args.max_tokens}
    if args.conversation:
        payload["conversation"] = args.conversation

    def each(event: BaseModel) -> None:
        assert isinstance(event, ChatEvent)
        if event.type == "token":
            sys.stdout.write(event.text)
            sys.stdout.flush()
            return
        sys.stdout.write("\n")
        for c in event.citations:
            sys.stderr.write(f"[{c.n}] memory {c.memory_id} ({c.source}, score {c.score}): {c.snippet[:100]}\n")
        if event.fallback:
            sys.stderr.write(f"note: {event.fallback}\n")

    stream_command(config, "chat", payload, each)
    return 0
