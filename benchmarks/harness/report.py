"""The benchmark's results as a printed table (Markdown), with ratios and targets."""

from __future__ import annotations

TARGETS = {
    "cached data path vs naive (224 px)": (10.0, "x"),
    "Lightning training loop vs hand-written": (0.98, "x"),
    "Lightning inference loop vs hand-written": (0.98, "x"),
    "peak RSS, data module with 5,000 cached 224 px images": (2048.0, "MB"),
}
LABELS = {
    "naive": "naive: torchvision ImageFolder + PIL transforms",
    "medrepro": "medrepro, data.cache.enabled=false",
    "medrepro_cached": "medrepro from the cache",
    "medrepro_cached_augment": "medrepro from the cache + augment=basic",
}


def add_derived_figures(results: dict) -> dict:
    """Ratios, FLOP rates, MFU and the target checks, added to ``results``."""
    data = {row["pipeline"]: row for row in results["data_path"]}
    naive = data["naive"]["sizes"]
    for row in results["data_path"]:
        for size, entry in row["sizes"].items():
            entry["ratio_to_naive"] = entry["images_per_s"] / naive[size]["images_per_s"]
    loops = {row["loop"]: row for row in results["training"]}
    plain, flops = loops["hand-written"], loops["hand-written"]
    peak = results["machine"]["gpu_peak_flops_16bit"]
    for row in results["training"]:
        for kind in ("train", "inference"):
            row[f"{kind}_ratio_to_hand_written"] = (
                row[f"{kind}_images_per_s"] / plain[f"{kind}_images_per_s"])
            row[f"{kind}_cpu_ratio_to_hand_written"] = (
                row[f"{kind}_images_per_cpu_s"] / plain[f"{kind}_images_per_cpu_s"])
            achieved = row[f"{kind}_images_per_s"] * flops[f"{kind}_flops_per_image"]
            row[f"{kind}_model_flops_per_s"] = achieved
            row[f"{kind}_mfu"] = achieved / peak if peak else None
    held = results["memory"][-1]
    cached_ratio = data["medrepro_cached"]["sizes"]["224"]["ratio_to_naive"]
    # the loops: the median ratio of the rounds in one process, alternating (the separate
    # processes' best rounds compare the machine's quiet moments more than the loops); on a
    # CPU (one thread) by CPU time: what the wall clock gives on an idle machine, and less
    # disturbed by other processes on a shared one (benchmarks.harness.timing)
    clock = "cpu_" if results["device"] == "cpu" else ""
    results["loop_targets_by"] = ("median of alternating rounds in one process, by "
                                  + ("CPU time" if clock else "wall clock"))
    loop_ratios = [results["paired"][f"{kind}_{clock}ratio"] for kind in ("train", "inference")]
    memory = held["peak_rss_mb"] if held["cached_images"] >= 5000 else None
    figures = [cached_ratio, *loop_ratios, memory]
    if results.get("cache_build"):
        build = results["cache_build"]
        build["efficiency"] = build["speedup"] / build["cores"]  # 1.0: linear in the cores
    results["targets"] = {
        name: {"target": limit, "unit": unit, "measured": value,
               "met": None if value is None else (value < limit if unit == "MB" else value >= limit)}
        for (name, (limit, unit)), value in zip(TARGETS.items(), figures)
    }
    return results


