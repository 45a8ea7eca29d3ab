"""Training on several cases: checkpoints, validation split, normalisation, resampling,
the memory-mapped cache and 2D networks on volumes."""

import os

import numpy as np
import pytest

from napari_unetseg.core.annotations import IGNORE_INDEX, sparsify
from napari_unetseg.core.cases import Case
from napari_unetseg.core.checkpoint import load_checkpoint, save_checkpoint
from napari_unetseg.core.config import Config, DataConfig
from napari_unetseg.core.data import Normalizer
from napari_unetseg.core.events import Done, Info, Preview, Step, Validation
from napari_unetseg.core.sample import make_sample
from napari_unetseg.core.training import Trainer, train
from napari_unetseg.core.training_data import choose_validation_cases, fit_dataset_normalizer

SHAPE = (16, 32, 32)


def tiny(iterations=10, **data) -> Config:
    cfg = Config()
    cfg.model.base_width = 4
    cfg.model.depth = 2
    cfg.data.patch_size = (8, 16, 16)
    cfg.train.iterations = iterations
    cfg.train.batch_size = 1
    cfg.train.validate_every = 5
    cfg.train.device = "cpu"
    cfg.train.threads = 1
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


@pytest.fixture(scope="module")
def volumes():
    out = []
    for seed in range(4):
        image, semantic, _ = make_sample(shape=SHAPE, seed=seed)
        out.append((image, sparsify(semantic, fraction=0.3, seed=seed)))
    return out


def cases_of(volumes, n, scale=None, spacing=None):
    out = []
    for i, (image, ann) in enumerate(volumes[:n]):
        img = image[None] * (scale[i] if scale else 1.0)
        sp = spacing[i] if spacing else None
        out.append(Case(name=f"c{i}", image=img.astype(np.float32), annotation=ann, spacing=sp))
    return out


def test_three_cases_train_with_one_case_held_out(volumes):
    trainer = Trainer(config=tiny(), cases=cases_of(volumes, 3))
    events = list(trainer.run())
    assert isinstance(events[-1], Done)
    ckpt = events[-1].result
    assert ckpt.iterations == 10
    assert ckpt.class_names == ["foreground", "class 2"]
    assert len(trainer.data.val_names) == 1
    assert len(trainer.data.train_names) == 2
    messages = " ".join(e.message for e in events if isinstance(e, Info))
    assert "3 cases" in messages
    assert f"held-out case(s): {trainer.data.val_names[0]}" in messages
    vals = [e for e in events if isinstance(e, Validation)]
    assert [v.iteration for v in vals] == [5, 10]
    # the held-out case is validated on all of its annotated voxels
    ((_img, target),) = trainer._val_items
    held = volumes[int(trainer.data.val_names[0][1:])][1]
    assert ((np.asarray(target) != IGNORE_INDEX) == (held > 0)).all()


def test_train_helper_accepts_cases(volumes):
    ckpt = train(cases=cases_of(volumes, 2), config=tiny(iterations=2))
    assert ckpt.iterations == 2
    assert ckpt.config.model.num_classes == 3


def test_validation_cases_are_chosen_with_the_seed_or_by_name():
    names = [f"c{i}" for i in range(10)]
    auto = choose_validation_cases(names, DataConfig(validation_fraction=0.2), seed=1)
    assert len(auto) == 2
    assert auto == choose_validation_cases(names, DataConfig(validation_fraction=0.2), seed=1)
    assert choose_validation_cases(names[:3], DataConfig(validation_fraction=0.01), 0) != []
    assert choose_validation_cases(names, DataConfig(validation_fraction=0.0), 0) == []
    assert choose_validation_cases(names[:2], DataConfig(), 0) == []
    named = DataConfig(validation_cases=["c4"])
    assert choose_validation_cases(names, named, 0) == ["c4"]
    with pytest.raises(ValueError, match="'x1'"):
        choose_validation_cases(names, DataConfig(validation_cases=["x1"]), 0)
    with pytest.raises(ValueError, match="every case"):
        choose_validation_cases(names[:2], DataConfig(validation_cases=names[:2]), 0)


def test_two_cases_hold_out_slices_of_each(volumes):
    trainer = Trainer(config=tiny(iterations=2), cases=cases_of(volumes, 2))
    assert trainer.data.val_names == []
    assert len(trainer._val_items) == 2
    for (_, train_t), (_, val_t) in zip(trainer.data.train, trainer._val_items):
        t, v = np.asarray(train_t) != IGNORE_INDEX, np.asarray(val_t) != IGNORE_INDEX
        assert v.any()
        assert not (t & v).any()
    assert "held-out slices" in " ".join(i.message for i in trainer.info)


