"""The auto-tuner: from the box (probe) and the model (GGUF metadata) to llama.cpp settings.

Every byte the plan spends is counted in `Usage`, and `Plan.why` says in words how each value
was reached, with the arithmetic. The memory model follows how llama.cpp lays a model out:

- the token embedding always stays in system RAM; with n_gpu_layers = L the *last* L blocks go
  to the GPU, and L = n_layer + 1 also moves the output head;
- the KV cache of a block lives where the block lives (offload_kqv), 2 bytes per element at
  f16 and 34/32 at q8_0, for every one of the n_ctx cells (the cells are shared by all streams);
- compute buffers are reserved for the worst micro-batch: n_ubatch rows of activations plus
  n_ubatch x n_vocab logits on the device holding the head; flash attention is always on, so
  no n_ctx x n_ubatch score matrix is planned.

The search prefers, in order: a context of at least min(wanted, 2048), as many layers on the GPU
as fit, a longer context, an f16 KV cache, a bigger micro-batch. Estimates are kept on the
high side; what llama.cpp really allocates is logged at load, and a failed load steps down
(`step_down`): context first, then layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from appliance.config import ApplianceConfig
from appliance.engine.probe import Hardware
from appliance.modelfiles.gguf_info import ModelInfo

MiB = 1 << 20
GiB = 1 << 30
MIN_CTX = 512
USABLE_CTX = 2048
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32}
KvType = Literal["f16", "q8_0"]


@dataclass(frozen=True)
class Budget:
    ram_bytes: int
    gpu_bytes: int  # 0 without a usable GPU
    unified: bool
    why: tuple[str, ...]


@dataclass(frozen=True)
class Usage:
    gpu_weights: int = 0
    gpu_kv: int = 0
    gpu_compute: int = 0
    ram_weights: int = 0
    ram_kv: int = 0
    ram_compute: int = 0

    @property
    def gpu(self) -> int:
        return self.gpu_weights + self.gpu_kv + self.gpu_compute

    @property
    def ram(self) -> int:
        return self.ram_weights + self.ram_kv + self.ram_compute


@dataclass(frozen=True)
class Plan:
    fits: bool
    n_ctx: int
    n_gpu_layers: int
    n_batch: int
    n_ubatch: int
    n_threads: int
    n_threads_batch: int
    kv_type: KvType
    flash_attn: bool
    use_mmap: bool
    use_mlock: bool
    usage: Usage
    budget: Budget
    why: tuple[str, ...] = field(default_factory=tuple)
    # llama.cpp's extra CPU buffer types: weights repacked for the CPU's own kernels (AMX, AVX-512, NEON).
    cpu_repack: bool = True

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage"].update(gpu_total=self.usage.gpu, ram_total=self.usage.ram)
        return data


def mib(n: float) -> str:
    return f"{n / MiB:,.0f} MiB"


def budget_for(hw: Hardware, *, gpu_enabled: bool, gpu_fraction: float, gpu_reserve_bytes: int,
               ram_reserve_fraction: float, other_ram_bytes: int = 0) -> Budget:
    """What the chat model may use: system RAM and GPU memory, after the safety margins."""
    ram_reserve = int(hw.mem_total_bytes * ram_reserve_fraction)
    usable = hw.usable_ram_bytes
    gpu = hw.gpus[0] if gpu_enabled and hw.gpus else None
    why = []
    if hw.cgroup_limit_bytes is not None and hw.cgroup_limit_bytes < hw.mem_available_bytes:
        why.append(f"cgroup limit {mib(hw.cgroup_limit_bytes)} is below MemAvailable {mib(hw.mem_available_bytes)}")
    if gpu is not None and gpu.unified:
        pool = min(usable, gpu.free_bytes) - max(gpu_reserve_bytes, ram_reserve) - other_ram_bytes
        gpu_bytes = max(0, int(pool * gpu_fraction))
        why.append(f"unified memory: pool = min(available {mib(usable)}, GPU free {mib(gpu.free_bytes)}) "
                   f"- reserve {mib(max(gpu_reserve_bytes, ram_reserve))} - other models {mib(other_ram_bytes)} "
                   f"= {mib(pool)}; GPU share x{gpu_fraction} = {mib(gpu_bytes)}")
        return Budget(ram_bytes=max(0, pool), gpu_bytes=gpu_bytes, unified=True, why=tuple(why))
    ram = max(0, usable - ram_reserve - other_ram_bytes)
    why.append(f"RAM: available {mib(usable)} - {ram_reserve_fraction:.0%} of {mib(hw.mem_total_bytes)} "
               f"- other models {mib(other_ram_bytes)} = {mib(ram)}")
    if gpu is None:
        why.append("no GPU: " + ("none found" if not hw.gpus else
                                 "resource.gpu_enabled is false or llama.cpp was built without GPU support"))
        return Budget(ram_bytes=ram, gpu_bytes=0, unified=False, why=tuple(why))
    gpu_bytes = max(0, int(gpu.free_bytes * gpu_fraction) - gpu_reserve_bytes)
    why.append(f"GPU {gpu.name}: free {mib(gpu.free_bytes)} x {gpu_fraction} - reserve "
               f"{mib(gpu_reserve_bytes)} = {mib(gpu_bytes)}")
    return Budget(ram_bytes=ram, gpu_bytes=gpu_bytes, unified=False, why=tuple(why))


def usage_for(model: ModelInfo, *, n_ctx: int, layers: int, kv: KvType, n_ubatch: int, n_seq: int) -> Usage:
    on_gpu = min(layers, model.n_layer)
    head_on_gpu = layers > model.n_layer
    gpu_weights = sum(model.layer_bytes[model.n_layer - on_gpu:]) + (model.output_bytes if head_on_gpu else 0)
    kv_layer = n_ctx * model.kv_bytes_per_token(KV_BYTES[kv]) / model.n_layer
    activations = n_ubatch * 4 * (4 * model.n_embd + 2 * model.n_ff)
    logits = n_ubatch * model.n_vocab * 4
    return Usage(
        gpu_weights=gpu_weights,
        gpu_kv=int(kv_layer * on_gpu),
        gpu_compute=(activations + (logits if head_on_gpu else 0)) if layers else 0,
        ram_weights=model.weight_bytes - gpu_weights,
        ram_kv=int(kv_layer * (model.n_layer - on_gpu)),
        # Host side: activations when any block runs there, the head's logits, and the
        # per-sequence output buffer llama.cpp keeps for sampling.
        ram_compute=(activations if on_gpu < model.n_layer else 0) + (0 if head_on_gpu else logits)
        + n_seq * model.n_vocab * 4,
    )


def _fits(usage: Usage, budget: Budget) -> bool:
    if budget.unified:
        return usage.gpu <= budget.gpu_bytes and usage.gpu + usage.ram <= budget.ram_bytes
    return usage.gpu <= budget.gpu_bytes and usage.ram <= budget.ram_bytes


def _contexts(wanted: int) -> list[int]:
    sizes, n = [], wanted
    while n >= MIN_CTX:
        sizes.append(n)
        n = n // 2 // 256 * 256
    return sizes or [MIN_CTX]


def cpu_repack(hw: Hardware, setting: Literal["auto", "on", "off"]) -> tuple[bool, str | None]:
    """Whether llama.cpp may repack weights into its extra CPU buffer types, and why not when not.

    On a CPU that advertises AMX, llama.cpp puts quantized weights in its AMX buffer, and on the
    Sapphire Rapids virtual machines this project is built and tested on its AMX matmul dies with a
    general protection fault at ldtilecfg (llama-cpp-python 0.3.36), on the first decode. So auto
    leaves repacking off where AMX is advertised (the AVX-512 kernels do the work); engine.cpu_repack:
    on brings it back on a box whose AMX works."""
    if setting != "auto":
        return setting == "on", None if setting == "on" else "CPU weight repacking off: engine.cpu_repack"
    if "amx_int8" in hw.cpu_flags:
        return False, ("CPU weight repacking off: this CPU advertises AMX, and llama.cpp's AMX matmul faults "
                       "where AMX is not fully passed through (engine.cpu_repack: on to use it)")
    return True, None


def plan_model(model: ModelInfo, hw: Hardware, budget: Budget, *, n_ctx: int, n_seq: int,
               n_threads: int | None = None, n_gpu_layers: int | None = None,
               kv_type: Literal["auto", "f16", "q8_0"] = "auto",
               repack: Literal["auto", "on", "off"] = "auto") -> Plan:
    wanted = min(n_ctx, model.n_ctx_train)
    max_layers = model.n_layer + 1 if budget.gpu_bytes > 0 else 0
    layer_choices = range(max_layers, -1, -1) if n_gpu_layers is None else [min(n_gpu_layers, max_layers)]
    kvs: tuple[KvType, ...] = ("f16", "q8_0") if kv_type == "auto" else (kv_type,)
    best: tuple[tuple[int, ...], int, KvType, int, int, Usage] | None = None
    for ctx in _contexts(wanted):
        for kv in kvs:
            for ubatch in (512, 256, 128):
                for layers in layer_choices:
                    usage = usage_for(model, n_ctx=ctx, layers=layers, kv=kv, n_ubatch=ubatch, n_seq=n_seq)
                    if _fits(usage, budget):
                        key = (ctx >= min(wanted, USABLE_CTX), layers, ctx, kv == "f16", ubatch)
                        if best is None or key > best[0]:
                            best = (key, ctx, kv, ubatch, layers, usage)
                        break  # fewer layers only fit more easily; this is the most for ctx/kv/ubatch
    cores = hw.cores
    if best is None:
        smallest = usage_for(model, n_ctx=MIN_CTX, layers=0, kv="q8_0", n_ubatch=128, n_seq=n_seq)
        why = (*budget.why, f"does not fit: even {MIN_CTX} tokens of q8_0 KV on the CPU needs "
               f"{mib(smallest.ram)} (weights {mib(smallest.ram_weights)}, KV {mib(smallest.ram_kv)}, "
               f"compute {mib(smallest.ram_compute)}) but the budget is {mib(budget.ram_bytes)}")
        return Plan(False, MIN_CTX, 0, 128, 128, cores, cores, "q8_0", True, True, False, smallest, budget, why)
    _, ctx, kv, ubatch, layers, usage = best
    plan = _explain(model, hw, budget, wanted=wanted, ctx=ctx, kv=kv, ubatch=ubatch, layers=layers,
                    usage=usage, n_threads=n_threads, forced_layers=n_gpu_layers is not None)
    allowed, why_not = cpu_repack(hw, repack)
    return plan if allowed else replace(plan, cpu_repack=False, why=(*plan.why, why_not or ""))


def _explain(model: ModelInfo, hw: Hardware, budget: Budget, *, wanted: int, ctx: int, kv: KvType,
             ubatch: int, layers: int, usage: Usage, n_threads: int | None, forced_layers: bool) -> Plan:
    why = list(budget.why)
    why.append(f"model {model.name} ({model.arch}, {model.file_type}): weights {mib(model.weight_bytes)} = "
               f"{model.n_layer} blocks {mib(sum(model.layer_bytes))} + head {mib(model.output_bytes)} "
               f"+ embedding/norms {mib(model.other_bytes)}")
    per_token = model.kv_bytes_per_token(KV_BYTES[kv])
    why.append(f"n_ctx {ctx}: wanted {wanted} (engine.n_ctx capped by the trained {model.n_ctx_train})"
               + ("" if ctx == wanted else ", halved until it fit")
               + f"; KV {kv} = {model.n_layer} layers x {model.n_head_kv} KV heads x "
               f"({model.head_dim_k}+{model.head_dim_v}) x {KV_BYTES[kv]:g} B = {per_token / 1024:,.1f} KiB/token, "
               f"x {ctx} = {mib(per_token * ctx)}")
    if budget.gpu_bytes:
        where = "all blocks and the head" if layers > model.n_layer else f"the last {layers} of {model.n_layer} blocks"
        why.append(f"n_gpu_layers {layers}: {where} on the GPU"
                   + (" (engine.n_gpu_layers)" if forced_layers else "") + f": weights {mib(usage.gpu_weights)} "
                   f"+ KV {mib(usage.gpu_kv)} + compute {mib(usage.gpu_compute)} = {mib(usage.gpu)} "
                   f"of {mib(budget.gpu_bytes)}")
    why.append(f"system RAM: weights {mib(usage.ram_weights)} + KV {mib(usage.ram_kv)} + compute "
               f"{mib(usage.ram_compute)} = {mib(usage.ram)} of {mib(budget.ram_bytes)}")
    full = layers > model.n_layer
    threads = n_threads or (min(hw.cores, 4) if full else hw.cores)
    why.append(f"n_threads {threads}: " + ("engine.n_threads" if n_threads else
               "the GPU does the work; a few threads feed it" if full else f"all {hw.cores} usable cores"))
    why.append(f"n_ubatch {ubatch}, n_batch {max(ubatch, min(2048, ctx))}: the biggest micro-batch "
               f"whose compute buffer ({ubatch} rows) fit")
    why.append("flash attention on: no n_ctx x n_ubatch score matrix; the CPU and CUDA backends have it"
               + ("; a q8_0 V cache requires it" if kv == "q8_0" else ""))
    mmap = not (budget.unified and full)
    why.append("mmap " + ("off: on unified memory a full offload would hold the weights twice" if not mmap
                          else "on: weights are paged from the file, not copied"))
    mlock = not budget.unified and usage.ram_weights <= budget.ram_bytes // 2 and usage.ram_weights > 0
    why.append("mlock " + ("on: the CPU-side weights use under half the RAM budget, so keep them resident"
                           if mlock else "off: CPU-side weights are large next to the budget (or on the GPU)"))
    return Plan(True, ctx, layers, max(ubatch, min(2048, ctx)), ubatch, threads, n_threads or hw.cores, kv,
                True, mmap, mlock, usage, budget, tuple(why))


def step_down(plan: Plan) -> Plan | None:
    """The next, smaller plan after a load failed for memory: halve the context, then shed layers."""
    if plan.n_ctx // 2 >= MIN_CTX:
        ctx = plan.n_ctx // 2 // 256 * 256
        return replace(plan, n_ctx=ctx, n_batch=min(plan.n_batch, ctx),
                       why=(*plan.why, f"load failed: stepped the context down to {ctx}"))
    if plan.n_gpu_layers > 0:
        layers = plan.n_gpu_layers - max(1, plan.n_gpu_layers // 4)
        return replace(plan, n_gpu_layers=layers,
                       why=(*plan.why, f"load failed at the smallest context: {layers} GPU layers"))
    return None


def plan_for_config(config: ApplianceConfig, hw: Hardware, chat: ModelInfo, *,
                    other_ram_bytes: int = 0, gpu_available: bool = True) -> Plan:
    """The plan the engine service will load ``chat`` with on ``hw`` under ``config``."""
    res, engine = config.resource, config.engine
    budget = budget_for(hw, gpu_enabled=res.gpu_enabled and gpu_available, gpu_fraction=res.gpu_fraction,
                        gpu_reserve_bytes=res.gpu_reserve_mib * MiB, ram_reserve_fraction=res.ram_reserve_fraction,
                        other_ram_bytes=other_ram_bytes)
    return plan_model(chat, hw, budget, n_ctx=engine.n_ctx, n_seq=res.max_concurrency,
                      n_threads=engine.n_threads, n_gpu_layers=engine.n_gpu_layers, kv_type=engine.kv_type,
                      repack=engine.cpu_repack)


def embedding_reserve(model: ModelInfo | None) -> int:
    """RAM the embedding model takes beside the chat model: weights plus its batch buffers."""
    if model is None:
        return 0
    return model.weight_bytes + 2048 * 4 * (4 * model.n_embd + 2 * model.n_ff) + 64 * MiB


def choose_model(candidates: list[ModelInfo], config: ApplianceConfig, hw: Hardware, *, other_ram_bytes: int = 0,
                 share: float = 0.5, min_ctx: int = 4096) -> tuple[int, tuple[str, ...]]:
    """Which of ``candidates`` (largest first) this box should run: the first whose plan fits with at
    least ``min_ctx`` tokens of context while using at most ``share`` of the memory budget (the rest
    is the box's other work: the memory file's page cache, sandboxed actions); else the last. The
    index, and one line per candidate saying why."""
    why: list[str] = []
    for index, model in enumerate(candidates):
        plan = plan_for_config(config, hw, model, other_ram_bytes=other_ram_bytes)
        budget = plan.budget.ram_bytes + (0 if plan.budget.unified else plan.budget.gpu_bytes)
        used = plan.usage.ram + plan.usage.gpu
        line = (f"{model.name}: needs {mib(used)} with n_ctx {plan.n_ctx} of a {mib(budget)} budget "
                f"(at most {share:.0%} = {mib(budget * share)})")
        if plan.fits and plan.n_ctx >= min(min_ctx, config.engine.n_ctx) and used <= budget * share:
            return index, (*why, line + ": chosen")
        why.append(line + (": too big" if plan.fits else ": does not fit"))
    return len(candidates) - 1, (*why, f"none fits comfortably: the smallest, {candidates[-1].name}")
