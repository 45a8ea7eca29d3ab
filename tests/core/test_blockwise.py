"""Blockwise prediction: plan, agreement with a whole-volume run, stitched instances,
bounded memory, OME-Zarr output, cancellation."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
import torch

zarr = pytest.importorskip("zarr")

from napari_unetseg.core.annotations import sparsify  # noqa: E402
from napari_unetseg.core.blocks import match_zone, plan_blocks, stitch  # noqa: E402
from napari_unetseg.core.blockwise import predict_blockwise  # noqa: E402
from napari_unetseg.core.checkpoint import Checkpoint  # noqa: E402
from napari_unetseg.core.config import Config  # noqa: E402
from napari_unetseg.core.events import CancelToken, Done, Progress, run_to_completion  # noqa: E402
from napari_unetseg.core.inference import (  # noqa: E402
    predict_volume,
    prediction_layout,
    prediction_window,
    window_starts,
)
from napari_unetseg.core.io import OutputExistsError, meta_from_array, read_labels  # noqa: E402
from napari_unetseg.core.metrics import instance_metrics  # noqa: E402
from napari_unetseg.core.postprocess import instance_labels  # noqa: E402
from napari_unetseg.core.sample import make_sample  # noqa: E402
from napari_unetseg.core.training import train  # noqa: E402
from unetseg_testing import tiny_settings  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny windows: threads only contend on a shared machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    image, semantic, _ = make_sample(shape=(17, 33, 35), seed=1)
    cfg = Config.from_dict(tiny_settings(train={"iterations": 3})).validate()
    return train(image[None], sparsify(semantic, 0.3, seed=0), cfg)


class _LogModel(torch.nn.Module):
    """Logits = log(input): the network's softmax is the input probabilities."""

    def forward(self, x):
        return torch.log(x.clamp_min(1e-4))


class _Oracle(Checkpoint):
    def build_model(self, device="cpu"):
        return _LogModel().to(device).eval()


def _oracle() -> _Oracle:
    cfg = Config()
    cfg.model.in_channels, cfg.model.num_classes = 3, 3
    cfg.data.patch_size = (8, 16, 16)
    cfg.infer.device = "cpu"
    return _Oracle(config=cfg, state_dict={}, normalizer=None, task="instances")


def _probabilities(instances: np.ndarray) -> np.ndarray:
    """(3, Z, Y, X) background / interior / boundary probabilities of known objects."""
    from skimage.segmentation import find_boundaries

    edge = find_boundaries(instances, mode="inner") & (instances > 0)
    p = np.stack([instances == 0, (instances > 0) & ~edge, edge]).astype(np.float32)
    return 0.9 * p + 0.1 / 3


# ------------------------------------------------------------------------ plan


def test_plan_tiles_the_volume_with_aligned_halos():
    shape, window = (30, 50, 47), (8, 16, 16)
    plan = plan_blocks(shape, window, 0.25, block=(10, 20, 20))
    assert plan.block == (12, 24, 24)  # rounded up to multiples of the steps 6, 12, 12
    cover = np.zeros(shape, np.int32)
    for b in plan.blocks:
        cover[b.core] += 1
        assert all(r.start <= c.start and c.stop <= r.stop for c, r in zip(b.core, b.region))
    assert (cover == 1).all()  # cores tile the volume exactly once
    assert all(h >= w / 2 for h, w in zip(plan.halo_before, window))
    assert all(h >= w / 2 for h, w in zip(plan.halo_after, window))
    assert all(h % s == 0 for h, s in zip(plan.halo_before, (6, 12, 12)))
    assert plan_blocks(shape, window, 0.25).grid == (1, 1, 1)  # default blocks: 128


@pytest.mark.parametrize("steps", [None, (6.0, 12.0, 20.0)])
def test_each_region_places_the_whole_volume_windows_that_reach_its_core(steps):
    # with steps (a layout grown with a fixed margin, not the overlap's 6, 12, 18) as well
    shape, window, overlap = (30, 50, 131), (8, 16, 24), 0.25
    plan = plan_blocks(shape, window, overlap, steps=steps, block=(10, 20, 40))
    per_axis = steps or (None,) * 3
    for axis, (size, w, t) in enumerate(zip(shape, window, per_axis)):
        whole = window_starts(size, w, overlap, t)
        for b in plan.blocks:
            core, region = b.core[axis], b.region[axis]
            placed = [
                region.start + a for a in window_starts(region.stop - region.start, w, overlap, t)
            ]
            reaching = [a for a in whole if a < core.stop and a + w > core.start]
            assert set(reaching) <= set(placed) <= set(whole), (axis, core, region)


