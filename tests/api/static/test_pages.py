"""Every page of the admin page in a real browser: each renders (a screenshot of each is kept, in
English and in Chinese), every control has a label, forms work from the keyboard, a viewer sees
no control it may not use, the dashboard is fed over the WebSocket without polling, the Chinese
catalogue is complete on screen, and the session is refreshed without losing the page."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from appliance.control.caller import Role
from appliance.control.capabilities import kinds_for
from tests.helpers import LIVE_S, ApplianceBox, OpenPage, Publisher, eventually, live, pids_with

pytestmark = pytest.mark.slow
CATALOGUES = Path(__file__).resolve().parents[3] / "appliance" / "api" / "static" / "i18n"
PHRASES = Path(__file__).resolve().parents[3] / "appliance" / "phrases"
HAN = re.compile(r"[\u4e00-\u9fff]")
ARTIFACTS = Path(__file__).resolve().parents[3] / "var" / "test-artifacts" / "admin-page"
PAGES = ["dashboard", "memory", "devices", "site", "tasks", "schedules", "chat", "audit", "users"]
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter((el) => el.offsetParent !== null && el.type !== 'hidden')
    .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.closest('label')
                      || (el.tagName === 'BUTTON' && el.textContent.trim())))
    .map((el) => el.outerHTML.slice(0, 120))"""
CHROME = "h1, h2, h3, h4, label, legend, button, th, summary, nav a, .hint, dt, option, figcaption"


def visit(page: Page, name: str) -> None:
    page.goto(page.url.split("#")[0] + f"#/{name}")
    expect(page.locator("nav a[aria-current=page]")).to_have_attribute("href", f"#/{name}")
    expect(page.locator("main")).not_to_contain_text("Loading")  # what the page reads has arrived
    expect(page.locator("main")).not_to_contain_text("加载中")


def test_every_page_renders_with_labelled_controls(open_page: OpenPage) -> None:
    page = open_page("ada")
    for name in PAGES:
        visit(page, name)
        assert page.evaluate(UNLABELLED) == [], name
        page.screenshot(path=str(ARTIFACTS / f"page-{name}.png"), full_page=True)
    phone = open_page("ada", viewport=(390, 844))
    for name in ("dashboard", "tasks"):
        visit(phone, name)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390 + 1, f"{name} scrolls sideways"
        phone.screenshot(path=str(ARTIFACTS / f"phone-{name}.png"), full_page=True)


def test_the_chinese_catalogue_is_complete_on_screen(open_page: OpenPage) -> None:
    """A browser asking for Chinese gets every page in Chinese: no label, heading, button or column
    shows a string of the English catalogue; the switch goes to English and back, and is kept."""
    english = json.loads((CATALOGUES / "en.json").read_text())
    chinese = json.loads((CATALOGUES / "zh.json").read_text())
    only_english = {text for key, text in english.items() if text != chinese[key] and any(c.isalpha() for c in text)}
    page = open_page(None, locale="zh-CN")
    expect(page.get_by_role("heading", name="登录")).to_be_visible()
    page.get_by_label("用户名").fill("ada")
    page.get_by_label("密码").fill("correct horse battery staple")
    page.get_by_role("button", name="登录").click()
    live(page)
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    for name in PAGES:
        visit(page, name)
        shown = {text.strip() for text in page.locator(CHROME).all_inner_texts()}
        assert not shown & only_english, (name, sorted(shown & only_english))
        page.screenshot(path=str(ARTIFACTS / f"page-{name}-zh.png"), full_page=True)
    page.get_by_label("语言").select_option("en")
    expect(page.get_by_role("link", name="Dashboard")).to_be_visible()
    page.reload()
    live(page)
    expect(page.get_by_role("link", name="Tasks")).to_be_visible()  # the choice outlives a reload
    page.get_by_label("Language").select_option("zh")
    expect(page.get_by_role("link", name="任务", exact=True)).to_be_visible()


