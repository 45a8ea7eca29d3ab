"""Smoke runs of the benchmarks on tiny sizes: they run end to end and write sane JSON.

No timing is asserted (other work shares the machine); only structure and values that
must hold whatever the speed: positive throughputs, the reference's ratio to itself is 1,
agreement and Dice lie in [0, 1].
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from benchmarks import _common, inference, time_to_dice, training

ENV_KEYS = {"date", "device", "cpu_model", "torch", "torch_threads", "logical_cpus", "monai"}


def _load(path):
    data = json.loads(path.read_text())
    assert set(data["environment"]) >= ENV_KEYS
    assert data["environment"]["torch_threads"] >= 1
    assert data["smoke"] is True
    assert data["command"].startswith("python -m benchmarks.")
    return data


def test_slices_annotation_keeps_whole_evenly_spaced_slices():
    truth = np.zeros((9, 12, 15), dtype=np.uint8)
    truth[2:6, 3:9, 4:10] = 2
    ann = time_to_dice.slices_annotation(truth, 2)
    # 2 slices per axis, each an exact copy of truth + 1
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        full = np.flatnonzero((ann > 0).all(axis=other))
        assert len(full) == 2
        for index in full:
            np.testing.assert_array_equal(
                np.take(ann, index, axis=axis), np.take(truth, index, axis=axis) + 1
            )
    assert 0 < (ann > 0).mean() < 0.5


def test_table_and_median():
    text = _common.table(
        [{"a": "x", "b": 1.5}, {"a": "yy", "b": None}], [("a", "name", ""), ("b", "value", ".2f")]
    )
    lines = text.splitlines()
    assert len(lines) == 4
    assert "1.50" in lines[2]
    assert lines[3].rstrip().endswith("-")
    assert _common.median([3.0, 1.0, 2.0]) == 2.0
    assert math.isnan(_common.median([]))


def test_inference_variant_names_carry_their_options():
    bench = inference
    assert bench._overlap("monai_sw8_o125_bf16", 0.25) == 0.125
    assert bench._overlap("ours_sw_o25", 0.125) == 0.25
    assert bench._overlap("ours_sw_bf16", 0.125) == 0.125
    assert bench._overlap("monai_sw8_cl", 0.125) == bench.MONAI_OVERLAP
    assert bench._tokens("monai_sw8_cl_bf16") == {"monai", "sw8", "cl", "bf16"}
    assert "cl" not in bench._tokens("monai_sw2")
    assert "ow" in bench._tokens("monai_sw8_ow_bf16")


def test_inference_goals_separate_monai_at_its_patch_from_monai_at_ours_window():
    """The goal is against MONAI as its tutorials run it (the training patch); MONAI given
    ours' window or layout is reported apart. Dice: at most 0.005 below MONAI's."""

    def row(variant, seconds, dice):
        return {
            "size": "s",
            "variant": variant,
            "seconds": seconds,
            "dice_vs_truth": dice,
            "overlap": inference.MONAI_OVERLAP,
        }

    rows = [
        row("monai_sw2", 4.0, 0.88),
        row("monai_sw8", 3.0, 0.88),
        row("monai_sw8_ow", 2.0, 0.93),
        row("monai_sw8_cl", 2.5, 0.88),
        {**row("ours_sw", 1.5, 0.93), "overlap": 0.25},
    ]
    g = inference._goals(rows, "s")["float32"]
    assert g["monai_best"] == "monai_sw8"
    assert g["ratio_vs_monai_best"] == pytest.approx(2.0)
    assert g["ratio_vs_monai_our_window"] == pytest.approx(2.0 / 1.5)
    assert g["dice_monai_our_window"] == 0.93
    assert g["monai_channels_last"] == "monai_sw8_cl"
    assert g["dice_goal_met"]  # 0.05 above is no failure
    rows[-1]["dice_vs_truth"] = 0.874
    assert not inference._goals(rows, "s")["float32"]["dice_goal_met"]


@pytest.mark.slow
def test_window_context_smoke(tmp_path):
    """The window study trains a tiny model and scores the patch, the default window and
    the cubes on the same model: one row each, Dice in [0, 1], the default window being
    the one predict picks."""
    from benchmarks import window_context

    out = tmp_path / "windows.json"
    args = ["--smoke", "--datasets", "sample", "--crops", "y4", "--crop-length", "40"]
    assert window_context.main([*args, "--out", str(out)]) == 0
    rows = _load(out)["results"]
    variants = ["patch", "default", "cube 8", "cube 16"]
    assert [r["variant"] for r in rows] == variants * 2
    assert [r["crop"] for r in rows] == ["whole"] * 4 + ["y4"] * 4
    assert rows[0]["shape"] == "16x48x48"
    assert rows[4]["shape"] == "16x40x48"  # y 4..44 of the same test volume
    assert rows[0]["window"] == "8x16x16"
    assert rows[1]["window"] != rows[0]["window"]  # the default adds context
    for r in rows:
        assert 0.0 <= r["dice"] <= 1.0
        assert r["seconds"] > 0


@pytest.mark.slow
def test_inference_smoke(tmp_path):
    out = tmp_path / "inference.json"
    assert inference.main(["--smoke", "--out", str(out)]) == 0
    data = _load(out)
    rows = data["results"]
    variants = {r["variant"] for r in rows}
    assert {"monai_sw1", "ours_sw", "ours_predict"} <= variants
    for r in rows:
        assert r["voxels_per_second"] > 0
        assert r["seconds"] > 0
        assert 0.0 <= r["argmax_agreement"] <= 1.0
        assert r["peak_rss_mib"] > 0
        assert r["rss_rise_mib"] >= 0
    ref = next(r for r in rows if r["variant"] == "monai_sw1")
    assert ref["ratio_vs_monai_sw1"] == pytest.approx(1.0)
    assert ref["argmax_agreement"] == 1.0
    assert len(data["setup"]["window"]) == 3
    assert data["setup"]["window_batch"] >= 1
    # ours_sw runs the windows predict runs (predict's own rule, prediction_layout)
    by_variant = {r["variant"]: r for r in rows}
    assert by_variant["ours_sw"]["window"] == by_variant["ours_predict"]["window"]
    assert by_variant["ours_sw"]["steps"] == by_variant["ours_predict"]["steps"]
    assert {"monai_sw2", "ours_sw_bf16", "monai_sw1_bf16"} <= variants
    for per in data["goals"]["per_size"].values():
        assert set(per) == {"float32", "bfloat16"}
        for g in per.values():
            assert isinstance(g["speed_goal_met"], bool)
            assert g["ratio_vs_monai_best"] > 0
            assert 0.0 <= g["dice_ours"] <= 1.0


@pytest.mark.slow
def test_training_smoke(tmp_path):
    out = tmp_path / "training.json"
    assert training.main(["--smoke", "--float32", "--out", str(out)]) == 0
    data = _load(out)
    rows = {r["variant"]: r for r in data["results"]}
    assert set(rows) == {"reference", "ours", "ours_float32"}
    assert rows["ours_float32"]["dtype"] == rows["reference"]["dtype"] == "torch.float32"
    assert data["goals"]["ratio_vs_float32"] == pytest.approx(
        rows["ours_float32"]["seconds"] / rows["ours"]["seconds"]
    )
    assert rows["reference"]["ratio_vs_reference"] == pytest.approx(1.0)
    for r in rows.values():
        assert r["steps_per_second"] > 0
        assert r["patch_voxels_per_second"] > r["steps_per_second"]
        assert r["annotated_voxels_per_second"] <= r["patch_voxels_per_second"] * (1 + 1e-6)
        assert r["threads"] >= 1
    assert data["goals"]["ratio_measured"] == pytest.approx(rows["ours"]["ratio_vs_reference"])


@pytest.mark.slow
def test_time_to_dice_smoke(tmp_path):
    out = tmp_path / "ttd.json"
    assert time_to_dice.main(["--smoke", "--out", str(out)]) == 0
    data = _load(out)
    curve = data["curve"]
    assert [r["annotation"] for r in curve] == list(time_to_dice.CURVE)
    for r in curve:
        assert 0.0 <= r["dice"] <= 1.0
        assert 0.0 < r["annotated_fraction"] <= 1.0
        assert r["iterations"] >= 1
    assert curve[-1]["annotated_fraction"] == 1.0
    assert curve[0]["annotated_fraction"] < curve[1]["annotated_fraction"]
    ttd = data["time_to_dice"]
    assert ttd["train_seconds"] > 0
    assert ttd["curve"], "no evaluation was made during training"
    assert all(0.0 <= c["dice"] <= 1.0 for c in ttd["curve"])
    assert isinstance(data["goals"]["fraction_goal_met"], bool)


def test_datasets_smoke_scores_unseen_cases_for_both_models(tmp_path):
    from benchmarks import datasets

    out = tmp_path / "datasets.json"
    assert datasets.main(["--smoke", "--datasets", "brats", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    (res,) = data["results"]
    assert set(res["multi"]) >= {"region WT", "region TC", "region ET", "train_seconds"}
    for variant in ("multi", "one"):
        assert len(res[variant]["per_case"]) == 2
        for score in ("region WT", "region TC", "region ET"):
            assert 0.0 <= res[variant][score] <= 1.0


def test_dataset_memory_smoke_measures_both_paths(tmp_path):
    from benchmarks import dataset_memory

    out = tmp_path / "dm.json"
    assert dataset_memory.main(["--smoke", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    for mode in ("memmap", "memory"):
        assert data[mode]["peak_rss_bytes"] > 0
    assert data["step_seconds_1_case"] > 0
    assert data["step_seconds_3_cases"] > 0


def _require_stardist() -> None:
    """Skip unless StarDist's example images are installed (they come in its wheel)."""
    import importlib.metadata

    try:
        importlib.metadata.distribution("stardist")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("StarDist's example images: pip install --no-deps stardist")