def test_plan_refuses_bad_sizes():
    with pytest.raises(ValueError, match="one non-negative size per spatial axis"):
        plan_blocks((20, 20, 20), (8, 8, 8), 0.5, block=(8, 8))
    with pytest.raises(ValueError, match="cannot stitch instances"):
        plan_blocks((20, 20, 20), (8, 8, 8), 0.5, block=8, halo=0, instances=True)


# ------------------------------------------------------------------------ semantic


@pytest.mark.parametrize("shape", [(24, 50, 47), (24, 50, 40)])
def test_blockwise_labels_equal_a_whole_volume_prediction(model, shape):
    image, _, _ = make_sample(shape=shape, seed=2)
    whole = predict_volume(model, image[None], keep_probabilities=False).labels
    out = np.zeros(image.shape, np.uint8)
    events = list(predict_blockwise(model, image[None], out, block=(8, 16, 16)))
    done = events[-1]
    assert isinstance(done, Done)
    overlap = model.config.infer.overlap
    divisor = model.build_model("cpu").divisor
    window, steps = prediction_layout(model, image.shape, overlap, divisor)
    # (24, 50, 40): the layout grows x by one step and keeps the margin (steps not
    # from the overlap), which the blocks must follow to agree with the whole volume
    grown = steps != tuple(w * (1 - overlap) for w in window)
    assert grown == (shape == (24, 50, 40))
    n = len(plan_blocks(image.shape, window, overlap, steps=steps, block=(8, 16, 16)).blocks)
    assert n > 1
    assert done.result.blocks == n
    assert [e.done for e in events if isinstance(e, Progress)] == list(range(n + 1))
    agreement = float((out == whole).mean())
    assert agreement >= 0.999, agreement
    assert len(np.unique(whole)) > 1  # the comparison is not between two empty masks


def test_zarr_in_ome_zarr_out_atomic_with_scale(model, tmp_path):
    image, _, _ = make_sample(shape=(16, 40, 36), seed=3)
    src = zarr.create_array(
        str(tmp_path / "in.zarr"), shape=(1, *image.shape), chunks=(1, 8, 16, 16), dtype="f4"
    )
    src[:] = image[None]
    meta = meta_from_array(image.shape, (2.0, 1.0, 1.0))
    target = tmp_path / "labels.ome.zarr"
    done = run_to_completion(predict_blockwise(model, src, target, block=(8, 16, 16), meta=meta))
    assert done.result.labels == target
    assert sorted(os.listdir(tmp_path)) == ["in.zarr", "labels.ome.zarr"]  # no temporary
    labels, back = read_labels(target)
    assert back.spacing == (2.0, 1.0, 1.0)
    whole = predict_volume(model, image[None], keep_probabilities=False).labels
    assert float((np.asarray(labels) == whole).mean()) >= 0.999
    with pytest.raises(OutputExistsError):
        run_to_completion(predict_blockwise(model, src, target))


def test_cancel_writes_nothing(model, tmp_path):
    image, _, _ = make_sample(shape=(16, 40, 36), seed=3)
    token = CancelToken()
    events = []
    for ev in predict_blockwise(
        model, image[None], tmp_path / "x.ome.zarr", block=8, cancel=token
    ):
        events.append(ev)
        if isinstance(ev, Progress) and ev.done == 1:
            token.cancel()
    assert isinstance(events[-1], Done)
    assert events[-1].cancelled
    assert os.listdir(tmp_path) == []


def test_wrong_channels_are_refused_before_predicting(model):
    with pytest.raises(ValueError, match="trained on 1 channel"):
        next(predict_blockwise(model, np.zeros((2, 8, 16, 16), np.float32), np.zeros((8, 16, 16))))


def test_peak_memory_stays_flat_as_the_volume_grows(model, tmp_path):
    peaks = []
    for depth in (16, 64):
        src = zarr.create_array(
            str(tmp_path / f"in{depth}.zarr"),
            shape=(1, depth, 48, 48),
            chunks=(1, 8, 48, 48),
            dtype="f4",
        )
        src[:] = np.random.default_rng(0).normal(size=src.shape).astype(np.float32)
        out = zarr.create_array(
            str(tmp_path / f"out{depth}.zarr"),
            shape=(depth, 48, 48),
            chunks=(12, 48, 48),
            dtype="u1",
        )
        tracemalloc.start()
        run_to_completion(predict_blockwise(model, src, out, block=(12, 48, 48)))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks  # 4x the voxels, about the same peak


