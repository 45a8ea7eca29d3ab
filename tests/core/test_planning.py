"""Automatic planning of pooling, patch size and batch sizes."""

import math

import pytest

from napari_unetseg.core.config import Config, ConfigError
from napari_unetseg.core.planning import (
    CPU_PATCH_VOXELS,
    MIN_FEATURE,
    Plan,
    divisor,
    make_plan,
    plan_pooling,
)


def test_isotropic_pools_every_axis():
    assert plan_pooling((1.0, 1.0, 1.0), (64, 64, 64), 4) == [[2, 2, 2]] * 3
    assert plan_pooling(None, (64, 64), 3) == [[2, 2]] * 2


def test_anisotropic_pools_in_plane_first():
    pool = plan_pooling((3.0, 0.6, 0.6), (32, 128, 128), 5)
    # 0.6 -> 1.2 -> 2.4: only then is the 3 mm axis within twice the finest spacing
    assert pool[0] == [1, 2, 2]
    assert pool[1] == [1, 2, 2]
    assert pool[2] == [2, 2, 2]
    assert len(pool) == 4


def test_small_axis_stops_pooling():
    pool = plan_pooling((1.0, 1.0, 1.0), (8, 64, 64), 4)
    assert pool[0] == [2, 2, 2]
    # Z is down to 4 voxels: it is not pooled again, Y and X go on
    assert pool[1] == [1, 2, 2]
    assert pool[2] == [1, 2, 2]
    for kernel, size in zip(zip(*pool), (8, 64, 64)):
        assert size // math.prod(kernel) >= MIN_FEATURE


def test_single_slice_volume_never_pools_z():
    pool = plan_pooling((1.0, 1.0, 1.0), (1, 40, 40), 4)
    assert all(k[0] == 1 for k in pool)
    assert all(k[1:] == [2, 2] for k in pool)


def test_pooling_rejects_bad_spacing():
    with pytest.raises(ConfigError, match="positive"):
        plan_pooling((0.0, 1.0, 1.0), (8, 8, 8), 2)
    with pytest.raises(ConfigError, match="axes"):
        plan_pooling((1.0, 1.0), (8, 8, 8), 2)


def test_plan_fills_only_what_is_unset():
    cfg = Config()
    plan = make_plan((64, 128, 128), (1.0, 1.0, 1.0), 1, cfg)
    assert len(plan.patch_size) == 3
    assert math.prod(plan.patch_size) <= CPU_PATCH_VOXELS
    assert all(p % k == 0 for p, k in zip(plan.patch_size, plan.divisor))
    assert len(plan.pool) == cfg.model.depth - 1
    assert plan.batch_size == cfg.train.batch_size
    assert plan.window_batch >= 1
    # the config itself is untouched until apply()
    assert cfg.data.patch_size is None
    assert cfg.model.pool is None
    plan.apply(cfg)
    assert cfg.data.patch_size == plan.patch_size
    assert cfg.model.pool == plan.pool
    assert cfg.infer.window_batch == plan.window_batch
    cfg.validate()


def test_user_settings_are_kept():
    cfg = Config()
    cfg.data.patch_size = (8, 22, 24)
    cfg.model.depth = 3
    cfg.model.pool = [[1, 2, 2], [1, 2, 2]]
    cfg.train.batch_size = 5
    cfg.infer.window_batch = 3
    plan = make_plan((64, 128, 128), (1.0, 1.0, 1.0), 2, cfg)
    assert plan.patch_size == (8, 22, 24)
    assert plan.pool == [[1, 2, 2], [1, 2, 2]]
    assert plan.batch_size == 5
    assert plan.window_batch == 3
    assert plan.depth == 3
    # 22 is not a multiple of 4: the plan says so
    assert any("padded" in n for n in plan.notes)


def test_small_image_gives_patch_no_bigger_than_the_image_rounded_up():
    plan = make_plan((12, 23, 20), None, 1, Config())
    assert all(p >= s for p, s in zip(plan.patch_size, (12, 23, 20)))
    assert all(p - s < k for p, s, k in zip(plan.patch_size, (12, 23, 20), plan.divisor))


def test_anisotropic_volume_gets_a_physically_balanced_patch():
    plan = make_plan((64, 256, 256), (3.0, 0.6, 0.6), 1, Config())
    z, y, x = plan.patch_size
    assert y == x
    assert y > 2 * z  # thick slices: fewer voxels along Z for the same extent
    assert plan.pool[0] == [1, 2, 2]
    assert "3 x 0.6 x 0.6" in plan.describe()


def test_2d_image_gets_a_2d_plan():
    plan = make_plan((300, 280), None, 3, Config())
    assert len(plan.patch_size) == 2
    assert all(len(k) == 2 for k in plan.pool)
    assert plan.patch_size[0] == plan.patch_size[1]
    assert "2D U-Net" in plan.describe()


def test_low_memory_shrinks_the_patch():
    cfg = Config()
    roomy = make_plan((128, 256, 256), None, 1, cfg, device="cuda", memory_bytes=40 * 2**30)
    tight = make_plan((128, 256, 256), None, 1, cfg, device="cuda", memory_bytes=200 * 2**20)
    assert math.prod(tight.patch_size) < math.prod(roomy.patch_size)
    assert any("memory" in n for n in tight.notes)
    assert roomy.window_batch >= tight.window_batch


def test_describe_is_one_readable_paragraph():
    plan = make_plan((64, 128, 128), None, 1, Config())
    text = plan.describe()
    assert "\n" not in text
    assert " x ".join(map(str, plan.patch_size)) in text
    assert "U-Net" in text
    assert isinstance(plan, Plan)


def test_mismatched_user_settings_are_refused():
    cfg = Config()
    cfg.data.patch_size = (32, 32)
    with pytest.raises(ConfigError, match="2 axes but the image has 3"):
        make_plan((16, 32, 32), None, 1, cfg)
    with pytest.raises(ConfigError, match="shape"):
        make_plan((16, 32, 32, 3), None, 1, Config())


def test_divisor():
    assert divisor([[1, 2, 2], [2, 2, 2]], 3) == (2, 4, 4)


def test_unset_width_depth_and_batch_are_planned_per_device():
    cfg = Config()
    cfg.model.base_width = None
    cfg.model.depth = None
    cfg.train.batch_size = None
    cpu = make_plan((64, 128, 128), None, 1, cfg)
    gpu = make_plan((64, 128, 128), None, 1, cfg, device="cuda", memory_bytes=40 * 2**30)
    assert cpu.base_width < gpu.base_width
    assert len(cpu.pool) == cpu.depth - 1
    assert cpu.batch_size >= 1
    cpu.apply(cfg)
    assert cfg.model.base_width == cpu.base_width
    assert cfg.train.batch_size == cpu.batch_size
