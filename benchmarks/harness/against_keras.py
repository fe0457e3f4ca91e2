"""``python benchmark.py --against keras``: medrepro beside the studies' own stack, Keras 3
on TensorFlow, in the same run.

The same model from scratch (timm's port of InceptionV3, Xception or VGG16 against
``keras.applications``' original, ``weights=None``), the same image size, channels, batch
size, CPU thread count and precision, each measurement in its own process (alternating
between the two stacks and the precisions, so that both see the same disturbances; the
best of ``rounds`` counts). medrepro trains with ``Trainer.fit`` and infers with
``Trainer.test`` (its metrics included) from its decoded-image cache, exactly as a run
does (:func:`benchmarks.harness.training_loop.measure_lightning`); Keras trains with
``train_on_batch`` and infers with ``predict_on_batch`` on one fixed batch in memory
(:mod:`benchmarks.harness.keras_loop`).

Precisions: float32 on both sides, bf16 (medrepro ``bf16-mixed``, Keras
``mixed_bfloat16``) where the CPU has native bfloat16, and each side's default (medrepro:
``trainer.precision=auto``; Keras: float32), which are rows of the first two.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata, util
from pathlib import Path

from benchmarks.harness.keras_loop import KERAS_APPLICATIONS, KERAS_POLICIES
from benchmarks.harness.runner import best_round, chest_xray_folder, machine, run_task
from medrepro.core.cpu_features import native_bf16_instructions
from medrepro.core.errors import UserError
from medrepro.core.precision import resolve_precision

# what --model takes -> medrepro's (timm) model name
MODELS = {"inception_v3": "inception_v3", "xception": "legacy_xception",
          "legacy_xception": "legacy_xception", "vgg16": "vgg16"}
MEDREPRO_PRECISIONS = {"float32": "32-true", "bf16": "bf16-mixed"}
INSTALL = ('pip install -e ".[bench]" (Keras 3 and TensorFlow; or pip install keras '
           "tensorflow-cpu)")
CHANNELS = 1  # the benchmark's data module reads the X-rays as one channel; Keras gets the same
DEFAULT_SPEED_UP = 1.5  # medrepro's default precision against Keras's float32, 224 px, bf16 CPU
EQUAL_PRECISION = 1.0


@dataclass
class KerasComparison:
    """What ``--against keras`` measures, and how long."""

    model: str = "inception_v3"
    image_size: int = 224
    batch_size: int = 8
    threads: int = 1
    warmup: int = 3
    steps: int = 10
    rounds: int = 3

    @classmethod
    def quick(cls, **changes) -> KerasComparison:
        return cls(**{"image_size": 96, "warmup": 2, "steps": 4, "rounds": 1, **changes})


def keras_missing() -> str | None:
    """Why Keras cannot be measured here (with how to install it), or ``None``."""
    absent = [name for name in ("keras", "tensorflow") if util.find_spec(name) is None]
    if absent:
        return f"{' and '.join(absent)} not installed: {INSTALL}."
    version = metadata.version("keras")
    if int(version.split(".")[0]) < 3:
        return f"Keras {version} is installed; the comparison needs Keras 3: {INSTALL}."
    return None


def check_comparison(settings: KerasComparison) -> KerasComparison:
    """The settings with medrepro's model name, or a UserError naming what is wrong."""
    if settings.model not in MODELS:
        raise UserError(f"--against keras measures {', '.join(sorted(MODELS))}, "
                        f"not --model {settings.model}.")
    for name in ("image_size", "batch_size", "threads", "rounds"):
        if getattr(settings, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1.")
    missing = keras_missing()
    if missing:
        raise UserError(f"Keras cannot be measured: {missing}")
    return KerasComparison(**{**asdict(settings), "model": MODELS[settings.model]})


def run_against_keras(settings: KerasComparison, log=print) -> dict:
    """Measure both stacks; returns the JSON-able results (with ratios and targets)."""
    settings = check_comparison(settings)
    bf16 = native_bf16_instructions()
    precisions = ["float32", "bf16"] if bf16 else ["float32"]
    medrepro_default = ("bf16" if resolve_precision("auto", "cpu") == "bf16-mixed"
                        else "float32")
    threads = {name: str(settings.threads) for name in
               ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    keras_env = {**threads, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    results = {"machine": {**machine(), "native_bf16": bf16}, "settings": asdict(settings),
               "channels": CHANNELS, "defaults": {"medrepro": medrepro_default,
                                                  "keras": "float32"}}
    measured = {(side, p): [] for p in precisions for side in ("medrepro", "keras")}
    with tempfile.TemporaryDirectory(prefix="medrepro-against-keras-") as scratch:
        images, _ = chest_xray_folder(Path(scratch))
        common = {"image_size": settings.image_size, "batch_size": settings.batch_size,
                  "steps": settings.steps, "warmup": settings.warmup, "rounds": 1,
                  "threads": settings.threads}
        for number in range(settings.rounds):
            for precision in precisions:
                log(f"{settings.model}, {settings.image_size} px, {precision}, round "
                    f"{number + 1}: medrepro ...")
                measured["medrepro", precision].append(run_task("lightning_loop", {
                    **common, "root": str(images), "model_name": settings.model,
                    "cache_dir": str(Path(scratch) / "cache"), "device": "cpu",
                    "precision": MEDREPRO_PRECISIONS[precision]}, env=threads))
                log(f"{settings.model}, {settings.image_size} px, {precision}, round "
                    f"{number + 1}: Keras ...")
                measured["keras", precision].append(run_task("keras_loop", {
                    **common, "model_name": settings.model, "channels": CHANNELS,
                    "precision": precision}, env=keras_env))
    results["rows"] = [{"side": side, "precision_name": precision, **best_round(rounds)}
                       for (side, precision), rounds in measured.items()]
    results["seconds"] = round(time.perf_counter() - started, 1)
    return add_comparisons(results)


def add_comparisons(results: dict) -> dict:
    """The ratios medrepro / Keras (float32, bf16, each side's default) by the wall clock and
    by CPU time, and the targets. With one thread the targets are checked on the CPU-time
    ratio, which on an idle machine equals the wall-clock one and which other processes on a
    shared machine disturb far less (see :mod:`benchmarks.harness.timing`); with more
    threads, on the wall-clock ratio."""
    rows = {(row["side"], row["precision_name"]): row for row in results["rows"]}
    pairs = [("float32", "float32", "float32")]
    if ("medrepro", "bf16") in rows:
        pairs.append(("bf16", "bf16", "bf16"))
    defaults = results["defaults"]
    pairs.append(("each side's default", defaults["medrepro"], defaults["keras"]))
    results["comparisons"] = [
        {"name": name, "medrepro": ours, "keras": theirs,
         **{f"{kind}_{clock}ratio": rows["medrepro", ours][f"{kind}_images_per_{clock}s"]
            / rows["keras", theirs][f"{kind}_images_per_{clock}s"]
            for kind in ("train", "inference") for clock in ("", "cpu_")}}
        for name, ours, theirs in pairs]
    clock = "cpu_" if results["settings"]["threads"] == 1 else ""
    results["targets_by"] = "CPU time" if clock else "wall clock"
    ratios = {c["name"]: c[f"train_{clock}ratio"] for c in results["comparisons"]}
    size, bf16 = results["settings"]["image_size"], results["machine"]["native_bf16"]
    targets = [(("training, medrepro's default precision vs Keras's default float32 (224 px, "
                 "CPU with native bf16)"), DEFAULT_SPEED_UP, ratios["each side's default"],
                size == 224 and bf16 is not None),
               ("training, float32 on both sides", EQUAL_PRECISION, ratios["float32"], True)]
    if "bf16" in ratios:
        targets.append(("training, bf16 on both sides", EQUAL_PRECISION, ratios["bf16"], True))
    results["targets"] = {name: {"target": limit, "measured": value,
                                 "met": (value >= limit) if applies else None}
                          for name, limit, value, applies in targets}
    return results


def format_against_keras(results: dict) -> str:
    """The comparison as Markdown tables."""
    machine, settings = results["machine"], results["settings"]
    keras = next(r for r in results["rows"] if r["side"] == "keras")
    load = machine.get("load_average")
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, native bf16: "
        f"{machine['native_bf16'] or 'no'}; torch {machine['torch']}, Keras "
        f"{keras['versions']['keras']} on TensorFlow {keras['versions']['tensorflow']}; load "
        "average at start " + ("n/a" if not load else f"{load[0]:.1f}"),
        "",
        (f"{KERAS_APPLICATIONS[settings['model']]} from scratch, {settings['image_size']} px, "
         f"{results['channels']} channel, batch {settings['batch_size']}, "
         f"{settings['threads']} CPU thread(s), images per second of wall time (per second of "
         f"the process's CPU time), best of {settings['rounds']} round(s) of "
         f"{settings['steps']} training steps (inference: three times as many) after "
         f"{settings['warmup']} warm-up steps"),
        "",
        "| stack | precision | training | inference | parameters | peak RSS |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        if row["side"] == "medrepro":
            stack, precision = f"medrepro (timm {settings['model']})", row["precision"]
        else:
            stack = f"Keras {KERAS_APPLICATIONS[settings['model']]}"
            precision = KERAS_POLICIES[row["precision_name"]]
        lines.append(f"| {stack} | {precision} | {_figures(row, 'train')} | "
                     f"{_figures(row, 'inference')} | {row['parameters'] / 1e6:,.1f} M | "
                     f"{row['peak_rss_mb']:,.0f} MB |")
    lines += ["", "| medrepro / Keras, wall clock (CPU time) | training | inference |",
              "|---|---:|---:|"]
    for comparison in results["comparisons"]:
        cells = [f"{comparison[f'{kind}_ratio']:.2f}x ({comparison[f'{kind}_cpu_ratio']:.2f}x)"
                 for kind in ("train", "inference")]
        lines.append(f"| {comparison['name']} (medrepro {comparison['medrepro']}, Keras "
                     f"{comparison['keras']}) | " + " | ".join(cells) + " |")
    lines += ["", f"| target (ratio by {results['targets_by']}) | measured | met |",
              "|---|---:|:---:|"]
    for name, target in results["targets"].items():
        met = {True: "yes", False: "no", None: "n/a here"}[target["met"]]
        lines.append(f"| {name} (>= {target['target']}x) | {target['measured']:.2f}x | {met} |")
    lines += ["", f"Benchmark wall time {results['seconds']:.0f} s."]
    return "\n".join(lines)


def _figures(row: dict, kind: str) -> str:
    return f"{row[f'{kind}_images_per_s']:,.1f} ({row[f'{kind}_images_per_cpu_s']:,.1f})"
