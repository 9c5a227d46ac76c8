"""`appliance engine probe|plan`: what the box is, and what the tuner would load on it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import llama_cpp

from appliance.cli.base import actions, fail
from appliance.config import ApplianceConfig
from appliance.engine.plan import embedding_reserve, mib, plan_for_config
from appliance.engine.probe import Hardware, probe
from appliance.modelfiles.gguf_info import ModelFileError, read_model_info


def register(commands: Any) -> None:
    group = actions(commands, "engine", "the inference engine")
    group.add_parser("probe", help="print the hardware the engine would plan for (JSON)").set_defaults(
        handler=probe_command)
    plan = group.add_parser("plan", help="print the settings the tuner picks for the chat model, and why")
    plan.add_argument("--model", metavar="PATH", help="a GGUF file (default: the configured chat model)")
    plan.add_argument("--hardware", metavar="JSON", help="plan for the box described by a saved `engine probe`")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(handler=plan_command)


def probe_command(_config: ApplianceConfig, _args: argparse.Namespace) -> int:
    sys.stdout.write(json.dumps(probe().as_dict(), indent=2) + "\n")
    return 0


def _hardware(path: str | None) -> Hardware:
    if path is None:
        return probe()
    try:
        return Hardware.from_dict(json.loads(Path(path).read_text()))
    except OSError as exc:
        fail(f"--hardware: cannot read {path}: {exc.strerror}")
    except (ValueError, TypeError, AttributeError) as exc:
        fail(f"--hardware: {path} is not a saved `engine probe`: {exc}")


def plan_command(config: ApplianceConfig, args: argparse.Namespace) -> int:
    hw = _hardware(args.hardware)
    path = Path(args.model) if args.model else config.chat_model_path
    try:
        chat = read_model_info(path)
    except ModelFileError as exc:
        fail(str(exc), code=1)
    try:
        embedding = read_model_info(config.embedding_model_path)
    except ModelFileError:
        embedding = None
    # A saved probe from another box may well have a GPU even if this llama.cpp build has none.
    gpu = args.hardware is not None or bool(llama_cpp.llama_supports_gpu_offload())
    plan = plan_for_config(config, hw, chat, other_ram_bytes=embedding_reserve(embedding), gpu_available=gpu)
    if args.json:
        sys.stdout.write(json.dumps(plan.as_dict(), indent=2) + "\n")
        return 0 if plan.fits else 1
    rows = [("model", f"{path} ({chat.arch}, {chat.file_type}, {mib(chat.file_bytes)})"),
            ("box", f"{hw.cpu_model}, {hw.cores} cores, RAM {mib(hw.mem_total_bytes)}"
                    + "".join(f", GPU {g.name} {mib(g.total_bytes)}" for g in hw.gpus)),
            ("fits", "yes" if plan.fits else "NO"), ("n_ctx", plan.n_ctx), ("n_gpu_layers", plan.n_gpu_layers),
            ("n_batch / n_ubatch", f"{plan.n_batch} / {plan.n_ubatch}"),
            ("threads (gen / batch)", f"{plan.n_threads} / {plan.n_threads_batch}"),
            ("kv cache", plan.kv_type), ("flash attention", plan.flash_attn),
            ("mmap / mlock", f"{plan.use_mmap} / {plan.use_mlock}"),
            ("GPU use", f"{mib(plan.usage.gpu)} of {mib(plan.budget.gpu_bytes)}"),
            ("RAM use", f"{mib(plan.usage.ram)} of {mib(plan.budget.ram_bytes)}")]
    width = max(len(k) for k, _ in rows)
    out = [f"{k:<{width}}  {v}" for k, v in rows] + ["", "why:"] + [f"  - {line}" for line in plan.why]
    sys.stdout.write("\n".join(out) + "\n")
    return 0 if plan.fits else 1