@pytest.mark.slow
def test_precision_smoke(tmp_path):
    _require_stardist()
    from benchmarks import precision

    out = tmp_path / "precision.json"
    assert precision.main(["--smoke", "--out", str(out)]) == 0
    data = _load(out)
    assert {r["precision"] for r in data["rows"]} == {"float32", "bfloat16"}
    for row in data["rows"]:
        assert row["network_dims"] == 2  # a one-slice volume trains as 2D
        assert 0.0 <= row["foreground_dice"] <= 1.0
        assert row["final_loss_finite"]


def test_time_to_quality_summary_reads_marks_and_targets():
    from benchmarks import time_to_quality as ttq

    times = ttq.snapshot_times(300)
    assert times[:3] == [2.5, 5.0, 7.5]
    assert times[-1] == 300.0
    assert 27.5 in times
    assert 62.5 not in times
    assert times.index(65.0) == times.index(60.0) + 1
    assert {30.0, 60.0, 120.0, 300.0} <= set(times)
    assert ttq.snapshot_times(3) == [2.5, 3.0]
    assert ttq.snapshot_times(4.2)[-1] == 4.2
    snaps = [
        {"due": 30.0, "seconds": 30.4, "dice": 0.80},
        {"due": 60.0, "seconds": 59.2, "dice": 0.88},
        {"due": 120.0, "seconds": 121.0, "dice": 0.92},
    ]
    s = ttq.summarise(snaps, [30.0, 60.0, 120.0, 300.0])
    # a snapshot counts from the time it was taken: at 30 s there was none yet
    assert s["dice_at"] == {"30": None, "60": 0.88, "120": 0.88, "300": 0.92}
    assert s["seconds_to"] == {"0.85": 59.2, "0.9": 121.0}
    assert s["best_dice"] == 0.92
    truth = np.zeros((4, 5, 6), dtype=np.int32)
    truth[1:3, 1:4, 1:5] = 1
    assert ttq.mean_dice(truth, truth, [1]) == 1.0
    assert ttq.mean_dice(np.zeros_like(truth), truth, [1]) == 0.0


