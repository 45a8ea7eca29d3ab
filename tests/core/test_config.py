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
    d = Config().to_dict()
    assert json.loads(json.dumps(d)) == d
    assert isinstance(d["data"]["ct_window"], list)


@pytest.mark.parametrize(
    ("d", "needle"),
    [
        ({"data": {"augment": "no"}}, "data.augment must be true or false"),
        ({"class_names": "tumour"}, "class_names must be a list"),
        ({"train": {"iterations": "2"}}, "train.iterations must be a whole number"),
        ({"train": {"learning_rate": "fast"}}, "train.learning_rate must be a number"),
        ({"data": {"patch_size": [16, "a", 16]}}, "data.patch_size"),
        ({"data": {"ct_window": [1, 2, 3]}}, "data.ct_window needs 2 values"),
        ({"model": {"depth": None}}, "model.depth cannot be empty"),
        ({"train": "fast"}, "must be a mapping"),
    ],
)
def test_values_of_the_wrong_type_are_refused_with_the_setting_named(d, needle):
    with pytest.raises(ConfigError, match=needle):
        Config.from_dict(d)


def test_values_set_in_code_are_checked_by_validate():
    cfg = Config()
    cfg.train.iterations = "2"
    with pytest.raises(ConfigError, match=r"train\.iterations"):
        cfg.validate()
    cfg = Config()
    cfg.train.iterations = 0
    with pytest.raises(ConfigError, match="at least 1"):
        cfg.train.validate()


def test_json_numbers_are_converted_to_the_declared_type():
    cfg = Config.from_dict({"train": {"iterations": 5.0, "learning_rate": 1}})
    assert cfg.train.iterations == 5
    assert isinstance(cfg.train.iterations, int)
    assert isinstance(cfg.train.learning_rate, float)
    assert Config.from_dict({"data": {"patch_size": [8, 16, 16]}}).data.patch_size == (8, 16, 16)


def test_every_setting_is_declared_with_help_and_a_valid_default():
    from napari_unetseg.core.config import settings

    specs = settings()
    keys = [s.key for s in specs]
    assert len(keys) == len(set(keys))
    assert {"train.iterations", "infer.threshold", "class_names"} <= set(keys)
    for s in specs:
        assert s.help, s.key
        s.check(s.default)  # the default obeys the declared rules


def test_settings_reference_in_docs_is_generated_from_the_schema():
    from pathlib import Path

    from napari_unetseg.core.config import settings_markdown

    doc = Path(__file__).resolve().parents[2] / "docs" / "settings.md"
    assert doc.read_text() == settings_markdown(), (
        "docs/settings.md is out of date: python -c 'from napari_unetseg.core.config import "
        'settings_markdown as s; print(s(), end="")\' > docs/settings.md'
    )