def test_the_box_own_words_are_in_chinese_too(open_page: OpenPage) -> None:
    """What the box itself says (a refusal, each service's detail) comes by code and is shown from
    the Chinese phrase catalogue (appliance/phrases), not in the English the box logs."""
    english = json.loads((PHRASES / "en.json").read_text())
    chinese = json.loads((PHRASES / "zh.json").read_text())
    page = open_page(None, locale="zh-CN", expect=(401,), expect_console=("status of 401",))
    page.get_by_label("用户名").fill("ada")
    page.get_by_label("密码").fill("not the password at all")
    page.get_by_role("button", name="登录").click()
    expect(page.locator("main")).to_contain_text(chinese["auth.wrong_login"])
    expect(page.locator("main")).not_to_contain_text(english["auth.wrong_login"])
    page.get_by_label("密码").fill("correct horse battery staple")
    page.get_by_role("button", name="登录").click()
    live(page)
    visit(page, "dashboard")
    rows = page.locator("table").first.locator("tbody tr")
    expect(rows).to_have_count(5)
    fixed = [text.split("{")[0] for code, text in english.items() if code.split(".")[0] in
             ("store", "engine", "mqtt", "agent", "api", "service", "site") and len(text.split("{")[0]) > 6]
    for row in rows.all():
        cell = row.locator("td").last
        expect(cell).to_contain_text(HAN)  # every service's detail, in Chinese
        assert not [words for words in fixed if words in cell.inner_text()], cell.inner_text()
    expect(page.locator("main")).to_contain_text("条记忆")  # the store's count, from store.ready


def test_a_viewer_sees_no_control_they_may_not_use(open_page: OpenPage) -> None:
    page = open_page("vera")
    expect(page.locator("#whoami")).to_have_text("vera (viewer)")
    expect(page.get_by_role("link", name="Audit")).to_have_count(0)
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    page.goto(page.url.split("#")[0] + "#/audit")  # typed by hand: lands on the dashboard instead
    expect(page.locator("nav a[aria-current=page]")).to_have_attribute("href", "#/dashboard")
    visit(page, "memory")
    expect(page.locator("#remember-form, #upload-form, #archive-run")).to_have_count(0)
    page.get_by_label("Search for").fill("door")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#results")).to_contain_text("found")
    expect(page.get_by_role("button", name="Forget")).to_have_count(0)
    visit(page, "devices")
    expect(page.locator("#command-form")).to_have_count(0)
    visit(page, "tasks")
    expect(page.locator("#task-list")).to_be_visible()
    expect(page.locator("#task-list button", has_text="Cancel")).to_have_count(0)
    expect(page.locator("#task-list button", has_text="Retry")).to_have_count(0)
    # What the box's capabilities say a viewer may start: ask, search, agent, and the action kind for
    # the one action a viewer may run (heartbeat); nothing else is offered.
    expect(page.locator("#task-form select[name=kind] option")).to_have_count(len(kinds_for(Role.VIEWER)))
    assert {kind.name for kind in kinds_for(Role.VIEWER)} == {"ask", "search", "agent", "action"}
    expect(page.locator("#known-actions option")).to_have_count(1)
    expect(page.locator("#known-actions option")).to_have_attribute("value", "heartbeat")
    visit(page, "schedules")
    expect(page.locator("#schedule-form")).to_have_count(0)


def test_forms_work_from_the_keyboard(open_page: OpenPage) -> None:
    page = open_page(None)
    expect(page.locator("#login-form input[name=username]")).to_be_focused()  # the cursor starts there
    page.keyboard.type("otto")
    page.keyboard.press("Tab")
    page.keyboard.type("correct horse battery staple")
    page.keyboard.press("Enter")
    live(page)
    page.locator("nav a", has_text="Memory").focus()
    page.keyboard.press("Enter")
    expect(page.locator("input[name=q]")).to_be_focused()  # the page puts the cursor where work starts
    page.keyboard.type("loading dock")
    page.keyboard.press("Enter")
    expect(page.locator("#results")).to_contain_text("found")


