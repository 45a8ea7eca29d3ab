"""Channels matched to the model's by name, whatever order they are given in."""

import numpy as np
import pytest

from napari_unetseg.core.channel_match import channel_keys, match_channels, order_channels

MODEL = ["case1 [T1]", "case1 [T1ce]", "case1 [T2]", "case1 [FLAIR]"]


def test_keys_from_brackets_and_shared_prefixes():
    assert channel_keys(MODEL) == ["t1", "t1ce", "t2", "flair"]
    assert channel_keys(["BraTS_002_t1", "BraTS_002_t1ce"]) == ["t1", "t1ce"]
    assert channel_keys(["BraTS_002_T1", "BraTS_002_FLAIR"], lower=False) == ["T1", "FLAIR"]


@pytest.mark.parametrize(
    "given",
    [
        ["case7 [FLAIR]", "case7 [T1]", "case7 [T2]", "case7 [T1ce]"],
        ["BraTS_007_flair", "BraTS_007_t1", "BraTS_007_t2", "BraTS_007_t1ce"],
        ["FLAIR", "T1", "T2", "T1ce"],
    ],
)
def test_swapped_channels_are_put_back_in_the_model_order(given):
    image = np.stack([np.full((2, 3), i, np.float32) for i in range(4)])  # channel c = c
    ordered, match = order_channels(image, MODEL, given)
    assert match.order == [1, 3, 2, 0]
    assert match.reordered
    assert "FLAIR" in match.message
    assert not match.warning
    assert [int(ordered[c, 0, 0]) for c in range(4)] == [1, 3, 2, 0]


def test_same_order_says_nothing_and_copies_nothing():
    image = np.zeros((4, 2, 3), np.float32)
    ordered, match = order_channels(
        image, MODEL, ["c2 [T1]", "c2 [T1ce]", "c2 [T2]", "c2 [FLAIR]"]
    )
    assert ordered is image
    assert match.message is None


def test_unmatched_names_warn_and_keep_the_given_order():
    match = match_channels(MODEL, ["a", "b", "c", "d"])
    assert match.order is None
    assert match.warning
    assert "T1" in match.message
    assert "check that it is the model's" in match.message


@pytest.mark.parametrize(
    ("expected", "given"),
    [
        (["T1"], ["anything"]),  # one channel: nothing to match
        (MODEL, ["case_0000", "case_0001", "case_0002", "case_0003"]),  # nnU-Net positions
        ([], ["a", "b"]),  # a model without names
    ],
)
def test_nothing_to_compare_is_not_a_warning(expected, given):
    match = match_channels(expected, given)
    assert match.order is None
    assert match.message is None
