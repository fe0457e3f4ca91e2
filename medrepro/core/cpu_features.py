"""Whether the CPU computes in bfloat16 natively (and so trains faster in it than in float32).

CPUs with AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake, Sapphire Rapids and later) or
AMX-BF16 (Intel Sapphire Rapids and later) multiply bfloat16 numbers in hardware, and
oneDNN, which runs PyTorch's convolutions and matrix products on the CPU, uses those
instructions. Other CPUs can only emulate bfloat16, which is slower than float32.

torch has no public function that answers this (``torch.backends.cpu.get_cpu_capability()``
says ``AVX512`` with or without BF16). On Linux the answer comes from the kernel's CPU flags
in ``/proc/cpuinfo``, a stable interface that also says whether the kernel enables the
instructions; elsewhere from torch's own CPU probe, ``torch.cpu._is_avx512_bf16_supported``
(private; every CPU with AMX-BF16 has AVX512-BF16 too), and no native bfloat16 when this
torch lacks it.
"""

from __future__ import annotations

from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
# Linux's name of the flag -> the instruction set's name; the first one present is reported
NATIVE_BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


def native_bf16_instructions(cpuinfo: Path = CPUINFO) -> str | None:
    """The CPU's native bfloat16 instruction set (``"AMX-BF16"`` or ``"AVX512-BF16"``), or
    ``None`` where it has none (or PyTorch was built without oneDNN, which would use them)."""
    if not torch.backends.mkldnn.is_available():
        return None
    flags = cpu_flags(cpuinfo)
    if flags is None:
        return _probed_by_torch()
    return next((name for flag, name in NATIVE_BF16_FLAGS.items() if flag in flags), None)


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str] | None:
    """The ``flags`` of the first processor in ``cpuinfo`` (Linux, x86), or ``None`` where
    the file is missing or has no such line (other systems, ARM)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return None


def _probed_by_torch() -> str | None:
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    try:
        return "AVX512-BF16" if probe is not None and probe() else None
    except RuntimeError:  # a probe that cannot run here says no
        return None
