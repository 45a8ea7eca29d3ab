"""Simulate a sparse annotation from a dense reference (core ``sparsify``): how a user
tries the plugin on data that already has ground truth."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

from ._common import CLASSES_KEY, ROLE_KEY, TASK_KEY, annotation_colormap, geometry_kwargs
from .pickers import LayerCombo, is_reference, task_of


class SimulateBox(QGroupBox):
    """Dense labels layer + fraction / axes / spacing / seed -> a sparse annotation layer.
    ``owner`` is the Annotate widget (class names, annotation layer picker)."""

    def __init__(self, viewer, owner, parent=None):
        super().__init__("Simulate from ground truth", parent)
        self.viewer = viewer
        self.owner = owner
        form = QFormLayout(self)
        self.instances_check = QCheckBox("reference holds object ids (instances)")
        self.truth_combo = LayerCombo(viewer, "labels", prefer=self._suits_truth, hidden_ok=True)
        self.truth_combo.setToolTip("A dense reference, e.g. the sample's (hidden) ground truth")
        form.addRow("Dense labels", self.truth_combo)
        self.fraction_spin = QDoubleSpinBox()
        self.fraction_spin.setRange(0.001, 1.0)
        self.fraction_spin.setDecimals(3)
        self.fraction_spin.setSingleStep(0.05)
        self.fraction_spin.setValue(0.1)
        self.fraction_spin.setToolTip("Share of the slices of each axis that are kept")
        form.addRow("Fraction of slices", self.fraction_spin)
        self.axes_edit = QLineEdit("zyx")
        self.axes_edit.setToolTip("Axes along which slices are kept: any of z, y, x")
        form.addRow("Axes", self.axes_edit)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["random", "even"])
        self.mode_combo.setToolTip("random slices, or evenly spaced ones")
        form.addRow("Spacing", self.mode_combo)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setToolTip("Random seed of the slice choice")
        form.addRow("Seed", self.seed_spin)
        form.addRow(self.instances_check)
        self.instances_check.toggled.connect(self.truth_combo.repick)
        self.simulate_btn = QPushButton("Simulate sparse annotation")
        self.simulate_btn.clicked.connect(lambda: owner._run(self.simulate))
        form.addRow(self.simulate_btn)

    def _suits_truth(self, layer) -> bool:
        wanted = "instances" if self.instances_check.isChecked() else "semantic"
        return is_reference(layer) and task_of(layer) == wanted

    def simulate(self, truth=None):
        """Sparse annotation layer from a dense labels layer (core ``sparsify``)."""
        from ...core.annotations import sparsify

        truth = truth if truth is not None else self.truth_combo.value
        if truth is None:
            raise ValueError("choose a dense labels layer (the ground truth) first")
        dense = np.asarray(truth.data)
        ann = sparsify(
            dense,
            fraction=float(self.fraction_spin.value()),
            axes=self.axes_edit.text().strip() or "zyx",
            mode=self.mode_combo.currentText(),
            seed=int(self.seed_spin.value()),
        )
        instances = self.instances_check.isChecked()
        max_value = int(ann.max()) if ann.size else 1
        owner = self.owner
        if instances:
            names = ["object"]
        else:
            from ...core.annotations import annotation_summary

            # the core names the classes the list does not (yet) name
            counts = annotation_summary(ann, class_names=owner.class_names()[1:])
            names = [n for n in counts["voxels_per_class"] if n != "background"]
            if len(owner.class_names()) - 1 < len(names):
                owner.set_class_names(["background", *names])
        kwargs = geometry_kwargs(
            truth,
            **{
                ROLE_KEY: "annotation",
                CLASSES_KEY: names,
                TASK_KEY: "instances" if instances else "semantic",
            },
        )
        layer = self.viewer.add_labels(
            ann.astype(np.uint16 if max_value > 255 else np.uint8, copy=False),
            name=f"{truth.name} sparse",
            colormap=annotation_colormap(max(max_value, len(names) + 1), instances),
            **kwargs,
        )
        owner.annotation_combo.set_value(layer, chosen=False)
        return layer
