"""Tool calls read back from replies in every form small models use; a bad call is an error, never a call.
The forcing grammar is compiled by llama.cpp's own grammar parser."""

from __future__ import annotations

import pytest
from llama_cpp import LlamaGrammar

from appliance.engine.chat import schema_grammar
from appliance.engine.errors import RequestRefused
from appliance.engine.tools import call_grammar, parse_tool_calls
from appliance.protocol.engine import Tool, ToolCall, ToolFunction

WEATHER = Tool(function=ToolFunction(name="get_weather", description="天气 / weather for a city", parameters={
    "type": "object", "properties": {"city": {"type": "string", "minLength": 1},
                                     "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"], "additionalProperties": False}))
LIGHT = Tool(function=ToolFunction(name="set_light", parameters={
    "type": "object", "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}},
    "required": ["room", "on"]}))
TOOLS = [WEATHER, LIGHT]
PARIS = ToolCall(name="get_weather", arguments={"city": "Paris"})


@pytest.mark.parametrize(("reply", "calls", "rest"), [
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', [PARIS], ""),
    ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
     '<tool_call>{"name": "set_light", "arguments": {"room": "hall", "on": true}}</tool_call>',
     [PARIS, ToolCall(name="set_light", arguments={"room": "hall", "on": True})], "Let me check."),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}', [PARIS], ""),  # cut before the tag
    ('```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```', [PARIS], ""),
    ('Sure:\n```\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n```\nDone.', [PARIS], "Sure:\n\nDone."),
    ('{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}', [PARIS], ""),  # OpenAI's string form
    ('[{"name": "get_weather", "arguments": {"city": "Paris"}}]', [PARIS], ""),
    ("It is sunny in Paris.", [], "It is sunny in Paris."),
    ('```json\n{"city": "Paris", "temp": 21}\n```', [], '```json\n{"city": "Paris", "temp": 21}\n```'),
    ('{"answer": 42}', [], '{"answer": 42}'),
])
def test_calls_are_read_in_every_form(reply: str, calls: list[ToolCall], rest: str) -> None:
    assert parse_tool_calls(reply, TOOLS) == (calls, rest)


@pytest.mark.parametrize(("reply", "words"), [
    ("<tool_call>\nget_weather(Paris)\n</tool_call>", "not JSON"),
    ('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', "'rm_rf' is not one of the tools offered"),
    ('```json\n{"name": "shell", "arguments": {"cmd": "rm -rf /"}}\n```', "'shell' is not one of the tools"),
    ('<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>', "'city' is a required property"),
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "x": 1}}</tool_call>',
     "Additional properties"),
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "P", "unit": "kelvin"}}</tool_call>', "unit: 'kelvin'"),
    ('<tool_call>{"name": "get_weather", "arguments": [1]}</tool_call>', "must be an object"),
    ('<tool_call>{"name": "get_weather", "arguments": "{oops"}</tool_call>', "arguments are not JSON"),
    ("<tool_call>[1, 2]</tool_call>", "expected"),
])
def test_a_malformed_call_is_an_error(reply: str, words: str) -> None:
    with pytest.raises(RequestRefused) as caught:
        parse_tool_calls(reply, TOOLS)
    assert words in str(caught.value)


def test_the_forcing_grammar_compiles_in_llama_cpp() -> None:
    for tools in ([WEATHER], TOOLS):
        grammar = call_grammar(tools, schema_grammar)
        assert grammar.rstrip().endswith('root ::= "<tool_call>\\n" call "\\n</tool_call>"')
        LlamaGrammar.from_string(grammar, verbose=False)
