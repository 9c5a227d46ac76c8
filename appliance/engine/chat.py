"""The chat model: load it by the tuner's plan, render chat templates, constrain and check JSON.

A request becomes a batcher `GenerationJob`: messages are rendered with the model's own Jinja chat
template (sandboxed, with the helpers real templates call: tojson as Hugging Face defines it,
strftime_now, raise_exception), offered tools included, tokenized off the event loop, and the
system prompt's tokens are marked so the batcher can cache them. A JSON schema is compiled to a
llama.cpp grammar before the job queues; a schema that cannot be compiled is refused, and the
finished reply is parsed and validated against the schema, so a reply that does not satisfy it
is an error, never passed on.
Tool calls are read back from the reply and checked the same way (engine/tools.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from llama_cpp.llama_grammar import json_schema_to_gbnf

from appliance.engine.batcher import Batcher, GenerationJob
from appliance.engine.errors import RequestRefused
from appliance.engine.llama import ContextSettings, LlamaContext, LlamaModel, LoadError
from appliance.engine.metrics import EngineCounters
from appliance.engine.plan import Plan, step_down
from appliance.engine.sampling import SamplingParams
from appliance.engine.template import ChatTemplate
from appliance.engine.tools import call_grammar, parse_tool_calls
from appliance.protocol.engine import GenerateChunk, GenerateRequest
from appliance.runtime.threads import in_daemon_thread

log = logging.getLogger("appliance.engine")
_CHAR_RULE = re.compile(r"^char ::= .*$", re.MULTILINE)
JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'


def schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF for ``schema``, or RequestRefused saying why it cannot be used."""
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise RequestRefused(f"json_schema: not a valid JSON schema: {exc.message}") from None
    try:
        grammar = str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises assorted errors for what it cannot express
        raise RequestRefused(f"json_schema: cannot be compiled to a grammar: {exc}") from None
    # The converter's string characters admit raw control characters, which JSON forbids.
    return _CHAR_RULE.sub(lambda _: JSON_CHAR, grammar)


