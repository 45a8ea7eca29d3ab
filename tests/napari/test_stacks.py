"""(Z, C, Y, X) stacks from napari's own reader: channels found on axis 1, split into
channel layers that line up with annotations."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unetseg.core.channel_match import guess_channel_axis


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((40, 3, 64, 64), 1), ((3, 40, 64, 64), 0), ((4, 4, 8, 8), 0), ((40, 12, 64, 64), 0)],
)
def test_guess_channel_axis(shape, axis):
    assert guess_channel_axis(shape) == axis


@pytest.mark.gui
def test_zcyx_stack_is_read_by_channel_and_split(make_napari_viewer):
    from napari_unetseg._napari.widgets._common import (
        channel_count,
        image_array,
        spatial_shape,
    )
    from napari_unetseg._napari.widgets.annotate import AnnotateWidget

    viewer = make_napari_viewer()
    AnnotateWidget(viewer)
    data = np.random.default_rng(0).normal(size=(10, 3, 16, 18)).astype(np.float32)
    stack = viewer.add_image(data, name="hyper", scale=(2.0, 1.0, 0.5, 0.5))
    assert spatial_shape(stack) == (10, 16, 18)
    assert channel_count(stack) == 3
    np.testing.assert_array_equal(image_array([stack]), np.moveaxis(data, 1, 0))

    parts = [viewer.layers[f"hyper [c{c}]"] for c in range(3)]
    for c, part in enumerate(parts):
        np.testing.assert_array_equal(part.data, data[:, c])
        np.testing.assert_allclose(part.scale, (2.0, 0.5, 0.5))
    assert not stack.visible
    np.testing.assert_array_equal(image_array(parts), np.moveaxis(data, 1, 0))