def format_report(results: dict) -> str:
    settings, machine = results["settings"], results["machine"]
    sizes = [str(s) for s in settings["data_sizes"]]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores"
        + (f", {machine['gpu']}" if machine["gpu"] else "")
        + f"; torch {machine['torch']}; load average at start {_load(machine)}",
        f"Images: {results['data']['description']} ({results['data']['images']} files)",
        "",
        "Data path, images per second on one core (file -> model-ready tensor)",
        "",
        "| pipeline | " + " | ".join(f"{s} px | ratio" for s in sizes) + " | peak RSS |",
        "|---|" + "---:|---:|" * len(sizes) + "---:|",
    ]
    for row in results["data_path"]:
        cells = [f"{row['sizes'][s]['images_per_s']:,.0f} | {row['sizes'][s]['ratio_to_naive']:.1f}x"
                 for s in sizes]
        lines.append(f"| {LABELS[row['pipeline']]} | " + " | ".join(cells)
                     + f" | {row['peak_rss_mb']:,.0f} MB |")
    builds = [f"{row['sizes'][s]['cache_build_images_per_s']:,.0f} images/s at {s} px"
              for row in results["data_path"] if row["pipeline"] == "medrepro_cached" for s in sizes]
    lines += ["", f"Building the cache (decoding each image once): {', '.join(builds)}."]
    if results.get("cache_build"):
        lines += ["", format_cache_build(results["cache_build"])]
    lines += [""]

    lines += [
        (f"Training and inference, images per second: {settings['model']}, "
        f"{settings['image_size']} px, batch {settings['batch_size']}, "
        f"{'one CPU thread' if results['device'] == 'cpu' else results['device']}, "
        f"{results['training'][0]['precision']}, best of {settings['rounds']} round(s) of "
        f"{settings['steps']} training steps (inference: three times as many); wall clock (CPU "
        "time of the process)"),
        "",
        "| loop | training | ratio | inference | ratio | peak RSS |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["training"]:
        name = ("medrepro: LightningModule + Trainer" if row["loop"] == "lightning"
                else "hand-written PyTorch loop")
        cells = [f"{row[f'{kind}_images_per_s']:,.1f} ({row[f'{kind}_images_per_cpu_s']:,.1f}) | "
                 f"{row[f'{kind}_ratio_to_hand_written']:.2f}x "
                 f"({row[f'{kind}_cpu_ratio_to_hand_written']:.2f}x)"
                 for kind in ("train", "inference")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['peak_rss_mb']:,.0f} MB |")
    paired = results["paired"]
    lines += ["", (f"Both loops in one process, {paired['rounds']} alternating rounds, medrepro / "
                   f"hand-written, median (range): training {_spread(paired, 'train', '')} by "
                   f"wall clock, {_spread(paired, 'train', 'cpu_')} by CPU time; inference "
                   f"{_spread(paired, 'inference', '')} by wall clock, "
                   f"{_spread(paired, 'inference', 'cpu_')} by CPU time.")]
    plain = next(r for r in results["training"] if r["loop"] == "hand-written")
    lightning = next(r for r in results["training"] if r["loop"] == "lightning")
    lines += ["", f"Model FLOPs per image: {plain['train_flops_per_image'] / 1e9:.2f} GFLOP "
              f"training, {plain['inference_flops_per_image'] / 1e9:.2f} GFLOP inference; "
              f"achieved in training {lightning['train_model_flops_per_s'] / 1e9:,.1f} GFLOP/s "
              "(medrepro). " + _mfu(lightning)]

    build, held = results["memory"]
    lines += [
        "",
        (f"Memory: a data module holding {held['cached_images']:,} cached "
        f"{'x'.join(map(str, held['image_shape'][:2]))} images ({held['cache_mb']:,.0f} MB cache): "
        f"peak RSS {build['peak_rss_mb']:,.0f} MB while building the cache, "
        f"{held['peak_rss_mb']:,.0f} MB while running an epoch of every split from it "
        f"({held['epoch_images_per_s']:,.0f} images/s through the DataLoaders)."),
        "",
        f"| target (loop ratios by {results['loop_targets_by']}) | measured | met |",
        "|---|---:|:---:|",
    ]
    for name, target in results["targets"].items():
        unit, value = target["unit"], target["measured"]
        shown = "n/a" if value is None else (f"{value:,.0f} MB" if unit == "MB" else f"{value:.2f}x")
        bound = f"< {target['target']:,.0f} MB" if unit == "MB" else f">= {target['target']}x"
        met = {True: "yes", False: "no", None: "n/a"}[target["met"]]
        lines.append(f"| {name} ({bound}) | {shown} | {met} |")
    lines += ["", f"Benchmark wall time {results['seconds']:.0f} s."]
    return "\n".join(lines)


def format_cache_build(build: dict) -> str:
    """One sentence: cache-build images per second with 1 and with N worker processes."""
    one, many = build["one_worker"], build["n_workers"]
    return (f"Building the cache with worker processes ({build['description']}): "
            f"{one['images_per_s']:,.0f} images/s with 1 worker, {many['images_per_s']:,.0f} "
            f"images/s with {many['workers']} (one per core): {build['speedup']:.2f}x on "
            f"{build['cores']} cores ({100 * build['speedup'] / build['cores']:.0f}% of linear); "
            f"CPU time per image {one['cpu_ms_per_image']:.1f} ms and "
            f"{many['cpu_ms_per_image']:.1f} ms.")


def _spread(paired: dict, kind: str, clock: str) -> str:
    values = paired[f"{kind}_{clock}ratios"]
    return f"{paired[f'{kind}_{clock}ratio']:.2f}x ({min(values):.2f}-{max(values):.2f})"


def _mfu(row: dict) -> str:
    if row["train_mfu"] is None:
        return "MFU: n/a (no GPU with a known peak)."
    return (f"MFU (of the GPU's 16-bit dense peak): training {100 * row['train_mfu']:.1f}%, "
            f"inference {100 * row['inference_mfu']:.1f}%.")


def _load(machine: dict) -> str:
    load = machine.get("load_average")
    return "n/a" if not load else f"{load[0]:.1f}"
