"""A model's own chat template, rendered in Jinja's sandbox with the helpers real templates call.

Hugging Face defines what templates may use beyond Jinja: ``raise_exception``, ``strftime_now``
and a ``tojson`` that writes plain JSON with non-ASCII kept (Jinja's own escapes HTML characters,
which would change the prompt the model was trained on). Tools are passed as the template's
``tools`` variable in the OpenAI form; a template that never mentions them cannot lay them out,
so offering tools to it is refused rather than silently dropped.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from appliance.engine.errors import RequestRefused
from appliance.protocol.engine import ChatMessage, Tool


class ChatTemplate:
    def __init__(self, source: str | None, *, bos: str = "", eos: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals.update(raise_exception=_raise, strftime_now=_strftime_now)
        env.filters["tojson"] = _tojson
        self._template, self._broken = None, "this model has no chat template; send a raw prompt instead"
        try:
            self._template = env.from_string(source) if source else None
        except TemplateError as exc:  # the model still serves raw prompts
            self._broken = f"the model's chat template does not parse ({exc}); send a raw prompt instead"
        self.knows_tools = bool(source and "tools" in source)
        self.bos, self.eos = bos, eos

    def render(self, messages: list[ChatMessage], *, add_generation_prompt: bool,
               tools: list[Tool] | None = None) -> str:
        if self._template is None:
            raise RequestRefused(f"messages: {self._broken}")
        if tools and not self.knows_tools:
            raise RequestRefused("tools: this model's chat template does not lay out tools; use a model that "
                                 "knows them (appliance model fetch --list)")
        try:
            return self._template.render(messages=[m.model_dump(exclude_none=True) for m in messages],
                                         tools=[t.model_dump() for t in tools] if tools else None,
                                         bos_token=self.bos, eos_token=self.eos,
                                         add_generation_prompt=add_generation_prompt)
        except TemplateError as exc:
            raise RequestRefused(f"messages: the model's chat template refused them: {exc}") from None


def _raise(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _tojson(value: Any, indent: int | None = None, separators: tuple[str, str] | None = None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)