def test_the_dashboard_is_live_over_the_websocket_without_polling(open_page: OpenPage, box: ApplianceBox) -> None:
    page = open_page("ada")
    expect(page.locator("#overall")).to_contain_text("ready")
    expect(page.locator("#services tbody tr")).to_have_count(5)
    expect(page.locator("#model")).to_contain_text("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    expect(page.locator("#box")).to_contain_text("cores")
    requests_at_start = page.evaluate("performance.getEntriesByType('resource').length")
    device = Publisher(box.mqtt_port, "test-dashboard-flood")
    try:
        def events_per_second() -> float:
            for n in range(10):
                device.publish(f"devices/meter-{n}/events", json.dumps({"kwh": n}), qos=1)
            text = page.locator("#chart-events").inner_text().replace(",", "")
            return float(text) if text not in ("—", "") else 0.0

        assert eventually(events_per_second, LIVE_S, "the events chart to show events arriving", every_s=0.3) > 0
    finally:
        device.close()
    expect(page.locator("#chart-queue")).not_to_have_text("—")
    assert page.evaluate("performance.getEntriesByType('resource').length") == requests_at_start, (
        "the dashboard made HTTP requests while live")


def test_the_session_is_refreshed_without_losing_the_page(open_page: OpenPage, box: ApplianceBox) -> None:
    """The access token lives 60 s here (the shortest the box allows): the page trades it for a new
    one at 80% of its life, the socket takes the new token, and nothing is reloaded or lost."""
    page = open_page("otto")
    page.goto(page.url.split("#")[0] + "#/chat")
    page.evaluate("window.stillTheSamePage = true")
    first = page.evaluate("JSON.parse(sessionStorage.getItem('appliance.session')).access")
    started = time.monotonic()
    eventually(lambda: page.evaluate("JSON.parse(sessionStorage.getItem('appliance.session')).access") != first,
               90, "the page to refresh its token")
    assert time.monotonic() - started < 60, "refreshed only after the token had expired"
    time.sleep(15)  # past the first token's expiry: the socket must live on under the new one
    assert page.evaluate("window.stillTheSamePage")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    page.get_by_label("Message").fill("Say OK.")
    page.keyboard.press("Enter")
    expect(page.locator(".bubble.agent").last).to_contain_text("generated")
    status, me = box.rest("GET", "/api/v1/auth/me", token=page.evaluate(
        "JSON.parse(sessionStorage.getItem('appliance.session')).access"))
    assert status == 200 and me["subject"] == "otto"


def test_the_page_comes_back_when_the_api_restarts(open_page: OpenPage, box: ApplianceBox) -> None:
    """The api is killed (SIGKILL) under an open dashboard: the page says it is reconnecting, the
    supervisor restarts the api, and the page comes back live by itself, its topics subscribed
    again, without a reload. (Chromium logs each refused connection meanwhile as a console error.)"""
    page = open_page("ada", expect_console=("WebSocket connection to",))
    expect(page.locator("#services tbody tr")).to_have_count(5)
    page.evaluate("window.stillTheSamePage = true")
    page.evaluate("document.querySelector('#services table').dataset.beforeTheRestart = 1")
    config = str(box.state_dir.parent / "agent.yaml")
    [api] = [pid for pid in pids_with(config) if b"serve\x00api" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    os.kill(api, signal.SIGKILL)
    expect(page.locator("#connection")).to_have_attribute("data-state", "closed")
    live(page)
    expect(page.locator("#services table[data-before-the-restart]")).to_have_count(0)  # drawn from a new snapshot
    restarted = [pid for pid in pids_with(config) if b"serve\x00api" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert restarted and restarted != [api]
    assert page.evaluate("window.stillTheSamePage")
    page.get_by_role("link", name="Memory").click()
    page.get_by_label("Search for").fill("anything")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#results")).to_contain_text("found")


def test_the_keyboard_focus_stays_put_when_a_live_list_is_redrawn(open_page: OpenPage, box: ApplianceBox) -> None:
    """The tasks list is updated by key whenever a task changes: a keyboard user on a row's button stays
    on that very button, while tasks keep arriving; rows that did not change are the same elements."""
    token = box.token("otto")
    page = open_page("otto")
    visit(page, "tasks")
    status, first = box.rest("POST", "/api/v1/tasks", {"kind": "notify", "message": "first"}, token)
    assert status == 201
    link = page.get_by_role("button", name=f"#{first['id']}", exact=True)
    link.focus()
    link.evaluate("button => { button.dataset.mark = 'kept'; button.closest('tr').dataset.mark = 'kept'; }")
    for n in range(3):
        box.rest("POST", "/api/v1/tasks", {"kind": "notify", "message": f"more {n}"}, token)
    expect(page.locator("#task-list tbody tr")).to_have_count(4)
    expect(link).to_be_focused()
    # Not redrawn and patched back: the same elements (a mark put on them survives the pushes).
    assert link.evaluate("button => button.dataset.mark + button.closest('tr').dataset.mark") == "keptkept"
    page.keyboard.press("Enter")
    expect(page.locator("#task-detail")).to_contain_text(f"Task #{first['id']}")
