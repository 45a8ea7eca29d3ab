"""Take the tutorial's screenshots from a real napari window.

Run under a (virtual) display, for example::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py

The window is 1600 x 1000 and the four docks are opened as a user opens them from the
Plugins menu (tabbed together on the right). It opens the synthetic sample (cropped to
keep training short), simulates sparse annotations, trains the default model for 150
steps (about a minute on 2 CPU cores), predicts, evaluates, and saves one picture of the
window per dock to docs/images/ (PNG, palette-quantised to stay small).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PLUGIN = "napari-unetseg"
SIZE = (1600, 1000)


def _wait(runner) -> None:
    from qtpy.QtCore import QEventLoop

    if not runner.running:
        return
    loop = QEventLoop()
    runner.finished.connect(loop.quit)
    loop.exec()


def _grab(viewer, path: Path) -> None:
    """Save the main window; the PNG is quantised to 256 colours (small files)."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    for _ in range(10):
        QApplication.processEvents()
    raw = path.with_suffix(".raw.png")
    viewer.window._qt_window.grab().save(str(raw))
    with Image.open(raw) as im:
        im.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    raw.unlink()
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def _settle(rounds: int = 20) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(rounds):
        QApplication.processEvents()


def _show(dock, widget) -> None:
    """Bring a dock's tab to the front, scrolled to the top."""
    _settle()  # the docks are tabbed together on the next turns of the event loop
    dock.show()
    dock.raise_()
    widget.scroll_area.verticalScrollBar().setValue(0)
    _settle()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--iterations", type=int, default=150)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import napari

    from napari_unetseg._napari.sample_data import make_sample_data
    from napari_unetseg.core.io import meta_from_array

    viewer = napari.Viewer(title="napari-unetseg")
    window = viewer.window._qt_window
    window.showNormal()
    window.setGeometry(0, 0, *SIZE)
    crop = (slice(16, 48), slice(0, 96), slice(0, 96))
    for data, kwargs, kind in make_sample_data():
        data = np.ascontiguousarray(data[crop])
        kwargs = dict(kwargs)
        kwargs["metadata"] = {
            **kwargs["metadata"],
            "unetseg_meta": meta_from_array(shape=data.shape),
        }
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    image_name = viewer.layers[0].name
    truth_name = viewer.layers[1].name
    viewer.dims.set_current_step(0, 16)

    docks = {}
    for title in ("Annotate sparse slices", "Train U-Net", "Predict", "Evaluate"):
        docks[title] = viewer.window.add_plugin_dock_widget(PLUGIN, title)

    # --- Annotate: simulate sparse annotations from the dense truth
    dock, annotate = docks["Annotate sparse slices"]
    _show(dock, annotate)
    annotate.set_class_names(["background", "bright", "textured"])
    annotate.truth_combo.set_value(truth_name)
    annotate.fraction_spin.setValue(0.1)
    annotation = annotate.simulate()
    annotate.update_summary()
    _grab(viewer, args.out / "annotate.png")

    # --- Train
    dock, train = docks["Train U-Net"]
    _show(dock, train)
    train.image_list.set_checked([image_name])
    train.annotation_combo.set_value(annotation)
    train.validation_combo.set_value(truth_name)
    train.setting("train.iterations").value = args.iterations
    train.setting("train.preview_seconds").value = 1.0
    train.setting("train.precision").value = "float32"  # the timing quoted in the tutorial
    train.device_combo.set_device("cpu")
    from qtpy.QtCore import QTimer

    ticker = QTimer()
    ticker.timeout.connect(lambda: print(train.progress.text(), flush=True))
    ticker.start(15_000)
    train.start()
    _wait(train.runner)
    ticker.stop()
    print(train.banner.text().split("<br>")[-1], flush=True)
    if train.runner.error is not None:
        print(f"training failed: {train.runner.error}", file=sys.stderr)
        return 1
    train.scroll_area.ensureWidgetVisible(train.feedback.readout)
    _grab(viewer, args.out / "train.png")

    # --- Predict
    dock, predict = docks["Predict"]
    _show(dock, predict)
    predict.image_list.set_checked([image_name])
    predict.run()
    _wait(predict.runner)
    if predict.runner.error is not None:
        print(f"prediction failed: {predict.runner.error}", file=sys.stderr)
        return 1
    annotation.visible = False
    _grab(viewer, args.out / "predict.png")

    # --- Evaluate
    dock, evaluate = docks["Evaluate"]
    _show(dock, evaluate)
    evaluate.pred_combo.set_value(f"{image_name} prediction")
    evaluate.ref_combo.set_value(truth_name)
    rows = evaluate.compute()
    for row in rows:
        print(f"{row['class']}: Dice {row['dice']:.3f}")
    _grab(viewer, args.out / "evaluate.png")

    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
