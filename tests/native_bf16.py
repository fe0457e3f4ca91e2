"""An oracle for "does this CPU compute in bfloat16 natively", independent of medrepro's
detection (medrepro.core.cpu_features reads the kernel's CPU flags): oneDNN's own choice of
kernel for a bfloat16 convolution, which it makes from the CPU's CPUID and prints with
ONEDNN_VERBOSE=1, e.g. ``jit_bf16:avx512_core_bf16`` (native AVX512-BF16),
``brg_conv_fwd:avx512_core_amx`` (AMX) or ``jit_bf16:avx512_core`` (emulated)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

CONVOLUTION = (
    "import torch\n"
    "x = torch.randn(1, 16, 16, 16).to(torch.bfloat16)\n"
    "w = torch.randn(16, 16, 3, 3).to(torch.bfloat16)\n"
    "torch.nn.functional.conv2d(x, w)\n"
)


@functools.cache
def onednn_bf16_convolution_kernel() -> str | None:
    """The implementation oneDNN ran a bfloat16 convolution with (``None``: oneDNN ran none,
    e.g. a torch built without it)."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    done = subprocess.run([sys.executable, "-c", CONVOLUTION], capture_output=True, text=True,
                          env=env, check=True, timeout=120)
    for line in done.stdout.splitlines():
        fields = line.split(",")
        if "exec" in fields and "convolution" in fields:
            return fields[fields.index("convolution") + 1]
    return None


def cpu_runs_bf16_natively() -> bool:
    kernel = onednn_bf16_convolution_kernel()
    isa = (kernel or "").rsplit(":", 1)[-1]
    return "bf16" in isa or "amx" in isa
