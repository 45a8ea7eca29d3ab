import json

import pytest

from napari_unetseg.core.config import Config, ConfigError


def test_round_trip_through_json_is_exact():
    cfg = Config()
    cfg.data.patch_size = (16, 32, 48)
    cfg.model.pool = [[1, 2, 2], [2, 2, 2], [2, 2, 2]]
    cfg.train.iterations = 7
    cfg.class_names = ["nucleus", "membrane"]
    again = Config.from_json(cfg.to_json())
    assert again == cfg
    assert again.data.patch_size == (16, 32, 48)


def test_partial_dict_overrides_only_what_it_names():
    cfg = Config.from_dict({"train": {"iterations": 12}, "model": {"base_width": 4}})
    assert cfg.train.iterations == 12
    assert cfg.model.base_width == 4
    assert cfg.train.batch_size == Config().train.batch_size


@pytest.mark.parametrize(
    ("d", "needle"),
    [
        ({"trian": {}}, "unknown config section"),
        ({"train": {"iteratons": 3}}, "iteratons"),
        ({"train": {"task": "panoptic"}}, "task"),
        ({"infer": {"overlap": 1.0}}, "overlap"),
        ({"infer": {"min_size": -1}}, "min_size"),
        ({"infer": {"interior_threshold": 1.5}}, "interior_threshold"),
        ({"model": {"depth": 3, "pool": [[2, 2, 2]]}}, "pool"),
        ({"data": {"normalization": "minmax"}}, "normalization"),
    ],
)
def test_bad_settings_name_the_setting(d, needle):
    with pytest.raises(ConfigError, match=needle):
        Config.from_dict(d).validate()


def test_invalid_json_is_a_config_error(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="JSON"):
        Config.load(p)
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "missing.json")


def test_to_dict_is_plain_json():
    json.dumps(Config().to_dict())