def test_gpu_sh_is_valid_bash_and_names_existing_modules():
    import re
    import subprocess
    from pathlib import Path

    script = Path(_common.__file__).with_name("gpu.sh")
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    modules = set(re.findall(r"-m (benchmarks\.\w+)", script.read_text()))
    assert modules == {
        "benchmarks.inference",
        "benchmarks.gpu_training",
        "benchmarks.time_to_quality",
    }
    for m in modules:
        assert (script.parent / f"{m.split('.')[1]}.py").exists()


@pytest.mark.slow
def test_gpu_sh_smoke_on_cpu(tmp_path):
    """The whole script in smoke mode on the CPU: three JSON files with sane values."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(_common.__file__).resolve().parents[1]
    env = dict(
        os.environ,
        GPU_SH_SMOKE="1",
        GPU_SH_DEVICE="cpu",
        GPU_SH_OUT=str(tmp_path),
        PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join([str(repo / "src"), str(repo)]),
    )
    proc = subprocess.run(
        ["bash", str(repo / "benchmarks" / "gpu.sh")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    inf = _load(tmp_path / "gpu_inference_smoke.json")
    assert {r["variant"] for r in inf["results"]} >= {"monai_sw1", "monai_sw2", "ours_sw"}
    tr = json.loads((tmp_path / "gpu_training_smoke.json").read_text())
    assert [r["variant"] for r in tr["results"]] == ["reference", "ours"]
    assert all(r["steps_per_second"] > 0 and r["peak_mib"] > 0 for r in tr["results"])
    ttq = _load(tmp_path / "gpu_time_to_quality_smoke.json")
    assert {r["tool"] for r in ttq["results"]} == {"ours", "monai"}
    for r in ttq["results"]:
        assert all(0.0 <= s["dice"] <= 1.0 for s in r["snapshots"])
    assert (tmp_path / "gpu_env_smoke.txt").read_text().count("done in") == 3


def test_settings_sweep_smoke(tmp_path):
    from benchmarks import settings_sweep

    out = tmp_path / "sweep.json"
    variants = ["{}", '{"train": {"learning_rate": 0.02}}']
    argv = ["--smoke", "--datasets", "sample", "--seeds", "0,1", "--target", "0.0"]
    assert settings_sweep.main([*argv, "--variants", *variants, "--out", str(out)]) == 0
    data = _load(out)
    runs = data["results"]
    assert [(r["variant"], r["seed"]) for r in runs] == [
        ({}, 0),
        ({}, 1),
        ({"train": {"learning_rate": 0.02}}, 0),
        ({"train": {"learning_rate": 0.02}}, 1),
    ]
    for r in runs:
        steps = [c["step"] for c in r["curve"]]
        assert steps == [10, 20]  # a snapshot every 10 steps of the 20-step smoke schedule
        assert all(0.0 <= c["dice"] <= 1.0 for c in r["curve"])
        assert r["steps_to_target"] == 10  # target 0: the first snapshot reaches it
        assert r["dice_end"] == r["curve"][-1]["dice"]
    rows = settings_sweep.summary_rows(data)
    assert len(rows) == 2
    assert rows[0]["seeds"] == "0, 1"


@pytest.mark.slow
def test_settings_sweep_nuclei_smoke(tmp_path):
    _require_stardist()
    from benchmarks import settings_sweep

    out = tmp_path / "sweep.json"
    argv = ["--smoke", "--datasets", "nuclei2d", "--seeds", "0", "--variants", "{}"]
    assert settings_sweep.main([*argv, "--out", str(out)]) == 0
    (run,) = _load(out)["results"]
    assert run["dataset"] == "nuclei2d"
    assert run["n_true"] > 0  # the test half's true objects were counted
    assert 0.0 <= run["f1"] <= 1.0
    assert 0.0 <= run["foreground_dice"] <= 1.0
