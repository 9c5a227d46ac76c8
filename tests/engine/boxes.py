"""Simulated boxes and model shapes for the auto-tuner's golden plans.

The hardware is what `probe` would report on each box (memory in bytes, as the kernel and
nvidia-smi give it); the models are the shapes and tensor sizes their GGUF files declare,
computed from the published architectures and the quantization's bytes per weight.
"""

from __future__ import annotations

from appliance.engine.probe import Gpu, Hardware
from appliance.modelfiles.gguf_info import ModelInfo

GiB = 1 << 30
MiB = 1 << 20

BOXES = {
    "jetson-orin-nano-8gb": Hardware(
        cpu_model="ARMv8 Processor rev 1 (v8l)", cores=6, cpu_flags=("asimd",), mem_total_bytes=7620 * MiB,
        mem_available_bytes=6100 * MiB, cgroup_limit_bytes=None, jetson_model="NVIDIA Jetson Orin Nano 8GB",
        gpus=(Gpu(0, "Orin (nvgpu)", 7620 * MiB, 6100 * MiB, unified=True),)),
    "x86-16gb-no-gpu": Hardware(
        cpu_model="Intel(R) Core(TM) i5-1235U", cores=12, cpu_flags=("avx", "avx2", "fma", "f16c"),
        mem_total_bytes=15800 * MiB, mem_available_bytes=14200 * MiB, cgroup_limit_bytes=None),
    "rtx3060-12gb-32gb": Hardware(
        cpu_model="AMD Ryzen 5 5600X", cores=12, cpu_flags=("avx", "avx2", "fma", "f16c"),
        mem_total_bytes=32000 * MiB, mem_available_bytes=29000 * MiB, cgroup_limit_bytes=None,
        gpus=(Gpu(0, "NVIDIA GeForce RTX 3060", 12288 * MiB, 11900 * MiB),)),
    "board-4gb": Hardware(
        cpu_model="Cortex-A76", cores=4, cpu_flags=("asimd", "dotprod"), mem_total_bytes=3900 * MiB,
        mem_available_bytes=3300 * MiB, cgroup_limit_bytes=None),
}

# Bytes per weight: Q4_K_M averages ~4.85 bits (mostly Q4_K, some Q6_K); Q8_0 is 34/32 bytes.
BITS = {"Q4_K_M": 4.85, "Q8_0": 8.5}


def model_shape(name: str, *, n_layer: int, n_embd: int, n_head: int, n_head_kv: int, n_ff: int,
                n_vocab: int, n_ctx_train: int, quant: str, tied: bool = False) -> ModelInfo:
    bpw = BITS[quant] / 8
    head_dim = n_embd // n_head
    attn = n_embd * n_embd * 2 + n_embd * head_dim * n_head_kv * 2
    block = int((attn + 3 * n_embd * n_ff) * bpw) + 2 * n_embd * 4
    embedding = int(n_vocab * n_embd * bpw)
    return ModelInfo(
        arch="llama", name=name, file_bytes=n_layer * block + embedding * (1 if tied else 2),
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, n_ff=n_ff, n_vocab=n_vocab,
        n_ctx_train=n_ctx_train, head_dim_k=head_dim, head_dim_v=head_dim, layer_bytes=(block,) * n_layer,
        output_bytes=embedding, other_bytes=embedding + n_embd * 4, file_type=quant)


MODELS = {
    "llama-3.1-8b-q4_k_m": model_shape("Llama-3.1-8B-Instruct Q4_K_M", n_layer=32, n_embd=4096, n_head=32,
                                       n_head_kv=8, n_ff=14336, n_vocab=128256, n_ctx_train=131072,
                                       quant="Q4_K_M"),
    "llama-3.2-3b-q4_k_m": model_shape("Llama-3.2-3B-Instruct Q4_K_M", n_layer=28, n_embd=3072, n_head=24,
                                       n_head_kv=8, n_ff=8192, n_vocab=128256, n_ctx_train=131072,
                                       quant="Q4_K_M", tied=True),
    "qwen2.5-0.5b-q8_0": model_shape("Qwen2.5-0.5B-Instruct Q8_0", n_layer=24, n_embd=896, n_head=14,
                                     n_head_kv=2, n_ff=4864, n_vocab=151936, n_ctx_train=32768,
                                     quant="Q8_0", tied=True),
}
