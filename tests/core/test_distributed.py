"""Prediction on dask: a local cluster of 2 workers agrees with one process; a scheduler
that does not answer is a quick one-line error; folders; the command line."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("distributed")

from napari_unetseg.cli import main  # noqa: E402
from napari_unetseg.core import distributed as dist  # noqa: E402
from napari_unetseg.core.annotations import sparsify  # noqa: E402
from napari_unetseg.core.blocks import plan_blocks  # noqa: E402
from napari_unetseg.core.blockwise import predict_blockwise  # noqa: E402
from napari_unetseg.core.checkpoint import save_checkpoint  # noqa: E402
from napari_unetseg.core.config import Config  # noqa: E402
from napari_unetseg.core.events import run_to_completion  # noqa: E402
from napari_unetseg.core.inference import prediction_window  # noqa: E402
from napari_unetseg.core.io import meta_from_array, read_labels, write_image  # noqa: E402
from napari_unetseg.core.sample import make_sample  # noqa: E402
from napari_unetseg.core.training import train  # noqa: E402
from unetseg_testing import tiny_settings  # noqa: E402


def _model(path, task="semantic"):
    image, semantic, instances = make_sample(shape=(17, 33, 35), seed=1)
    labels = semantic if task == "semantic" else instances
    cfg = Config.from_dict(tiny_settings(train={"iterations": 3, "task": task})).validate()
    save_checkpoint(train(image[None], sparsify(labels, 0.3, seed=0), cfg), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {t: _model(folder / f"{t}.safetensors", t) for t in ("semantic", "instances")}


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    image, _, _ = make_sample(shape=(24, 50, 47), seed=2)
    path = tmp_path_factory.mktemp("in") / "scan.zarr"
    arr = zarr.create_array(str(path), shape=(1, *image.shape), chunks=(1, 8, 16, 16), dtype="f4")
    arr[:] = image[None]
    return path


@pytest.fixture(scope="module")
def client():
    c = dist.connect(workers=2)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("task", ["semantic", "instances"])
def test_two_workers_agree_with_one_process(client, models, volume, tmp_path, task):
    from napari_unetseg.core.checkpoint import load_checkpoint

    ckpt = load_checkpoint(models[task])
    labels = np.zeros((24, 50, 47), np.uint8)
    ids = np.zeros((24, 50, 47), np.int32) if task == "instances" else None
    src = zarr.open_array(str(volume), mode="r")
    run_to_completion(predict_blockwise(ckpt, src, labels, instances=ids, block=(8, 16, 16)))
    out, inst = tmp_path / "labels.ome.zarr", tmp_path / "ids.ome.zarr"
    done = run_to_completion(
        dist.predict_blockwise_distributed(
            models[task],
            volume,
            out,
            client=client,
            block=(8, 16, 16),
            instances=inst if task == "instances" else None,
        )
    )
    overlap = ckpt.config.infer.overlap
    window = prediction_window(ckpt, labels.shape, overlap, ckpt.build_model("cpu").divisor)
    planned = plan_blocks(labels.shape, window, overlap, block=(8, 16, 16))
    assert len(planned.blocks) > 2
    assert done.result.blocks == len(planned.blocks)
    np.testing.assert_array_equal(np.asarray(read_labels(out)[0]), labels)
    if task == "instances":
        np.testing.assert_array_equal(np.asarray(read_labels(inst)[0]), ids)
    loads = client.run(lambda: list(dist.LOADS))
    assert len(loads) == 2
    assert all(len(v) == len(set(v)) for v in loads.values())  # each model once per worker


def test_unreachable_scheduler_fails_fast_in_one_line():
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="no dask scheduler answers at") as err:
        dist.connect(address, timeout=2)
    assert time.perf_counter() - t0 < 15
    assert "\n" not in str(err.value)


def test_folder_spread_over_workers(client, models, tmp_path):
    folder = tmp_path / "scans"
    for k in range(2):
        image, _, _ = make_sample(shape=(12, 20, 22), seed=10 + k)
        write_image(image, meta_from_array(image.shape), folder / f"case{k}_0000.nii.gz")
    done = run_to_completion(
        dist.predict_folder_distributed(models["semantic"], folder, tmp_path / "out", client)
    )
    assert sorted(done.result.done) == ["case0", "case1"]
    assert not done.result.failed
    assert read_labels(tmp_path / "out" / "case1.nii.gz")[0].shape == (12, 20, 22)


def test_cli_zarr_goes_blockwise_and_bad_scheduler_is_an_error(
    models, volume, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "labels.ome.zarr"
    code = main(
        [
            "predict",
            "--model",
            str(models["semantic"]),
            "--image",
            str(volume),
            "--out",
            str(out),
            "--block",
            "8",
            "16",
            "16",
            "--quiet",
        ]
    )
    assert code == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert read_labels(out)[0].shape == (24, 50, 47)
    monkeypatch.setattr(dist, "CONNECT_TIMEOUT", 2.0)
    code = main(
        [
            "predict",
            "--model",
            str(models["semantic"]),
            "--image",
            str(volume),
            "--out",
            str(tmp_path / "x.ome.zarr"),
            "--quiet",
            "--scheduler",
            f"tcp://127.0.0.1:{_free_port()}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "no dask scheduler answers at" in err
