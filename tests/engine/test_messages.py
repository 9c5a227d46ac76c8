"""Absurd generation and embedding parameters are refused with the allowed range."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from appliance.protocol.engine import EmbedRequest, GenerateRequest


@pytest.mark.parametrize("fields", [
    {"prompt": ""}, {"prompt": "x", "max_tokens": 0}, {"prompt": "x", "max_tokens": 10**9},
    {"prompt": "x", "temperature": -1}, {"prompt": "x", "top_p": 0}, {"prompt": "x", "seed": -5},
    {"prompt": "x", "stop": ["a"] * 20}, {"prompt": "x", "stop": [""]}, {"prompt": "x" * 300_000},
])
def test_generate_request_bounds(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GenerateRequest.model_validate(fields)


@pytest.mark.parametrize("texts", [[], [""], ["x"] * 65, ["x" * 70_000]])
def test_embed_request_bounds(texts: list[str]) -> None:
    with pytest.raises(ValidationError):
        EmbedRequest(texts=texts)