def test_per_case_zscore_is_stored_and_applied(volumes, tmp_path):
    cases = cases_of(volumes, 2, scale=[1.0, 40.0])
    cases[1].image = cases[1].image + 500.0
    cfg = tiny(iterations=1, normalization="zscore")
    trainer = Trainer(config=cfg, cases=cases)
    norm = trainer.normalizer
    assert norm.per_image
    for img, _ in trainer.data.train:
        assert abs(float(np.mean(img))) < 0.05
        assert abs(float(np.std(img)) - 1.0) < 0.05
    path = save_checkpoint(trainer.checkpoint(), tmp_path / "m.safetensors")
    again = load_checkpoint(path).normalizer
    assert again.per_image
    out = again.apply(cases[1].image)
    assert abs(float(out.mean())) < 0.05
    # a stored description without the flag is a fixed normaliser
    old = {
        "mode": "zscore",
        "offsets": [1.0],
        "scales": [2.0],
        "clip_low": None,
        "clip_high": None,
    }
    assert Normalizer.from_dict(old).per_image is False
    assert "per_image" not in Normalizer.from_dict(old).to_dict()
    # one case: the plain z-score of today
    single = fit_dataset_normalizer([cases[0].image], [cases[0].annotation], cfg.data)
    assert not single.per_image
    assert single.offsets[0] == pytest.approx(float(cases[0].image.mean()), rel=1e-4)


def test_ct_statistics_come_from_the_dataset_foreground():
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(2):
        img = rng.normal(-900, 30, (1, 6, 20, 20))  # air
        ann = np.zeros((6, 20, 20), np.uint8)
        ann[:, :5] = 1
        img[0, :, 10:] = rng.normal(40 + 100 * i, 10, (6, 10, 20))  # organ
        ann[:, 12:] = 2
        img[0, 0, 0, 0] = 3000.0  # a stray bright voxel
        images.append(img)
        anns.append(ann)
    norm = fit_dataset_normalizer(images, anns, DataConfig(normalization="ct"))
    assert norm.mode == "ct"
    assert not norm.per_image
    fg = np.concatenate([im[0][a >= 2] for im, a in zip(images, anns)])
    lo, hi = np.percentile(fg, [0.5, 99.5])
    assert norm.clip_low[0] == pytest.approx(lo, rel=0.02)
    assert norm.clip_high[0] == pytest.approx(hi, rel=0.02)
    assert norm.offsets[0] == pytest.approx(90.0, abs=5.0)
    assert norm.scales[0] == pytest.approx(np.clip(fg, lo, hi).std(), rel=0.05)


def test_cases_with_different_spacings_are_resampled_to_the_median(volumes):
    spacing = [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (1.0, 1.0, 1.0)]
    trainer = Trainer(config=tiny(iterations=1), cases=cases_of(volumes, 3, spacing=spacing))
    assert trainer.config.data.target_spacing == (1.0, 1.0, 1.0)
    assert "1 of 3 case(s) resampled to the voxel spacing 1 x 1 x 1" in " ".join(
        i.message for i in trainer.info
    )
    shapes = {np.asarray(t).shape for _, t in trainer.data.train + trainer._val_items}
    assert (32, 32, 32) in shapes  # the 2 mm case now has twice the slices
    same = Trainer(config=tiny(iterations=1), cases=cases_of(volumes, 2, spacing=spacing[::2]))
    assert same.config.data.target_spacing is None
    assert same.spacing == (1.0, 1.0, 1.0)


def test_forced_cache_gives_the_same_first_batch_and_is_removed(volumes, tmp_path):
    ram = Trainer(config=tiny(iterations=1), cases=cases_of(volumes, 2))
    cfg = tiny(iterations=1, cache_dir=str(tmp_path / "cache"))
    disk = Trainer(config=cfg, cases=cases_of(volumes, 2))
    assert all(isinstance(img, np.memmap) for img, _ in disk.data.train)
    assert all(isinstance(t, np.memmap) for _, t in disk.data.train)
    assert disk.data.store.folder.parent == tmp_path / "cache"
    xr, yr = ram.sampler.sample(2)
    xd, yd = disk.sampler.sample(2)
    np.testing.assert_array_equal(xr, xd)
    np.testing.assert_array_equal(yr, yd)
    assert any("memory-mapped" in i.message for i in disk.info)
    folder = disk.data.store.folder
    assert any(folder.iterdir())
    events = list(disk.run())
    assert isinstance(events[-1], Done)
    disk.close()
    assert not folder.exists()
    assert (tmp_path / "cache").exists()


def test_memmapped_input_cases_train(volumes, tmp_path):
    cases = []
    for i, (image, ann) in enumerate(volumes[:2]):
        np.save(tmp_path / f"img{i}.npy", image[None].astype(np.float32))
        mm = np.load(tmp_path / f"img{i}.npy", mmap_mode="r")
        cases.append(Case(name=f"m{i}", image=mm, annotation=ann))
    ckpt = train(cases=cases, config=tiny(iterations=2))
    assert ckpt.iterations == 2


