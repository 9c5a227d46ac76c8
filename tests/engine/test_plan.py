"""Golden plans of the auto-tuner for simulated boxes (tests/engine/boxes.py).

A plan's values and its memory arithmetic are compared with tests/engine/golden/plans.json
(regenerate with UPDATE_GOLDEN=1 after a deliberate change, and read the diff). Independently
of the golden file, every plan that claims to fit must fit its budget.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from appliance.config import ApplianceConfig
from appliance.engine.plan import MIN_CTX, Plan, budget_for, choose_model, plan_model, step_down
from appliance.modelfiles.gguf_info import read_model_info
from appliance.modelfiles.packaged import PACKAGED, QWEN_05B, QWEN_15B, PackagedModel
from appliance.modelfiles.tinymodel import write_tiny_llama
from tests.engine.boxes import BOXES, MODELS, GiB, MiB

GOLDEN = Path(__file__).parent / "golden" / "plans.json"


def plan_for(box: str, model: str, n_ctx: int = 8192) -> Plan:
    hw = BOXES[box]
    budget = budget_for(hw, gpu_enabled=True, gpu_fraction=0.7, gpu_reserve_bytes=GiB,
                        ram_reserve_fraction=0.10, other_ram_bytes=150 * MiB)
    return plan_model(MODELS[model], hw, budget, n_ctx=n_ctx, n_seq=4)


def summary(plan: Plan) -> dict[str, object]:
    keys = ("fits", "n_ctx", "n_gpu_layers", "n_batch", "n_ubatch", "n_threads", "kv_type", "flash_attn",
            "use_mmap", "use_mlock")
    data = {k: getattr(plan, k) for k in keys}
    data["gpu_mib"] = round(plan.usage.gpu / MiB)
    data["ram_mib"] = round(plan.usage.ram / MiB)
    data["budget_gpu_mib"] = round(plan.budget.gpu_bytes / MiB)
    data["budget_ram_mib"] = round(plan.budget.ram_bytes / MiB)
    return data


def all_plans() -> dict[str, dict[str, object]]:
    return {f"{box} / {model}": summary(plan_for(box, model)) for box in BOXES for model in MODELS}


def test_plans_match_the_golden_file() -> None:
    plans = all_plans()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(plans, indent=1) + "\n")
    assert plans == json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("box", BOXES)
@pytest.mark.parametrize("model", MODELS)
def test_planned_memory_fits_the_budget(box: str, model: str) -> None:
    plan = plan_for(box, model)
    if not plan.fits:
        assert "does not fit" in plan.why[-1]
        return
    if plan.budget.unified:
        assert plan.usage.gpu + plan.usage.ram <= plan.budget.ram_bytes
        assert plan.usage.gpu <= plan.budget.gpu_bytes
    else:
        assert plan.usage.ram <= plan.budget.ram_bytes
        assert plan.usage.gpu <= plan.budget.gpu_bytes
    assert plan.n_ctx >= MIN_CTX and plan.n_ubatch <= plan.n_batch <= plan.n_ctx


def test_the_shapes_of_the_simulated_boxes() -> None:
    """What each box is known for: the 3060 holds all of an 8B Q4, the 4 GB board none of it."""
    assert plan_for("rtx3060-12gb-32gb", "llama-3.1-8b-q4_k_m").n_gpu_layers == 33
    jetson = plan_for("jetson-orin-nano-8gb", "llama-3.1-8b-q4_k_m")
    assert jetson.fits and 0 < jetson.n_gpu_layers < 33 and not jetson.use_mlock
    assert plan_for("x86-16gb-no-gpu", "llama-3.1-8b-q4_k_m").n_gpu_layers == 0
    assert not plan_for("board-4gb", "llama-3.1-8b-q4_k_m").fits
    assert plan_for("board-4gb", "qwen2.5-0.5b-q8_0").fits


def test_the_why_shows_the_arithmetic() -> None:
    why = "\n".join(plan_for("rtx3060-12gb-32gb", "llama-3.1-8b-q4_k_m").why)
    assert "GPU NVIDIA GeForce RTX 3060: free 11,900 MiB x 0.7 - reserve 1,024 MiB" in why
    assert "KV f16 = 32 layers x 8 KV heads x (128+128) x 2 B = 128.0 KiB/token" in why


def test_step_down_halves_context_then_sheds_layers() -> None:
    plan: Plan | None = plan_for("rtx3060-12gb-32gb", "llama-3.1-8b-q4_k_m")
    seen = []
    while plan is not None:
        seen.append((plan.n_ctx, plan.n_gpu_layers))
        plan = step_down(plan)
    assert seen[:5] == [(8192, 33), (4096, 33), (2048, 33), (1024, 33), (512, 33)]
    assert seen[5:8] == [(512, 25), (512, 19), (512, 15)] and seen[-1] == (512, 0)


def test_a_real_gguf_file_is_planned(tmp_path: Path) -> None:
    info = read_model_info(write_tiny_llama(tmp_path / "m.gguf"))
    hw = BOXES["x86-16gb-no-gpu"]
    plan = plan_model(info, hw, budget_for(hw, gpu_enabled=False, gpu_fraction=0.7, gpu_reserve_bytes=GiB,
                                           ram_reserve_fraction=0.1), n_ctx=8192, n_seq=4)
    assert plan.fits and plan.n_ctx == 4096  # capped by the model's trained context
    assert plan.usage.ram_weights == info.weight_bytes


@pytest.mark.parametrize(("box", "chosen"), [("jetson-orin-nano-8gb", QWEN_15B), ("x86-16gb-no-gpu", QWEN_15B),
                                             ("rtx3060-12gb-32gb", QWEN_15B), ("board-4gb", QWEN_05B)])
def test_the_packaged_chat_model_is_chosen_by_the_memory_budget(box: str, chosen: PackagedModel) -> None:
    candidates = list(PACKAGED.values())
    index, why = choose_model([model.info for model in candidates], ApplianceConfig(), BOXES[box],
                              other_ram_bytes=150 * MiB)
    assert candidates[index] is chosen and why[-1].endswith("chosen")
    if chosen is QWEN_05B:  # the 1.5B fits the 4 GB board, but would take more than half of its budget
        assert why[0] == ("Qwen2.5 Coder 1.5B Instruct: needs 1,518 MiB with n_ctx 4096 of a 2,760 MiB budget "
                          "(at most 50% = 1,380 MiB): too big")


def test_weight_repacking_is_left_off_where_the_cpu_advertises_amx() -> None:
    """llama.cpp's AMX matmul faulted (general protection fault at ldtilecfg) on the Sapphire Rapids
    VMs this project runs on: where AMX is advertised, the plan keeps weights out of its buffer."""
    from dataclasses import replace

    xeon = replace(BOXES["x86-16gb-no-gpu"], cpu_model="Intel(R) Xeon(R) Platinum 8480+",
                   cpu_flags=("avx", "avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"))
    budget = budget_for(xeon, gpu_enabled=False, gpu_fraction=0.7, gpu_reserve_bytes=GiB, ram_reserve_fraction=0.1)
    model = MODELS["llama-3.2-3b-q4_k_m"]
    auto = plan_model(model, xeon, budget, n_ctx=4096, n_seq=4)
    assert not auto.cpu_repack and "advertises AMX" in auto.why[-1] and "engine.cpu_repack: on" in auto.why[-1]
    assert plan_model(model, xeon, budget, n_ctx=4096, n_seq=4, repack="on").cpu_repack
    plain = plan_model(model, BOXES["x86-16gb-no-gpu"], budget, n_ctx=4096, n_seq=4)
    assert plain.cpu_repack and not any("repacking" in line for line in plain.why)
    assert not plan_model(model, BOXES["x86-16gb-no-gpu"], budget, n_ctx=4096, n_seq=4, repack="off").cpu_repack
