"""The admin page's flows in a real browser against the real appliance: first-boot setup, login,
memory, devices (a real MQTT client publishes; a real device answers), schedules that fire,
tasks cancelled and approved, a chat that streams, and the audit log.

Each test signs in through the login form and is failed by any console error or failed request
on its pages (conftest.py); its last screen is kept under var/test-artifacts/admin-page/.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.helpers import LIVE_S, ApplianceBox, OpenPage, Publisher, Valve, eventually, live

pytestmark = pytest.mark.slow
WAIT_MS = LIVE_S * 1000


def field_error(page: Page, form: str, name: str) -> str:
    return page.locator(f"#{form} .field[data-field={name}] .field-error").inner_text()


def run_task(page: Page, kind: str, label: str, value: str) -> str:
    """Through the tasks page's form; the new task's id."""
    page.get_by_role("link", name="Tasks").click()
    form = page.locator("#task-form")
    form.get_by_label("Kind").select_option(kind)
    form.get_by_label(label).fill(value)
    form.get_by_role("button", name="Run").click()
    expect(form.locator(".notice")).to_contain_text("created")
    return form.locator(".notice").inner_text().split("#")[1].split(" ")[0]


def test_first_boot_setup_then_sign_out_and_in(fresh_box: ApplianceBox, open_page: OpenPage) -> None:
    # fresh_box first: fixtures end in reverse order, so the page is closed before its box stops (the
    # other way round, its socket's reconnect to the stopped box was a console error now and then).
    page = open_page(url=fresh_box.url, expect=(400, 401))
    expect(page.get_by_role("heading", name="Set up this box")).to_be_visible()
    page.get_by_label("Setup token").fill(fresh_box.setup_token())
    page.get_by_label("User name").fill("ada")
    page.get_by_label("Password", exact=True).fill("too short")
    page.get_by_label("Password again").fill("too short")
    page.get_by_role("button", name="Create admin and sign in").click()
    expect(page.locator("#setup-form .field[data-field=password] .field-error")).to_contain_text("at least 10")
    expect(page.get_by_label("Password", exact=True)).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Password", exact=True).fill("correct horse battery staple")
    page.get_by_label("Password again").fill("correct horse battery stable")
    page.get_by_role("button", name="Create admin and sign in").click()
    assert "differ" in field_error(page, "setup-form", "password_again")

    page.get_by_label("Password again").fill("correct horse battery staple")
    page.get_by_label("Setup token").fill("not-the-token")
    page.get_by_role("button", name="Create admin and sign in").click()
    expect(page.locator("#setup-form .form-status")).to_contain_text("setup token is wrong")

    page.get_by_label("Setup token").fill(fresh_box.setup_token())
    page.get_by_role("button", name="Create admin and sign in").click()
    live(page)
    expect(page.locator("#whoami")).to_have_text("ada (admin)")
    expect(page.locator("#services")).to_contain_text("engine")

    page.get_by_role("button", name="Log out").click()
    expect(page.locator(".notice")).to_contain_text("You are signed out.")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()  # setup is over: a login form now
    page.get_by_label("User name").fill("ada")
    page.get_by_label("Password").fill("wrong password!")
    page.keyboard.press("Enter")
    expect(page.locator("#login-form .form-status")).to_contain_text("Not signed in")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.keyboard.press("Enter")
    live(page)
    status, setup = fresh_box.rest("GET", "/api/v1/auth/setup")
    assert status == 200 and setup == {"needed": False}


def test_memory_remember_search_upload_forget(open_page: OpenPage, tmp_path: Path) -> None:
    page = open_page("ada")
    page.get_by_role("link", name="Memory").click()
    page.get_by_label("Text").fill("The loading dock door sticks below minus five degrees; use the side door.")
    page.locator("#remember-form").get_by_label("Tags").fill("dock, doors")
    page.get_by_role("button", name="Remember").click()
    expect(page.locator("#remember-form .notice")).to_contain_text("Remembered as memory")

    document = tmp_path / "pump-manual.md"
    sections = [f"## Section {n}\n\nPump P-{n} is serviced every {n + 2} weeks; check the seal and the bearing.\n"
                for n in range(1, 400)]
    document.write_text("# Pump manual\n\n" + "\n".join(sections) + "\nThe quarantine valve Q-7 is blue.\n")
    page.locator("#upload-form input[type=file]").set_input_files(str(document))
    page.locator("#upload-form").get_by_label("Tags").fill("manuals")
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-form .notice")).to_contain_text("pump-manual.md", timeout=WAIT_MS)
    expect(page.locator("#upload-form progress")).to_have_attribute("value", "1")

    page.get_by_label("Search for").fill("loading dock door")
    page.get_by_role("button", name="Search").click()
    first = page.locator("#results .hit").first
    expect(first).to_contain_text("The loading dock door sticks")
    expect(first).to_contain_text("user:ada")
    expect(first.locator(".scores")).to_contain_text("score")

    page.get_by_label("Search for").fill("quarantine valve blue")
    page.get_by_text("Filters").click()
    page.get_by_label("document").check()
    page.get_by_role("button", name="Search").click()
    hit = page.locator("#results .hit").first
    expect(hit).to_contain_text("Q-7 is blue")
    expect(hit).to_contain_text("pump-manual.md")
    memory_id = hit.get_attribute("data-id")
    forget = page.get_by_role("button", name=f"Forget memory {memory_id}")
    forget.click()
    expect(forget).to_have_text("Really forget?")
    forget.click()
    expect(page.locator(f"#results .hit[data-id='{memory_id}']")).to_have_count(0)
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#results")).to_contain_text("found")
    expect(page.locator(f"#results .hit[data-id='{memory_id}']")).to_have_count(0)
    expect(page.locator("#memory-stats")).to_contain_text("Archive segments")


def test_a_device_event_appears_live_and_a_command_is_answered(open_page: OpenPage, box: ApplianceBox) -> None:
    page = open_page("otto")
    page.get_by_role("link", name="Devices").click()
    expect(page.locator("#registry")).not_to_contain_text("Loading")
    device = Publisher(box.mqtt_port, "test-door-7")
    valve = Valve(box.mqtt_port, "valve-9")
    try:
        device.publish("devices/door-7/events", json.dumps({"id": "e1", "type": "door", "value": "open"}))
        row = page.locator("#registry tr[data-device='door-7']")
        expect(row).to_be_visible(timeout=WAIT_MS)  # pushed over the WebSocket: the page is never reloaded
        row.get_by_role("button", name="door-7").click()
        expect(page.locator("#device-detail")).to_contain_text('"value": "open"')
        device.publish("devices/door-7/events", json.dumps({"id": "e2", "type": "door", "value": "closed"}))
        expect(page.locator("#device-detail")).to_contain_text('"value": "closed"', timeout=WAIT_MS)
        expect(row.locator("td").nth(3)).to_have_text("2")

        form = page.locator("#command-form")
        form.get_by_label("Device").fill("valve-9")
        form.get_by_label("Command").fill("set")
        form.get_by_label("Arguments (JSON)").fill("[1, 2]")
        form.get_by_role("button", name="Send").click()
        expect(form.locator(".field[data-field=args] .field-error")).to_have_text("Not a JSON object.")
        form.get_by_label("Arguments (JSON)").fill('{"position": 40}')
        form.get_by_role("button", name="Send").click()
        answer = page.locator("#command-answer")
        expect(answer).to_contain_text("answered", timeout=WAIT_MS)
        expect(answer).to_contain_text('"position": 40')
        assert valve.commands[-1]["command"] == "set" and valve.commands[-1]["args"] == {"position": 40}

        form.get_by_label("Command").fill("rm -rf /")
        form.get_by_role("button", name="Send").click()
        expect(form.locator(".field[data-field=command] .field-error")).to_contain_text("pattern")
    finally:
        device.close()
        valve.close()


def test_a_schedule_made_in_the_form_fires(open_page: OpenPage) -> None:
    page = open_page("otto")
    page.get_by_role("link", name="Schedules").click()
    form = page.locator("#schedule-form")
    form.get_by_label("Name").fill("door check!")
    form.get_by_label("Trigger").fill("cron:*/5 * *")
    form.get_by_label("Action").fill("heartbeat")
    form.get_by_text("More settings").click()
    form.get_by_label("Time zone").fill("Mars/Olympus")
    form.get_by_role("button", name="Save schedule").click()
    # Every field at fault is marked at once, each with its own reason.
    expect(form.locator(".field[data-field=trigger] .field-error")).to_contain_text("five fields")
    expect(form.locator(".field[data-field=name] .field-error")).to_contain_text("pattern")
    expect(form.locator(".field[data-field=timezone] .field-error")).to_contain_text("unknown timezone")
    expect(form.locator(".field[data-field=action] .field-error")).to_have_text("")

    form.get_by_label("Name").fill("door-check")
    form.get_by_label("Trigger").fill("interval:1s")
    form.get_by_label("Time zone").fill("Europe/Berlin")
    form.get_by_label("When still running").select_option("queue")
    form.get_by_role("button", name="Save schedule").click()
    expect(form.locator(".notice")).to_contain_text("Schedule door-check saved.")
    row = page.locator("#schedule-list tr[data-schedule='door-check']")
    expect(row).to_contain_text("interval:1s")
    expect(row.locator("td").nth(5)).not_to_have_text("—", timeout=WAIT_MS)  # its last fire, read again live

    page.get_by_role("link", name="Tasks").click()
    fired = page.locator("#task-list tr[data-state=succeeded]", has_text="schedule door-check").first
    expect(fired).to_be_visible(timeout=WAIT_MS)

    page.get_by_role("link", name="Schedules").click()
    row.get_by_role("button", name="Edit door-check").click()
    expect(form.get_by_label("Name")).to_have_attribute("readonly", "")
    form.get_by_label("Trigger").fill("cron:0 3 * * *")
    form.get_by_role("button", name="Save schedule").click()
    expect(row).to_contain_text("cron:0 3 * * *")
    delete = row.get_by_role("button", name="Delete door-check")
    delete.click()
    delete.click()
    expect(row).to_have_count(0)


def test_a_running_task_is_cancelled_and_retried(open_page: OpenPage) -> None:
    page = open_page("ada")
    task_id = run_task(page, "shell", "Command line", "sleep 300")
    row = page.locator(f"#task-list tr[data-task='{task_id}']")
    expect(row).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    expect(page.locator("#task-detail")).to_contain_text(f"Task #{task_id}")
    expect(page.locator("#steps")).to_contain_text("running")
    cancel = row.get_by_role("button", name=f"Cancel task {task_id}")
    cancel.click()
    # The list is drawn anew, as on every push from the box, with the focus left where it is.
    page.locator("#state-filter").evaluate("(el) => { el.value = 'running'; el.dispatchEvent(new Event('change')); }")
    expect(cancel).to_have_text("Really cancel?")  # the armed button survives it
    cancel.click()
    page.locator("#state-filter").select_option("")
    expect(row).to_have_attribute("data-state", "cancelled", timeout=WAIT_MS)
    expect(page.locator("#task-detail")).to_contain_text("cancelled while it ran")
    row.get_by_role("button", name=f"Retry task {task_id}").click()
    retried = page.locator("#task-list tr").filter(has_text="sleep 300").first
    expect(retried).not_to_have_attribute("data-task", task_id)
    again = retried.get_attribute("data-task")
    button = retried.get_by_role("button", name=f"Cancel task {again}")
    button.click()
    button.click()
    expect(page.locator(f"#task-list tr[data-task='{again}']")).to_have_attribute("data-state", "cancelled",
                                                                                  timeout=WAIT_MS)


def test_an_action_waits_for_approval_by_someone_else(open_page: OpenPage) -> None:
    otto = open_page("otto")
    task_id = run_task(otto, "action", "Action", "open_valve")
    waiting = otto.locator(f"#approvals li[data-task='{task_id}']")
    expect(waiting).to_be_visible(timeout=WAIT_MS)
    expect(waiting.get_by_role("button", name=f"Approve task {task_id}")).to_have_count(0)  # not one's own

    olga = open_page("olga")
    olga.get_by_role("link", name="Tasks").click()
    olga.locator(f"#approvals li[data-task='{task_id}']").get_by_role("button", name=f"Approve task {task_id}").click()
    expect(olga.locator(f"#task-list tr[data-task='{task_id}']")).to_have_attribute("data-state", "succeeded",
                                                                                    timeout=WAIT_MS)
    expect(otto.locator(f"#task-list tr[data-task='{task_id}']")).to_have_attribute("data-state", "succeeded",
                                                                                    timeout=WAIT_MS)
    expect(otto.locator(f"#approvals li[data-task='{task_id}']")).to_have_count(0)
    otto.locator(f"#task-list tr[data-task='{task_id}']").get_by_role("button", name=f"#{task_id}").click()
    expect(otto.locator("#task-detail")).to_contain_text("Approved by")
    expect(otto.locator("#task-detail")).to_contain_text("olga")


def test_a_chat_streams_token_by_token_with_citations(open_page: OpenPage) -> None:
    """With the real 0.5B model: the reply grows on screen piece by piece as its tokens arrive, and
    the memory put before the model is cited under it."""
    page = open_page("ada")
    page.get_by_role("link", name="Memory").click()
    page.get_by_label("Text").fill("The gate code of the north yard is 4711.")
    page.get_by_role("button", name="Remember").click()
    expect(page.locator("#remember-form .notice")).to_contain_text("Remembered")

    page.get_by_role("link", name="Chat").click()
    # The page is drawn after the click returns: watch the log only once it exists (a race that
    # failed this test now and then on loaded machines: "parameter 1 is not of type 'Node'").
    expect(page.locator("#chat-log")).to_be_attached()
    page.evaluate("""() => {
        window.shown = [];  // the answer's text each time it changes on screen
        new MutationObserver(() => {
            const answers = document.querySelectorAll('#chat-log .bubble.agent .answer');
            if (answers.length) window.shown.push(answers[answers.length - 1].textContent);
        }).observe(document.getElementById('chat-log'), {subtree: true, childList: true, characterData: true});
    }""")
    page.get_by_label("Message").fill("What is the gate code of the north yard?")
    page.keyboard.press("Enter")
    bubble = page.locator(".bubble.agent").last
    expect(bubble).not_to_have_attribute("aria-busy", "true")
    # Every check below names the whole bubble (answer, citations, notices) and what was seen grow: a
    # failure on a loaded CI machine must say which part went wrong without a rerun.
    whole = bubble.inner_text()
    answer = bubble.locator(".answer").inner_text()
    shown = [text for text in page.evaluate("window.shown") if text]
    assert len(set(shown)) >= 5 and answer.startswith(shown[0]) and shown[0] != answer, (shown, whole)
    citations = bubble.locator(".citations li")
    assert citations.count() >= 1, whole
    assert "The gate code of the north yard is 4711." in bubble.locator(".citations").inner_text(), whole
    assert "user:ada" in citations.first.inner_text(), whole
    assert "4711" in answer, whole  # the model read the note it was given
    assert "generated" in whole, whole


def test_the_audit_log_filters_and_its_chain_verifies(open_page: OpenPage, box: ApplianceBox) -> None:
    token = box.token("otto")
    status, _ = box.rest("POST", "/api/v1/memory", {"text": "audited fact", "kind": "fact"}, token)
    assert status == 201
    page = open_page("ada")
    page.get_by_role("link", name="Audit").click()
    rows = page.locator("#audit-list tbody tr")
    expect(rows.first).to_be_visible()
    page.get_by_label("Action").fill("memory.")
    page.get_by_label("User").fill("otto")
    page.get_by_role("button", name="Filter").click()
    # The unfiltered page already shows otto's row, so wait until the filtered answer has replaced it:
    # no row of another user, and no action outside the prefix, is left.
    cells = page.locator("#audit-list tbody tr")
    expect(cells.locator("td:nth-child(2)").filter(has_not_text=re.compile(r"^otto$"))).to_have_count(0)
    expect(cells.locator("td:nth-child(3)").filter(has_not_text=re.compile(r"^memory\."))).to_have_count(0)
    expect(page.locator("#audit-list")).to_contain_text("memory.remember")
    page.get_by_role("button", name="Verify the chain").click()
    expect(page.locator("#audit-verdict")).to_contain_text("Intact", timeout=WAIT_MS)

    page.get_by_label("Action").fill("")
    page.get_by_label("User").fill("")
    page.get_by_role("button", name="Filter").click()
    # Unfiltered again: ada's own rows (her sign-in is newer than otto's write) are back on top. A row of
    # otto's newer than every row shown now can only be the write below, arriving live. (Not "otto's row
    # on top": the agent's periodic task writes audit rows too, and under load one lands after it.)
    expect(cells.first.locator("td:nth-child(2)")).not_to_have_text("otto")
    newest = int(cells.first.get_attribute("data-audit") or 0)
    box.rest("POST", "/api/v1/memory", {"text": "written while the log is open", "kind": "fact"}, token)
    started = time.monotonic()
    page.wait_for_function("""(newest) => [...document.querySelectorAll('#audit-list tbody tr[data-audit]')].some(
        (row) => Number(row.dataset.audit) > newest && row.cells[1].textContent.trim() === 'otto')""",
                           arg=newest, timeout=WAIT_MS)
    assert time.monotonic() - started < LIVE_S


def test_an_admin_manages_users_and_tokens(open_page: OpenPage, box: ApplianceBox) -> None:
    page = open_page("ada")
    page.get_by_role("link", name="Users").click()
    form = page.locator("#user-form")
    form.get_by_label("User name").fill("tina")
    form.get_by_label("Role").select_option("operator")
    form.get_by_label("Password").fill("short")
    form.get_by_role("button", name="Add user").click()
    expect(form.locator(".field[data-field=password] .field-error")).to_contain_text("at least 10")
    form.get_by_label("Password").fill("tina's long passphrase")
    form.get_by_role("button", name="Add user").click()
    row = page.locator("#user-list tr[data-user='tina']")
    expect(row).to_contain_text("active")
    assert box.rest("POST", "/api/v1/auth/login", {"username": "tina", "password": "tina's long passphrase"})[0] == 200

    row.get_by_label("Role of tina").select_option("viewer")
    expect(page.get_by_role("status").filter(has_text="tina's role changed.")).to_be_visible()
    row.get_by_role("button", name="Disable tina").click()
    expect(page.locator("#user-list tr[data-user='tina']")).to_contain_text("disabled")
    status, _ = box.rest("POST", "/api/v1/auth/login", {"username": "tina", "password": "tina's long passphrase"})
    assert status in (401, 403)
    expect(page.locator("#user-list tr[data-user='ada'] select")).to_have_count(0)  # one cannot demote oneself here

    tokens = page.locator("#token-form")
    tokens.get_by_label("Name").fill("door-panel")
    tokens.get_by_role("button", name="Make token").click()
    issued = page.locator("#issued-token").inner_text().strip()
    status, me = box.rest("GET", "/api/v1/auth/me", token=issued)
    assert status == 200 and me["role"] == "viewer"
    revoke = page.locator("#token-list tr[data-token='door-panel']").get_by_role("button", name="Revoke door-panel")
    revoke.click()
    revoke.click()
    expect(page.locator("#token-list tr[data-token='door-panel']")).to_contain_text("revoked")
    eventually(lambda: box.rest("GET", "/api/v1/auth/me", token=issued)[0] == 401, LIVE_S, "the token to stop working")


def test_the_site_page_is_live_and_commands_an_entity(open_page: OpenPage, box: ApplianceBox) -> None:
    """Simulated Zigbee2MQTT devices (tests/sitesim.py) on the box's broker: the Site page lists them
    by area with their live state, turns the fan on (confirmed by the device's own report), follows a
    change the device makes itself, and shows the fan's history."""
    from tests.sitesim import SimulatedSite, zigbee2mqtt

    site = SimulatedSite(box.mqtt_port, zigbee2mqtt()[:3], client_id="site-page-devices")
    try:
        page = open_page("otto")
        page.get_by_role("link", name="Site").click()
        row = page.locator("#site-areas tr[data-entity='switch.hall_fan']")
        expect(row).to_have_attribute("data-state", "off", timeout=WAIT_MS)
        expect(page.locator("#site-areas tr[data-entity='cover.living_blind']")).to_have_attribute("data-state",
                                                                                                   "closed")
        row.get_by_role("button", name="Turn on hall_fan").click()
        expect(page.locator("#site-status")).to_contain_text("the device confirmed it", timeout=WAIT_MS)
        expect(row).to_have_attribute("data-state", "on", timeout=WAIT_MS)
        fan = site.device("hall_fan")
        fan.state["state"] = "OFF"  # switched off at the wall: the page follows without a reload
        site.report(fan)
        expect(row).to_have_attribute("data-state", "off", timeout=WAIT_MS)
        row.get_by_role("button", name="hall_fan", exact=True).click()
        expect(page.locator("#entity-detail")).to_contain_text("switch.hall_fan")
        expect(page.locator("#entity-detail ol.events li")).to_have_count(3, timeout=WAIT_MS)  # off, on, off
        page.screenshot(path=str(Path("var/test-artifacts/admin-page") / "site-live.png"), full_page=True)
    finally:
        site.clear()
        site.close()


def test_agent_traces_read_on_the_page(open_page: OpenPage, box: ApplianceBox) -> None:
    """Three agent traces on the tasks page, kept as screenshots (copied to docs/screenshots for
    docs/agent.md): a lookup and a
    two-step action run by the real model on simulated Zigbee2MQTT devices, and a run whose re-plan,
    made after reading an injected instruction, was stopped by the provenance rule (that trace's steps
    are written here in the loop's own form; its refusal is the real dispatcher's answer to the call)."""
    import asyncio
    import concurrent.futures
    import logging

    from appliance.config import load_config
    from appliance.control.caller import Caller, Role
    from appliance.control.dispatcher import Dispatcher
    from appliance.control.errors import CommandError
    from appliance.control.table import default_table
    from appliance.ipc.peers import Peers
    from appliance.protocol.tasks import (
        STORE_TASK_CREATE,
        STORE_TASK_STEP,
        STORE_TASK_UPDATE,
        StepIn,
        TaskNew,
        TaskSpec,
        TaskState,
        TaskUpdate,
    )
    from tests.sitesim import SimulatedSite, zigbee2mqtt

    site = SimulatedSite(box.mqtt_port, zigbee2mqtt()[:4], client_id="agent-trace-devices")
    token = box.token("otto")
    shots = Path(__file__).resolve().parents[3] / "var" / "test-artifacts" / "admin-page"

    def ended(ident: int) -> bool:
        return box.rest("GET", f"/api/v1/tasks/{ident}", None, token)[1]["task"]["state"] not in (
            "queued", "running")

    async def staged() -> int:
        config = load_config(box.state_dir.parent / "agent.yaml")
        peers = Peers(config)
        try:
            dispatcher = Dispatcher(default_table(), peers, config, logging.getLogger("test"))
            otto = Caller("otto", Role.OPERATOR, "agent").for_task(0, untrusted=True)
            args = {"entity_id": "front door", "action": "unlock"}
            try:
                await dispatcher.call("entities.set", args, otto)
            except CommandError as refused:
                why = refused.message
            task = await peers.store.call(STORE_TASK_CREATE, TaskNew(spec=TaskSpec(
                kind="agent", goal="What is the temperature in the office?"), created_by="otto", role="operator"))
            await peers.store.call(STORE_TASK_UPDATE, TaskUpdate(id=task.id, state=TaskState.RUNNING))
            for message, data in (
                    ("tools", {"offered": ["get_entity", "set_entity", "list_entities", "search_memory", "notify"],
                               "system_tokens": 518}),
                    ("planned", {"steps": '[{"tool": "list_entities", "args": {"q": "office"}}]', "tainted": False}),
                    ("list_entities: ok", {"tool": "list_entities", "args": {"q": "office"}, "effect": "read",
                                           "outcome": "ok", "detail": "", "ms": 4.1, "untrusted_read": True,
                                           "tainted": False}),
                    ("planned again", {"steps": '[{"tool": "set_entity", "args": {"entity_id": "front door", '
                                                '"action": "unlock"}}]', "tainted": True}),
                    ("approval needed", {"tool": "set_entity", "command": "entities.set", "args": args,
                                         "fingerprint": "-", "why": why})):
                await peers.store.call(STORE_TASK_STEP, StepIn(id=task.id, message=message, data=data))
            await peers.store.call(STORE_TASK_UPDATE, TaskUpdate(id=task.id, state=TaskState.WAITING_APPROVAL,
                                                                 error=f"set_entity waits for approval: {why}"))
            return int(task.id)
        finally:
            await peers.close()

    try:
        ids = {}
        for name, goal in (("lookup", "Is the front door locked?"),
                           ("two-step", "Turn on the hall fan, then turn on the kitchen light")):
            status, made = box.rest("POST", "/api/v1/tasks", {"kind": "agent", "goal": goal}, token)
            assert status == 201, made
            ids[name] = made["id"]
        for ident in ids.values():
            eventually(lambda ident=ident: ended(ident), 240, f"agent task {ident} to end")
        with concurrent.futures.ThreadPoolExecutor(1) as worker:  # the browser's loop runs in this thread
            ids["refused"] = worker.submit(asyncio.run, staged()).result()
        page = open_page("otto")
        page.get_by_role("link", name="Tasks").click()
        for name, ident in ids.items():
            page.get_by_role("button", name=f"#{ident}", exact=True).click()
            detail = page.locator("#task-detail")
            expect(detail).to_contain_text(f"Task #{ident}")
            if name == "refused":
                expect(detail).to_contain_text("Waits for approval")
                expect(detail).to_contain_text("untrusted-input")
                expect(detail).to_contain_text("has read untrusted data")
            else:
                expect(detail.locator("li.trace").first).to_be_visible()
                expect(detail).to_contain_text("Tools:")
            page.locator("#task-detail").screenshot(path=str(shots / f"agent-trace-{name}.png"))
    finally:
        site.clear()
        site.close()
