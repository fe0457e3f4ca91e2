"""trainer.precision=auto: bfloat16 on CPUs that compute in it natively, float32 on the
others, and results.json saying which and why. The detection is checked against oneDNN's
own choice of kernel (tests/native_bf16.py), not against itself."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_RUN, compose_config
from native_bf16 import cpu_runs_bf16_natively, onednn_bf16_convolution_kernel

from medrepro.core.cpu_features import cpu_flags, native_bf16_instructions
from medrepro.core.precision import choose_precision, resolve_precision
from medrepro.jobs.training import train

ZEN3 = "fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ssse3 fma cx16 sse4_1 avx avx2 sha_ni"
ZEN4 = ZEN3 + " avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 vaes"
SAPPHIRE_RAPIDS = ZEN3 + " avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"


def cpuinfo(tmp_path, flags: str | None, processors: int = 2):
    """A /proc/cpuinfo as Linux writes it on x86 (``flags``), or as on ARM (``Features``)."""
    blocks = []
    for number in range(processors):
        line = f"flags\t\t: {flags}" if flags is not None else "Features\t: fp asimd bf16"
        blocks.append(f"processor\t: {number}\nvendor_id\t: Test\nmodel name\t: Test CPU\n{line}\n")
    path = tmp_path / f"cpuinfo-{len(list(tmp_path.iterdir()))}"
    path.write_text("\n".join(blocks))
    return path


def test_this_cpu_is_detected_as_onednn_sees_it():
    """oneDNN ran a bfloat16 convolution with a native bf16 or AMX kernel exactly when medrepro
    says the CPU has native bfloat16, and auto then picks bf16-mixed on the CPU."""
    kernel = onednn_bf16_convolution_kernel()
    native = cpu_runs_bf16_natively()
    assert (native_bf16_instructions() is not None) == native, kernel
    assert resolve_precision("auto", "cpu") == ("bf16-mixed" if native else "32-true")
    if not torch.cuda.is_available():  # auto lands on the CPU too
        assert resolve_precision("auto") == resolve_precision("auto", "cpu")


def test_cpu_flags_of_known_processors(tmp_path):
    assert native_bf16_instructions(cpuinfo(tmp_path, ZEN4)) == "AVX512-BF16"
    assert native_bf16_instructions(cpuinfo(tmp_path, SAPPHIRE_RAPIDS)) == "AMX-BF16"
    assert native_bf16_instructions(cpuinfo(tmp_path, ZEN3)) is None
    # a flag is a whole word: neither avx512_bf16x nor avx512_bf is avx512_bf16
    assert native_bf16_instructions(cpuinfo(tmp_path, ZEN3 + " avx512_bf16x avx512_bf")) is None
    assert cpu_flags(cpuinfo(tmp_path, ZEN4)) >= {"avx512_bf16", "avx2", "fpu"}
    # no flags line (ARM) or no file (macOS, Windows): torch's probe, which oneDNN agrees with
    for elsewhere in (cpuinfo(tmp_path, None), tmp_path / "missing"):
        assert cpu_flags(elsewhere) is None
        assert (native_bf16_instructions(elsewhere) is not None) == cpu_runs_bf16_natively()


def test_explicit_precision_is_kept_and_auto_says_why():
    assert choose_precision("32-true", "cpu").precision == "32-true"
    assert choose_precision(16, "cpu").precision == 16
    assert choose_precision("bf16-mixed", "cpu").reason == (
        "trainer.precision=bf16-mixed in the configuration")
    assert "native bfloat16" in choose_precision("auto", "cpu").reason
    if not torch.cuda.is_available():
        gpu = choose_precision("auto", "gpu")
        assert (gpu.precision, gpu.reason) == (
            "32-true", "trainer.precision=auto: no CUDA GPU is available")
    assert choose_precision(None, "mps").precision == "32-true"


@pytest.mark.parametrize("precision", ["auto", "32-true"])
def test_results_json_records_the_precision_and_why(tmp_path, precision):
    """A real run on the CPU: results.json's precision is the one the trainer ran with,
    bf16-mixed on a CPU with native bfloat16 when auto, and the reason names the CPU's
    instructions (or their absence) or the configured value."""
    run_dir = tmp_path / "run"
    cfg = compose_config(["data=demo_pneumonia", *TINY_RUN, "model.name=test_resnet",
                          "model.pretrained=false", "trainer.accelerator=cpu",
                          f"trainer.precision={precision}"], run_dir, demo_dir=tmp_path / "demo")
    train(cfg)
    results = json.loads((run_dir / "results.json").read_text())
    native = cpu_runs_bf16_natively()
    if precision == "auto":
        assert results["precision"] == ("bf16-mixed" if native else "32-true")
        expected = ("the CPU has native bfloat16 instructions (" if native
                    else "the CPU has no native bfloat16 instructions")
        assert results["precision_reason"].startswith(f"trainer.precision=auto: {expected}")
    else:
        assert results["precision"] == "32-true"
        assert results["precision_reason"] == "trainer.precision=32-true in the configuration"
    assert results["status"] == "completed"