def test_2d_network_on_volume_slices(volumes):
    cfg = tiny(iterations=4, slice_axis=1)
    cfg.model.spatial_dims = 2
    cfg.data.patch_size = (16, 16)
    cfg.train.preview_seconds = 0
    trainer = Trainer(config=cfg, cases=cases_of(volumes, 2))
    assert trainer.sampler.sample(1)[0].shape == (1, 1, 16, 16)
    trainer.set_preview(0, 3)
    events = list(trainer.run())
    ckpt = events[-1].result
    assert ckpt.config.model.spatial_dims == 2
    assert ckpt.config.data.image_dims == 3
    assert ckpt.config.data.slice_axis == 1
    assert len(ckpt.config.model.pool[0]) == 2
    assert [e.iteration for e in events if isinstance(e, Validation)] == [4]
    preview = next(e for e in events if isinstance(e, Preview))
    assert preview.probabilities.shape == (3, SHAPE[1], SHAPE[2])


def test_a_single_slice_volume_trains_a_2d_network(volumes):
    image, semantic, _ = make_sample(shape=SHAPE, seed=0)
    one = image[8:9][None]  # (C, 1, Y, X)
    one_ann = np.zeros((1, *SHAPE[1:]), np.uint8)
    one_ann[0, ::4] = semantic[8, ::4] + 1  # every fourth row painted
    assert (one_ann >= 2).any()
    cfg = tiny(iterations=3)  # a 3D patch size: the slice axis is dropped
    cfg.train.preview_seconds = 0
    trainer = Trainer(one, one_ann, cfg)
    assert trainer.patch_size == (16, 16)
    trainer.set_preview(0, 0)
    events = list(trainer.run())
    ckpt = events[-1].result
    assert ckpt.config.model.spatial_dims == 2
    assert (ckpt.config.data.image_dims, ckpt.config.data.slice_axis) == (3, 0)
    assert any(isinstance(e, Step) for e in events)
    preview = next(e for e in events if isinstance(e, Preview))
    assert preview.probabilities.shape == (3, 32, 32)


def test_missing_background_is_a_warning(volumes):
    image, ann = volumes[0]
    no_bg = np.where(ann == 1, 0, ann)
    trainer = Trainer(image[None], no_bg, tiny(iterations=1))
    warnings = [i.message for i in trainer.info if i.level == "warning"]
    assert any("no background (value 1)" in w for w in warnings)


def test_a_stray_label_value_is_refused_before_building_a_network(volumes):
    image, ann = volumes[0]
    bad = ann.astype(np.uint16)
    bad[0, 0, 0] = 65535
    with pytest.raises(ValueError, match="65535"):
        Trainer(image[None], bad, tiny())


def test_cases_must_agree(volumes):
    cases = cases_of(volumes, 2)
    cases[1].image = np.concatenate([cases[1].image] * 2)
    with pytest.raises(ValueError, match="same channels"):
        Trainer(config=tiny(), cases=cases)
    with pytest.raises(ValueError, match="spacing of each case"):
        Trainer(config=tiny(), cases=cases_of(volumes, 2), spacing=(1, 1, 1))


def test_the_temporary_cache_is_used_when_memory_is_short(volumes, monkeypatch):
    import napari_unetseg.core.device as device

    monkeypatch.setattr(device, "available_memory", lambda d: 1000)
    trainer = Trainer(config=tiny(iterations=1), cases=cases_of(volumes, 2))
    folder = trainer.data.store.folder
    assert folder is not None
    assert folder.exists()
    assert os.path.basename(folder).startswith("unetseg-cache-")
    trainer.close()
    assert not folder.exists()


def test_a_case_without_spacing_counts_as_isotropic_one(volumes):
    spacing = [(2.0, 1.0, 1.0), (2.0, 1.0, 1.0), None]
    trainer = Trainer(config=tiny(iterations=1), cases=cases_of(volumes, 3, spacing=spacing))
    assert trainer.config.data.target_spacing == (2.0, 1.0, 1.0)
    shapes = {np.asarray(t).shape for _, t in trainer.data.train + trainer._val_items}
    assert (8, 32, 32) in shapes  # the case of unknown (1 mm) spacing, at 2 mm


def test_a_case_to_resample_needs_a_spacing(volumes):
    from napari_unetseg.core.training_data import prepare_cases

    (case,) = cases_of(volumes, 1)
    norm = fit_dataset_normalizer([case.image], [case.annotation])
    with pytest.raises(ValueError, match="'c0' has no voxel spacing"):
        prepare_cases(
            [case],
            DataConfig(),
            task="semantic",
            num_outputs=3,
            normalizer=norm,
            target_spacings=[(2.0, 1.0, 1.0)],
        )
