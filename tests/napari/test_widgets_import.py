"""Opening the dock widgets must not import torch (napari starts fast)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("napari")

pytestmark = pytest.mark.gui

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import napari
    from napari_unetseg._napari.widgets.annotate import AnnotateWidget
    from napari_unetseg._napari.widgets.evaluate import EvaluateWidget
    from napari_unetseg._napari.widgets.predict import PredictWidget
    from napari_unetseg._napari.widgets.train import TrainWidget

    viewer = napari.Viewer(show=False)
    viewer.add_image(np.zeros((4, 8, 8), np.float32), name="img")
    viewer.add_labels(np.zeros((4, 8, 8), np.uint8), name="ann")
    # opened as napari opens them from the Plugins menu (npe2 manifest)
    widgets = {}
    for title, cls in (("Annotate sparse slices", AnnotateWidget), ("Train U-Net", TrainWidget),
                       ("Predict", PredictWidget), ("Evaluate", EvaluateWidget)):
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-unetseg", title)
        assert isinstance(widget, cls), (title, type(widget))
        widgets[cls] = widget
    # the Train and Predict widgets share the viewer's current model
    assert widgets[TrainWidget].state is widgets[PredictWidget].state
    print("TORCH_LOADED" if "torch" in sys.modules else "TORCH_ABSENT")
    viewer.close()
    """
)


def test_widgets_open_without_torch():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TORCH_ABSENT" in proc.stdout, proc.stdout + proc.stderr[-2000:]
