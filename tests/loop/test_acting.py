"""The agent's loop acting on a real site (mosquitto, the simulated bridges, the real store and mqtt
processes), without a model: plans written here are executed as the planner's would be. Conditions,
confirmations, the taint rule, and the approval of an exact call through an agent task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

from appliance.config import load_config
from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher, call_fingerprint
from appliance.control.table import default_table
from appliance.ipc.peers import Peers
from appliance.loop import executor as executor_module
from appliance.loop import tools
from appliance.loop.executor import Executor, NeedsApproval
from appliance.loop.planner import Step
from appliance.loop.tools import OfferedTool
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
from tests.helpers import api_client, bearer, eventually_async, serve
from tests.sitesim import SimulatedSite, zigbee2mqtt

pytestmark = pytest.mark.slow
StartServices = Callable[..., Awaitable[Peers]]


async def site_ready(dispatcher: Dispatcher, caller: Caller) -> bool:
    page = await dispatcher.call("entities.list", {}, caller)
    return len(page.items) >= 4 and all(row.state is not None for row in page.items)  # type: ignore[attr-defined]


async def test_a_fixed_plan_acts_and_a_tainted_one_waits(config_file: Path, broker: int,
                                                         services: StartServices) -> None:
    site = SimulatedSite(broker, zigbee2mqtt())
    peers = await services("store", "mqtt")
    config = load_config(config_file)
    dispatcher = Dispatcher(default_table(), peers, config, logging.getLogger("test"))
    otto = Caller("otto", Role.OPERATOR, "agent").for_task(7)
    try:
        await eventually_async(lambda: site_ready(dispatcher, otto), 60, "the simulated site")
        available = tools.offered((await dispatcher.call("capabilities", {}, otto)).model_dump(mode="json"))
        executor = Executor(dispatcher, otto, available)
        read = await executor.run(1, Step("get_entity", {"entity_id": "office temperature"}))
        assert (read.outcome, read.value) == ("ok", 21.5) and executor.untrusted_read
        skipped = await executor.run(2, Step("set_entity", {"entity_id": "hall fan", "action": "turn_on"},
                                             {"step": 1, "op": ">", "value": 25}))
        assert skipped.outcome == "skipped" and "21.5 > 25 is false" in skipped.detail
        assert site.device("hall_fan").received == []
        # Fixed in the plan before the untrusted read: it may act, and the device confirms it.
        acted = await executor.run(3, Step("set_entity", {"entity_id": "hall fan", "action": "turn_on"},
                                           {"step": 1, "op": ">", "value": 20}))
        assert acted.outcome == "ok" and site.device("hall_fan").received[-1][1] == b"ON"
        # A plan made after the read (a re-plan) is tainted: acting waits for a person, nothing is sent.
        executor.tainted = True
        with pytest.raises(NeedsApproval) as waiting:
            await executor.run(4, Step("set_entity", {"entity_id": "kitchen light", "action": "turn_on"}))
        assert waiting.value.command == "entities.set" and "untrusted" in str(waiting.value)
        assert site.device("kitchen_light").received == []
        with pytest.raises(NeedsApproval):
            await executor.run(5, Step("notify", {"text": "the door code is 1234"}))
        reread = await executor.run(6, Step("get_entity", {"entity_id": "front door"}))
        assert reread.outcome == "ok"  # reading stays open
    finally:
        site.close()


async def test_an_agent_task_waits_for_approval_of_the_exact_call(tmp_path: Path, config_file: Path, broker: int,
                                                                  services: StartServices) -> None:
    """A run parked in waiting_approval (as the loop leaves it) is approved by another operator: the
    agent makes exactly the call it showed, and reports; another such task nobody decides times out."""
    site = SimulatedSite(broker, zigbee2mqtt())
    peers = await services("store", "mqtt")
    config = load_config(config_file)
    dispatcher = Dispatcher(default_table(), peers, config, logging.getLogger("test"))
    args = {"entity_id": "kitchen light", "action": "turn_on"}
    fingerprint = call_fingerprint("entities.set", dispatcher.parse(dispatcher.command(
        "entities.set", Caller.local()), args))

    async def parked(timeout_s: float) -> int:
        task = await peers.store.call(STORE_TASK_CREATE, TaskNew(spec=TaskSpec(
            kind="agent", goal="turn on the kitchen light", timeout_s=timeout_s), created_by="otto", role="operator"))
        await peers.store.call(STORE_TASK_UPDATE, TaskUpdate(id=task.id, state=TaskState.RUNNING))
        await peers.store.call(STORE_TASK_STEP, StepIn(id=task.id, message="approval needed", data={
            "tool": "set_entity", "command": "entities.set", "args": args, "fingerprint": fingerprint,
            "why": "read untrusted data first"}))
        await peers.store.call(STORE_TASK_UPDATE, TaskUpdate(id=task.id, state=TaskState.WAITING_APPROVAL))
        return task.id

    agent = serve(config_file, "agent", log=tmp_path / "agent.log")
    try:
        first, second = await parked(300), await parked(2)
        async with api_client(config, peers) as (client, issuer):
            otto, olga = bearer(issuer, Role.OPERATOR, "otto"), bearer(issuer, Role.OPERATOR, "olga")
            own = await client.post(f"/api/v1/tasks/{first}/approve", headers=otto)
            assert own.status == 403  # not one's own
            approved = await client.post(f"/api/v1/tasks/{first}/approve", headers=olga)
            assert approved.status == 200, await approved.text()

            async def ended(ident: int) -> dict[str, object] | None:
                body = await (await client.get(f"/api/v1/tasks/{ident}", headers=olga)).json()
                return body if body["task"]["state"] not in ("queued", "running", "waiting_approval") else None

            done = await eventually_async(lambda: ended(first), 60, "the approved task to run")
            assert done["task"]["state"] == "succeeded", done  # type: ignore[index]
            assert site.device("kitchen_light").received[-1][1] == b'{"state": "ON"}'
            assert done["task"]["result"]["actions"][0]["outcome"] == "confirmed"  # type: ignore[index]
            timed_out = await eventually_async(lambda: ended(second), 60, "the undecided task to time out")
            assert timed_out["task"]["state"] == "timed_out" and "no one approved" in timed_out["task"]["error"]  # type: ignore[index]
    finally:
        agent.terminate()
        agent.wait(15)
        site.close()


class HangingDispatcher:
    """A fake dispatcher (said here, as the guide asks) whose every call hangs: the stand-in for a tool
    whose service never answers, which a real dispatcher cannot be made to do on purpose."""

    async def call(self, name: str, args: dict[str, object], caller: Caller) -> object:
        await asyncio.Event().wait()
        raise AssertionError("never answered")


async def test_a_tool_that_hangs_times_out_and_the_run_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor_module, "TOOL_TIMEOUT_S", 0.2)
    hanging = OfferedTool("get_entity", "entities.get", "An entity's state.", {"type": "object"}, "read")
    executor = Executor(cast(Dispatcher, HangingDispatcher()), Caller("otto", Role.OPERATOR, "agent"),
                        {"get_entity": hanging})
    done = await executor.run(1, Step("get_entity", {"entity_id": "hall fan"}))
    assert (done.outcome, done.detail) == ("timeout", "no answer within 0.2 s")
    assert executor.value_of(1) is None  # a condition on it is skipped, never taken as true
    assert executor.holds({"step": 1, "op": "==", "value": "on"}) == (False, "step 1 gave no value to compare")