# ------------------------------------------------------------------------ instances


@pytest.mark.parametrize("seed", [11])
def test_stitched_instances_match_a_whole_volume_watershed(seed):
    _, _, truth = make_sample(shape=(40, 70, 66), seed=seed)
    probs = _probabilities(truth)
    ckpt = _oracle()
    whole = instance_labels(probs, interior_threshold=ckpt.config.infer.interior_threshold)
    labels = np.zeros(truth.shape, np.uint8)
    ids = np.zeros(truth.shape, np.int32)
    done = run_to_completion(
        predict_blockwise(ckpt, probs, labels, instances=ids, block=(12, 24, 24))
    )
    overlap = ckpt.config.infer.overlap
    planned = plan_blocks(
        truth.shape,
        prediction_window(ckpt, truth.shape, overlap),  # the oracle network has no divisor
        overlap,
        block=(12, 24, 24),
        instances=True,
    )
    assert len(planned.blocks) > 8
    assert done.result.blocks == len(planned.blocks)
    scores = instance_metrics(ids, whole)
    assert scores["f1"] >= 0.99, scores
    assert scores["n_true"] >= 10
    # unique consecutive ids, foreground labels where there are objects
    assert set(np.unique(ids)) == set(range(done.result.objects + 1))
    assert ((ids > 0) <= (labels > 0)).all()


def test_min_size_counts_objects_over_the_whole_volume():
    truth = np.zeros((24, 48, 48), np.int32)
    truth[4:20, 8:40, 20:28] = 1  # 16 x 32 x 8 = 4096 voxels across block borders
    truth[2:6, 2:6, 2:6] = 2  # 64 voxels
    ckpt = _oracle()
    ckpt.config.infer.min_size = 100
    ckpt.config.infer.interior_threshold = 0.5
    ids = np.zeros(truth.shape, np.int32)
    done = run_to_completion(
        predict_blockwise(
            ckpt,
            _probabilities(truth),
            np.zeros(truth.shape, np.uint8),
            instances=ids,
            block=(12, 24, 24),
        )
    )
    assert done.result.objects == 1
    assert (ids[truth == 1] == 1).mean() > 0.99
    assert (ids[truth == 2] == 0).all()


def test_match_zone_pairs_shared_seeds_and_lonely_pieces():
    theirs = np.array([[-1, -1, 1, 0, 2, 2, 2, 2]])
    mine = np.array([[-5, -5, 5, 0, 7, 7, 7, 0]])
    seeded, lonely = match_zone(theirs, mine, lonely_mine=np.array([7]))
    assert seeded.tolist() == [[1, 5]]
    assert lonely.tolist() == [[2, 7, 3]]
    luts, n = stitch(
        [2, 7],
        [np.array([0, 3, 4]), np.zeros(8, int) + 1],
        np.array([[0, 1, 1, 5], [0, 2, 1, 7]]),
        0,
    )
    assert n == 7  # 2 + 7 local objects, two pairs joined
    assert luts[0][1] == luts[1][5]
    assert luts[0][2] == luts[1][7]


def test_an_output_reopened_by_a_worker_stores_all_background_chunks(tmp_path):
    """A dask worker reopens the output by path; a block predicted as all background must
    still store its chunks (the array's write_empty_chunks does not travel with the store),
    or reading the result back fails on the missing chunks."""
    from napari_unetseg.core.block_phases import _open
    from napari_unetseg.core.io.zarr_write import create_labels_zarr

    path = tmp_path / "labels.ome.zarr"
    create_labels_zarr(path, (8, 8, 8), chunks=(4, 4, 4))
    worker_view = _open(path / "0")
    for z in (0, 4):
        for y in (0, 4):
            for x in (0, 4):
                block = np.full((4, 4, 4), 0 if z == y == x == 0 else 1, np.uint8)
                worker_view[z : z + 4, y : y + 4, x : x + 4] = block  # the first one empty
    chunk_files = [
        p for p in (path / "0").rglob("*") if p.is_file() and not p.name.startswith(".")
    ]
    assert len(chunk_files) == 8
    labels, _ = read_labels(path)  # strict about missing chunks
    region = np.asarray(labels)
    assert region[:4, :4, :4].max() == 0
    assert region[4:, 4:, 4:].min() == 1
