"""benchmark.py's figures: ratios, MFU and target checks from measured numbers (seconds;
the measurements themselves are not tests, they run in `python benchmark.py`)."""

import pytest

from benchmarks.harness.report import add_derived_figures, format_report


def measured(peak=None, held_rss=900.0, lightning_train=9.6):
    def data(pipeline, rate224, rate299, **extra):
        return {"pipeline": pipeline, "peak_rss_mb": 700.0, "sizes": {
            "224": {"images_per_s": rate224, **extra}, "299": {"images_per_s": rate299, **extra}}}

    loop = {"precision": "32-true", "peak_rss_mb": 1500.0, "train_flops_per_image": 3e9,
            "inference_flops_per_image": 1e9}
    return {
        "machine": {"cpu": "test CPU", "cores": 2, "gpu": None, "gpu_peak_flops_16bit": peak,
                    "torch": "2", "load_average": [1.0, 1.0, 1.0]},
        "device": "cpu",
        "settings": {"data_sizes": [224, 299], "model": "inception_v3", "image_size": 96,
                     "batch_size": 8, "rounds": 3, "steps": 12},
        "data": {"description": "test images", "images": 48},
        "data_path": [data("naive", 50.0, 40.0), data("medrepro", 55.0, 44.0),
                      data("medrepro_cached", 5000.0, 2000.0, cache_build_images_per_s=60.0),
                      data("medrepro_cached_augment", 400.0, 300.0)],
        "training": [{"loop": "hand-written", "train_images_per_s": 10.0,
                      "inference_images_per_s": 40.0, **loop},
                     {"loop": "lightning", "train_images_per_s": lightning_train,
                      "inference_images_per_s": 38.0, **loop}],
        "memory": [{"cached_images": 5000, "image_shape": [224, 224, 1], "cache_mb": 239.0,
                    "built": True, "epoch_images_per_s": 9000.0, "peak_rss_mb": 1000.0},
                   {"cached_images": 5000, "image_shape": [224, 224, 1], "cache_mb": 239.0,
                    "built": False, "epoch_images_per_s": 9000.0, "peak_rss_mb": held_rss}],
        "seconds": 60.0,
    }


def test_ratios_and_targets_follow_from_the_measurements():
    results = add_derived_figures(measured())
    cached = results["data_path"][2]["sizes"]
    assert cached["224"]["ratio_to_naive"] == pytest.approx(100.0)
    assert cached["299"]["ratio_to_naive"] == pytest.approx(50.0)
    lightning = results["training"][1]
    assert lightning["train_ratio_to_hand_written"] == pytest.approx(0.96)
    assert lightning["inference_ratio_to_hand_written"] == pytest.approx(0.95)
    assert lightning["train_model_flops_per_s"] == pytest.approx(9.6 * 3e9)
    assert lightning["train_mfu"] is None  # no GPU peak
    assert [t["met"] for t in results["targets"].values()] == [True, True, True]
    table = format_report(results)
    assert "| medrepro from the cache | 5,000 | 100.0x | 2,000 | 50.0x | 700 MB |" in table
    assert "0.96x" in table and "MFU: n/a" in table


def test_missed_targets_and_mfu_on_a_gpu():
    results = add_derived_figures(measured(peak=1e12, held_rss=2100.0, lightning_train=9.0))
    met = {name: t["met"] for name, t in results["targets"].items()}
    assert list(met.values()) == [True, False, False]
    assert results["training"][0]["train_mfu"] == pytest.approx(10.0 * 3e9 / 1e12)
    assert "MFU (of the GPU's 16-bit dense peak): training 2.7%" in format_report(results)


def test_flops_per_image_counts_a_linear_layer_by_hand():
    """Lightning's measure_flops through flops_per_image, against the count by hand: a
    Linear(8 -> 4) does 2*8*4 FLOPs per image forward, and as many again backward for the
    weight's gradient (the images need none)."""
    import torch

    from benchmarks.harness.flops import flops_per_image, gpu_peak_flops

    layer = torch.nn.Linear(8, 4)
    flops = flops_per_image(layer, layer, lambda logits: logits.sum(), torch.ones(5, 8))
    assert flops == {"inference_flops_per_image": 64, "train_flops_per_image": 64 * 2}
    assert layer.weight.grad is None
    if not torch.cuda.is_available():
        assert gpu_peak_flops() == ("cpu", None)
