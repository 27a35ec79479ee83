"""Whether bf16 autocast helps on this CPU.

Why: with AVX-512 BF16 or AMX, bf16 autocast roughly halves FaceNet and generator time; without them
PyTorch emulates bf16 and the same code runs many times slower (an AMD EPYC without AVX-512 took
minutes per 512-photo shard instead of seconds), so every CPU autocast asks this first.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def cpu_bf16_supported() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
