"""Take the tutorial's screenshots from a real napari window.

Run under a (virtual) display, for example::

    xvfb-run -a -s "-screen 0 1600x1300x24" .venv/bin/python scripts/screenshots.py

It opens the synthetic sample (cropped to keep training short), simulates sparse
annotations, trains the default model for 150 steps (about a minute on 2 CPU cores),
predicts, evaluates, and
saves one picture of the window per dock widget to docs/images/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _wait(runner) -> None:
    from qtpy.QtCore import QEventLoop

    if not runner.running:
        return
    loop = QEventLoop()
    runner.finished.connect(loop.quit)
    loop.exec_()


def _grab(viewer, path: Path) -> None:
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtWidgets import QApplication

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    for _ in range(5):
        QApplication.processEvents()
    viewer.window._qt_window.grab().save(str(path))
    print(f"wrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--iterations", type=int, default=150)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    from napari_unetseg._napari.sample_data import make_sample_data
    from napari_unetseg._napari.widgets.annotate import AnnotateWidget
    from napari_unetseg._napari.widgets.evaluate import EvaluateWidget
    from napari_unetseg._napari.widgets.predict import PredictWidget
    from napari_unetseg._napari.widgets.train import TrainWidget
    from napari_unetseg.core.io import meta_from_array

    viewer = napari.Viewer(title="napari-unetseg")
    viewer.window._qt_window.resize(1500, 1250)
    crop = (slice(16, 48), slice(0, 96), slice(0, 96))
    for data, kwargs, kind in make_sample_data():
        data = np.ascontiguousarray(data[crop])
        kwargs = dict(kwargs)
        kwargs["metadata"] = {"unetseg_meta": meta_from_array(shape=data.shape)}
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    image_name = viewer.layers[0].name
    truth_name = viewer.layers[1].name
    viewer.dims.set_current_step(0, 16)

    # --- Annotate: simulate sparse annotations from the dense truth, mark a slice
    annotate = AnnotateWidget(viewer)
    dock = viewer.window.add_dock_widget(annotate, name="Annotate sparse slices")
    annotate.set_class_names(["background", "bright", "textured"])
    annotate.truth_combo.set_value(truth_name)
    annotate.fraction_spin.setValue(0.1)
    annotate.simulate()
    annotate.update_summary()
    _grab(viewer, args.out / "annotate.png")
    viewer.window.remove_dock_widget(dock)

    # --- Train
    train = TrainWidget(viewer)
    dock = viewer.window.add_dock_widget(train, name="Train U-Net")
    train.image_list.set_checked([image_name])
    train.annotation_combo.set_value(annotate.annotation_combo.value)
    train.validation_combo.set_value(truth_name)
    train.iterations_spin.setValue(args.iterations)
    train.device_combo.setCurrentText("cpu")
    train.preview_spin.setValue(1.0)
    train.start()
    _wait(train.runner)
    if train.runner.error is not None:
        print(f"training failed: {train.runner.error}", file=sys.stderr)
        return 1
    _grab(viewer, args.out / "train.png")
    viewer.window.remove_dock_widget(dock)
    for name in [ly.name for ly in viewer.layers if ly.name == "training preview"]:
        viewer.layers[name].visible = False

    # --- Predict
    predict = PredictWidget(viewer)
    dock = viewer.window.add_dock_widget(predict, name="Predict")
    predict.image_list.set_checked([image_name])
    predict.run()
    _wait(predict.runner)
    if predict.runner.error is not None:
        print(f"prediction failed: {predict.runner.error}", file=sys.stderr)
        return 1
    viewer.layers[annotate.annotation_combo.value.name].visible = False
    _grab(viewer, args.out / "predict.png")
    viewer.window.remove_dock_widget(dock)

    # --- Evaluate
    evaluate = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(evaluate, name="Evaluate")
    evaluate.pred_combo.set_value(f"{image_name} prediction")
    evaluate.ref_combo.set_value(truth_name)
    evaluate.compute()
    _grab(viewer, args.out / "evaluate.png")

    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
