"""Templates as Home Assistant writes them, run in a sandbox that a device cannot escape or stall."""

from __future__ import annotations

import time

import pytest

from appliance.site import templates


@pytest.mark.parametrize(("template", "payload", "expected"), [
    ("{{ value_json.state }}", b'{"state": "ON"}', "ON"),
    ("{{ value_json.temperature | round(1) }}", b'{"temperature": 21.456}', "21.5"),
    ("{{ value | float * 10 }}", b"2.5", "25.0"),
    ("{{ 'on' if value_json.contact else 'off' }}", b'{"contact": false}', "off"),
    ("{{ value_json['a-b'] }}", b'{"a-b": 3}', "3"),
    ("{{ value_json.missing }}", b'{"state": 1}', ""),
    ("{{ float(value, 0) + 1 }}", b"oops", "1.0"),
    ("{{ value_json.POWER }}", b'{"POWER":"OFF"}', "OFF"),
    ("{{ value }}", "温度 21".encode(), "温度 21"),
])
def test_value_templates_render_as_home_assistant_does(template: str, payload: bytes, expected: str) -> None:
    assert templates.render(template, **templates.payload_variables(payload)) == expected


@pytest.mark.parametrize(("template", "words"), [
    ("{% for i in range(10**9) %}x{% endfor %}", "for"),
    ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "macro"),
    ("{{ ''.__class__.__mro__ }}", "attribute"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "calls only"),
    ("{{ lipsum() }}", "calls only"),
    ("{{ cycler.__init__.__globals__ }}", "attribute"),
    ("{{ value.upper() }}", "calls only"),
    ("{% set x = 1 %}{{ x }}", "assign"),
    ("{% include 'x' %}", "include"),
    ("{{ value | attr('__class__') }}", "no filter"),
    ("{{ x " + "+ 1 " * 600 + "}}", "longer than"),
    ("{{ unclosed", "not a template"),
])
def test_what_a_config_may_not_carry_is_refused_before_it_runs(template: str, words: str) -> None:
    why = templates.check(template)
    assert why is not None and words in why, why


def test_a_template_cannot_blow_up_at_render_time() -> None:
    started = time.monotonic()
    for template in ("{{ 'x' * 100000000 }}", "{{ [1] * 100000000 }}", "{{ 9 ** 9999999 }}"):
        with pytest.raises(templates.TemplateProblem):
            templates.render(template, value="")
    with pytest.raises(templates.TemplateProblem, match="more than"):
        templates.render("{{ value ~ value ~ value }}", value="y" * 2000)
    assert time.monotonic() - started < 2.0