def check_reply(schema: dict[str, Any], text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise RequestRefused(f"the reply is not valid JSON ({exc}); it was cut off or the grammar failed") from None
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        raise RequestRefused(f"the reply does not satisfy json_schema: {exc.message}") from None
    return value


def load_with_step_down(path: Path, plan: Plan, n_seq: int) -> tuple[LlamaModel, LlamaContext, Plan]:
    """Load by ``plan``; when llama.cpp fails to allocate, retry smaller (context, then layers)."""
    attempt: Plan | None = plan
    last = LoadError(f"{path}: no plan to load it with")
    while attempt is not None:
        model = None
        try:
            model = LlamaModel(path, n_gpu_layers=attempt.n_gpu_layers, use_mmap=attempt.use_mmap,
                               use_mlock=attempt.use_mlock, cpu_repack=attempt.cpu_repack)
            return model, LlamaContext(model, ContextSettings.from_plan(attempt, n_seq)), attempt
        except LoadError as exc:
            if model is not None:
                model.close()
            log.warning("load failed with n_ctx %d, n_gpu_layers %d: %s", attempt.n_ctx,
                        attempt.n_gpu_layers, exc)
            last, attempt = exc, step_down(attempt)
    raise last


@dataclass(frozen=True)
class Prompt:
    tokens: list[int]
    prefix: int  # leading tokens that are the system prompt (cached across requests)
    messages_dropped: int = 0
    system_lines_dropped: int = 0


class ChatEngine:
    def __init__(self, model: LlamaModel, ctx: LlamaContext, plan: Plan, *, n_slots: int, max_queue: int,
                 counters: EngineCounters) -> None:
        self.model, self.ctx, self.plan = model, ctx, plan
        self.batcher = Batcher(model, ctx, n_slots=n_slots, max_queue=max_queue, counters=counters)
        bos = model.token_text(model.bos) if model.bos >= 0 else ""
        self.template = ChatTemplate(model.metadata("tokenizer.chat_template"), bos=bos,
                                     eos=model.token_text(model.eos) if model.eos >= 0 else "")

    @classmethod
    async def load(cls, path: Path, plan: Plan, *, n_slots: int, max_queue: int,
                   counters: EngineCounters) -> ChatEngine:
        model, ctx, used = await in_daemon_thread(lambda: load_with_step_down(path, plan, n_slots + 1),
                                                  "load-chat")
        return cls(model, ctx, used, n_slots=n_slots, max_queue=max_queue, counters=counters)

    def _tokens(self, request: GenerateRequest) -> Prompt:
        """The prompt's tokens, how many of them are the system prompt, and what fitting it left out."""
        if request.prompt is not None:
            return Prompt(self.model.tokenize(request.prompt, add_special=True, parse_special=False), 0)
        assert request.messages is not None
        messages = list(request.messages)
        tools = request.tools if request.tool_choice != "none" else None
        room = min(request.max_tokens, self.ctx.n_ctx // 4)  # what fitting keeps free for the reply
        dropped = lines = 0
        while True:
            tokens = self._chat_tokens(self.template.render(messages, add_generation_prompt=True, tools=tools))
            if not request.fit_context or len(tokens) + room <= self.ctx.n_ctx:
                break
            first = 1 if messages[0].role == "system" else 0
            if len(messages) - first > 1:  # the oldest turn goes first; the last message always stays
                del messages[first]
                dropped += 1
            elif first and "\n" in messages[0].content:  # then the system message's last lines (notes)
                messages[0] = messages[0].model_copy(update={"content": messages[0].content.rsplit("\n", 1)[0]})
                lines += 1
            else:
                break  # it cannot be made to fit: the batcher refuses it with the numbers
        if messages[0].role != "system":
            return Prompt(tokens, 0, dropped, lines)
        system = self._chat_tokens(self.template.render(messages[:1], add_generation_prompt=False, tools=tools))
        common = next((i for i, (a, b) in enumerate(zip(system, tokens, strict=False)) if a != b),
                      min(len(system), len(tokens)))
        return Prompt(tokens, common, dropped, lines)

    def _chat_tokens(self, text: str) -> list[int]:
        # Templates write the BOS text themselves; parse it as the special token and never add a second.
        tokens = self.model.tokenize(text, add_special=True, parse_special=True)
        if len(tokens) > 1 and tokens[0] == tokens[1] == self.model.bos:
            tokens.pop(0)
        return tokens

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[GenerateChunk, None]:
        grammar = schema_grammar(request.json_schema) if request.json_schema is not None else None
        if forced := request.forced_tools:
            grammar = call_grammar(forced, schema_grammar)
        prompt = await asyncio.to_thread(self._tokens, request)
        sampling = SamplingParams(temperature=request.temperature, top_p=request.top_p, seed=request.seed,
                                  grammar=grammar, ignore_eos=request.ignore_eos)
        job = GenerationJob(tokens=prompt.tokens, max_tokens=request.max_tokens, stops=request.stop,
                            priority=request.priority, prefix_len=prompt.prefix, sampling=sampling)
        index, pieces = 0, []
        async with contextlib.aclosing(self.batcher.run(job)) as events:
            async for event in events:
                if not event.done:
                    pieces.append(event.text)
                    yield GenerateChunk(index=index, text=event.text)
                    index += 1
                    continue
                parsed, calls = None, None
                if request.json_schema is not None:
                    parsed = check_reply(request.json_schema, "".join(pieces))
                if request.tools is not None and request.tool_choice != "none":
                    calls, _ = parse_tool_calls("".join(pieces), request.tools)
                    if forced and not calls:
                        raise RequestRefused("tool_choice demanded a call and the reply holds none "
                                             f"(finish: {event.finish_reason}; raise max_tokens?)")
                yield GenerateChunk(index=index, done=True, finish_reason=event.finish_reason, tool_calls=calls,
                                    prompt_tokens=event.prompt_tokens, cached_tokens=event.cached_tokens,
                                    completion_tokens=event.completion_tokens, ttft_ms=event.ttft_ms,
                                    elapsed_ms=event.elapsed_ms, parsed=parsed,
                                    messages_dropped=prompt.messages_dropped,
                                    system_lines_dropped=prompt.system_lines_dropped)

    def close(self) -> None:
        self.batcher.close()
        self.ctx.close()
        self.model.close()

