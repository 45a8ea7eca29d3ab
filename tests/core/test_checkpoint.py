"""Model files: exact round trip, atomic writes, and refusal of anything but our format."""

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from napari_unetseg.core.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from napari_unetseg.core.config import Config
from napari_unetseg.core.data import Normalizer
from napari_unetseg.core.model import UNet


def _trained_checkpoint(task="semantic") -> Checkpoint:
    torch.manual_seed(0)
    cfg = Config()
    cfg.model.base_width = 4
    cfg.model.depth = 3
    cfg.model.in_channels = 2
    cfg.model.num_classes = 3 if task == "instances" else 4
    cfg.model.pool = [[1, 2, 2], [2, 2, 2]]
    cfg.data.patch_size = (8, 16, 16)
    cfg.infer.window_batch = 2
    cfg.class_names = ["object"] if task == "instances" else ["liver", "kidney", "spleen"]
    cfg.train.task = task
    model = UNet(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    for _ in range(2):
        loss = model(torch.randn(1, 2, 8, 16, 16)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    norm = Normalizer("zscore", [0.1, -3.25], [1.5, 2.0])
    return Checkpoint(
        config=cfg,
        state_dict=model.state_dict(),
        normalizer=norm,
        spacing=(2.5, 0.7, 0.7),
        class_names=list(cfg.class_names),
        task=task,
        iterations=2,
        optimizer_state=opt.state_dict(),
        history=[{"iteration": 2, "mean_dice": 0.25, "dice": {"liver": 0.5}}],
    )


def test_round_trip_is_exact(tmp_path):
    ckpt = _trained_checkpoint()
    path = save_checkpoint(ckpt, tmp_path / "m.safetensors")
    assert path == tmp_path / "m.safetensors"
    back = load_checkpoint(path)
    assert back.config == ckpt.config
    assert back.config.model.pool == [[1, 2, 2], [2, 2, 2]]
    assert back.config.data.patch_size == (8, 16, 16)
    assert set(back.state_dict) == set(ckpt.state_dict)
    for name, value in ckpt.state_dict.items():
        assert back.state_dict[name].dtype == value.dtype
        assert torch.equal(back.state_dict[name], value), name
    assert back.normalizer == ckpt.normalizer
    assert back.spacing == (2.5, 0.7, 0.7)
    assert back.class_names == ["liver", "kidney", "spleen"]
    assert back.task == "semantic"
    assert back.iterations == 2
    assert back.history == ckpt.history
    assert back.version == ckpt.version
    assert back.num_outputs == 4


def test_optimizer_state_round_trip_continues_identically(tmp_path):
    ckpt = _trained_checkpoint()
    back = load_checkpoint(save_checkpoint(ckpt, tmp_path / "m.safetensors"))
    orig, loaded = ckpt.optimizer_state, back.optimizer_state
    assert orig["param_groups"][0]["lr"] == loaded["param_groups"][0]["lr"]
    assert set(orig["state"]) == set(loaded["state"])
    for pid, entry in orig["state"].items():
        for key, value in entry.items():
            assert torch.equal(loaded["state"][pid][key], value)

    # one more step from the original and from the loaded state gives the same weights
    def step(c):
        torch.manual_seed(5)
        model = c.build_model().train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        opt.load_state_dict(c.optimizer_state)
        loss = model(torch.randn(1, 2, 8, 16, 16)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return model.state_dict()

    a, b = step(ckpt), step(back)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_build_model_gives_the_same_predictions(tmp_path):
    ckpt = _trained_checkpoint("instances")
    back = load_checkpoint(save_checkpoint(ckpt, tmp_path / "i.safetensors"))
    assert back.num_outputs == 3
    x = torch.randn(1, 2, 9, 17, 15)
    m1, m2 = ckpt.build_model(), back.build_model()
    assert not m2.training
    assert m2.channels_last  # a 3D network on the CPU runs channels-last
    with torch.no_grad():
        assert torch.equal(m1(x), m2(x))


def test_checkpoint_without_optimizer_or_normalizer(tmp_path):
    ckpt = _trained_checkpoint()
    ckpt.optimizer_state = None
    ckpt.normalizer = None
    ckpt.spacing = None
    back = load_checkpoint(save_checkpoint(ckpt, tmp_path / "n.safetensors"))
    assert back.optimizer_state is None
    assert back.normalizer is None
    assert back.spacing is None


def test_torch_save_file_is_refused_without_unpickling(tmp_path):
    ckpt = _trained_checkpoint()
    path = tmp_path / "model.pt"
    torch.save({"state_dict": ckpt.state_dict}, path)
    with pytest.raises(CheckpointError, match=r"safetensors"):
        load_checkpoint(path)
    # an old-style (non-zip) torch pickle under a misleading name
    legacy = tmp_path / "legacy.safetensors"
    torch.save(ckpt.state_dict, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"pickle"):
        load_checkpoint(legacy)


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_plain_pickle_with_code_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(_Boom()))
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(path)
    assert calls == []


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, os.urandom(64), b"hello world" * 50])
def test_corrupt_or_random_file_is_refused(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(path)


def test_truncated_file_is_refused(tmp_path):
    path = save_checkpoint(_trained_checkpoint(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(path)


def test_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, path, metadata={"producer": "someone else"})
    with pytest.raises(CheckpointError, match="not a napari-unetseg model"):
        load_checkpoint(path)


def test_damaged_description_is_reported(tmp_path):
    path = tmp_path / "d.safetensors"
    save_file(
        {"model.w": torch.zeros(3)},
        path,
        metadata={"format": "napari-unetseg", "format_version": "1", "description": "{"},
    )
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)
    desc = json.dumps({"config": {"model": {"depth": 0}}})
    save_file(
        {"model.w": torch.zeros(3)},
        path,
        metadata={"format": "napari-unetseg", "format_version": "1", "description": desc},
    )
    with pytest.raises(CheckpointError, match="depth"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    ckpt = _trained_checkpoint()
    ckpt.state_dict = {k: v for k, v in list(ckpt.state_dict.items())[:-1]}
    back = load_checkpoint(save_checkpoint(ckpt, tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="do not fit"):
        back.build_model()


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_save_is_atomic_and_replaces(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "m.safetensors"
    save_checkpoint(_trained_checkpoint(), path)
    first = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    ckpt = _trained_checkpoint()
    ckpt.iterations = 99
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(ckpt, path)
    assert path.read_bytes() == first
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]
    monkeypatch.undo()
    save_checkpoint(ckpt, path)
    assert load_checkpoint(path).iterations == 99


def test_settings_and_channel_names_are_stored_apart_from_the_plan(tmp_path):
    import numpy as np

    from napari_unetseg.core.cases import Case
    from napari_unetseg.core.checkpoint import load_checkpoint, save_checkpoint
    from napari_unetseg.core.config import Config
    from napari_unetseg.core.sample import make_sample
    from napari_unetseg.core.training import train

    image, semantic, _ = make_sample(shape=(10, 24, 20), seed=1)
    cfg = Config.from_dict({"train": {"iterations": 1, "batch_size": 1}})
    cfg.model.base_width = None  # automatic
    case = Case(
        "c", np.stack([image, image]), semantic.astype(np.int64) + 1, channel_names=["T1", "FLAIR"]
    )
    ckpt = train(cases=[case], config=cfg)
    path = save_checkpoint(ckpt, tmp_path / "m.safetensors")
    again = load_checkpoint(path)
    assert again.channel_names == ["T1", "FLAIR"]
    assert again.settings is not None
    assert again.settings.model.base_width is None  # the user's "automatic"
    assert isinstance(again.config.model.base_width, int)  # the resolved plan
    assert again.config.data.patch_size is not None
