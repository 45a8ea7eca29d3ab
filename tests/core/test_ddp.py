"""Data-parallel training: rank helpers in one process, two gloo ranks on the CPU, and the
``torchrun`` command line (model saved once by rank 0, a world larger than the batch
refused on every rank)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from napari_unetseg.core import ddp
from unetseg_testing import tiny_settings

SHAPE = (12, 24, 20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_answers_for_a_single_rank(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not ddp.launched()
    assert not ddp.active()
    assert (ddp.rank(), ddp.world_size(), ddp.is_main()) == (0, 1, True)
    assert ddp.local_batch(3) == 3
    assert ddp.rank_seed(7) == 7
    ddp.check_batch(1)
    ddp.check_same((1, 2), "anything")
    assert ddp.sum_stats([1.5, 2]) == [1.5, 2.0]
    model = torch.nn.Linear(2, 2)
    assert ddp.wrap(model, torch.device("cpu")) is model
    assert ddp.threads_for_rank(None) is None
    with ddp.session() as distributed:
        assert distributed is False


def test_rank_helpers_share_the_batch_and_seed_each_rank(monkeypatch):
    monkeypatch.setattr(ddp, "active", lambda: True)
    monkeypatch.setattr(ddp, "world_size", lambda: 3)
    seeds, batches = [], []
    for r in range(3):
        monkeypatch.setattr(ddp, "rank", lambda r=r: r)
        seeds.append(ddp.rank_seed(11))
        batches.append(ddp.local_batch(7))
    assert seeds[0] == 11
    assert len(set(seeds)) == 3
    assert batches == [3, 2, 2]
    assert sum(batches) == 7
    with pytest.raises(ValueError, match=r"3 training processes but train\.batch_size is 2"):
        ddp.check_batch(2)


def _rank_main(r: int, world: int, port: int, tmp: str) -> None:
    """One rank: train a tiny model through the Trainer in a gloo group, record its
    final weights; rank 0 saves the model as the command line does."""
    os.environ.update(
        RANK=str(r),
        LOCAL_RANK=str(r),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    from napari_unetseg.core.annotations import sparsify
    from napari_unetseg.core.config import Config
    from napari_unetseg.core.events import Step, Validation
    from napari_unetseg.core.jobs import save_model
    from napari_unetseg.core.sample import make_sample
    from napari_unetseg.core.training import Trainer

    image, semantic, _ = make_sample(shape=SHAPE, seed=1)
    cfg = Config.from_dict(
        tiny_settings(
            train={"iterations": 3, "batch_size": 2},
            data={"patch_size": [8, 16, 16], "validation_fraction": 0.3},
        )
    )
    with ddp.session() as distributed:
        trainer = Trainer(image[None], sparsify(semantic, 0.3, seed=0), cfg)
        events = list(trainer.run())
        if ddp.is_main():
            save_model(events[-1].result, Path(tmp) / "model.safetensors", overwrite=False)
        first = trainer.sampler.sample(1)[0]
        record = {
            "distributed": distributed,
            "rank": ddp.rank(),
            "steps": sum(isinstance(e, Step) for e in events),
            "validations": sum(isinstance(e, Validation) for e in events),
            "weights": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "patch": torch.from_numpy(np.ascontiguousarray(first)),
        }
        torch.save(record, Path(tmp) / f"rank{r}.pt")
        trainer.close()
        ddp.barrier()


@pytest.mark.slow
def test_two_gloo_ranks_end_with_the_same_weights(tmp_path):
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    records = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["distributed"] for r in records] == [True, True]
    assert [r["rank"] for r in records] == [0, 1]
    assert [r["steps"] for r in records] == [3, 3]
    assert records[0]["validations"] >= 1
    assert records[1]["validations"] == 0
    w0, w1 = records[0]["weights"], records[1]["weights"]
    assert w0.keys() == w1.keys()
    assert not any(k.startswith("module.") for k in w0)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    # each rank draws its own patches
    assert not torch.equal(records[0]["patch"], records[1]["patch"])
    # the model was saved once, with the plain module's keys, and it predicts
    from napari_unetseg.core.checkpoint import load_checkpoint
    from napari_unetseg.core.inference import predict_volume
    from napari_unetseg.core.sample import make_sample

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.safetensors",
        "rank0.pt",
        "rank1.pt",
    ]
    ckpt = load_checkpoint(tmp_path / "model.safetensors")
    assert ckpt.iterations == 3
    assert all(torch.equal(ckpt.state_dict[k], w0[k]) for k in w0)
    labels = predict_volume(ckpt, make_sample(shape=SHAPE, seed=2)[0][None]).labels
    assert labels.shape == SHAPE


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "napari_unetseg.cli",
        *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_torchrun_trains_saves_once_and_refuses_a_world_larger_than_the_batch(tmp_path):
    from napari_unetseg.core.annotations import sparsify
    from napari_unetseg.core.checkpoint import load_checkpoint
    from napari_unetseg.core.inference import predict_volume
    from napari_unetseg.core.io import VolumeMeta, write_image, write_labels
    from napari_unetseg.core.sample import make_sample

    image, semantic, _ = make_sample(shape=SHAPE, seed=1)
    meta = VolumeMeta(spacing=(1.0, 1.0, 1.0))
    write_image(image.astype(np.float32), meta, tmp_path / "image.nii.gz")
    write_labels(sparsify(semantic, 0.3, seed=0), meta, tmp_path / "labels.nii.gz")
    (tmp_path / "tiny.json").write_text(json.dumps(tiny_settings(train={"iterations": 2})))
    common = ["train", "--image", "image.nii.gz", "--labels", "labels.nii.gz"]
    common += ["--config", "tiny.json", "--quiet"]

    bad = _torchrun([*common, "--out", "bad.safetensors", "--batch-size", "1"], tmp_path)
    assert bad.returncode != 0
    text = bad.stdout + bad.stderr
    # one message from each rank (the two ranks write at once: their lines may interleave)
    assert text.count("2 training processes but train.batch_size is 1") == 2, text
    assert text.count("set --batch-size to at least 2") == 2
    assert not (tmp_path / "bad.safetensors").exists()

    ok = _torchrun([*common, "--out", "model.safetensors", "--batch-size", "2"], tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("saved model to") == 1
    ckpt = load_checkpoint(tmp_path / "model.safetensors")
    assert ckpt.iterations == 2
    assert predict_volume(ckpt, image[None]).labels.shape == SHAPE
