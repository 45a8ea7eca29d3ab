"""napari sample data: the synthetic 3D blobs volume with dense ground truth."""

from __future__ import annotations

from ..core.io import meta_from_array
from ..core.sample import make_sample
from .reader import META_KEY
from .widgets._common import ROLE_KEY, TASK_KEY


def make_sample_data():
    """Return [(image, kwargs, "image"), (semantic, kwargs, "labels"),
    (instances, kwargs, "labels")], all (Z, Y, X) = (64, 128, 128), spacing 1."""
    from .reader import prefer_this_reader

    prefer_this_reader()  # the plugin is open: NIfTI files then open with its reader
    image, semantic, instances = make_sample()
    meta = meta_from_array(shape=image.shape, spacing=(1.0, 1.0, 1.0), channel_names=["blobs"])
    return [
        (image, {"name": "blobs3d", "metadata": {META_KEY: meta}}, "image"),
        (
            semantic,
            {
                "name": "blobs3d semantic truth",
                "metadata": {META_KEY: meta, ROLE_KEY: "truth", TASK_KEY: "semantic"},
                "visible": False,
            },
            "labels",
        ),
        (
            instances,
            {
                "name": "blobs3d instances truth",
                "metadata": {META_KEY: meta, ROLE_KEY: "truth", TASK_KEY: "instances"},
                "visible": False,
            },
            "labels",
        ),
    ]
