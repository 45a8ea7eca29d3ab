"""Texts of the Annotate widget: the annotation summary (from core
``annotation_summary``), the key help line and the next-step line."""

from __future__ import annotations

MARK_SLICE_KEY = "Shift-C"


def keys_text(class_names: list[str], instances: bool) -> str:
    """ "Keys: 1 background · 2 cell · …" (keys 1-9 pick annotation values)."""
    if instances:
        text = "Keys: 1 background · M new object (next free id)"
    else:
        names = class_names[:9]
        text = "Keys: " + " · ".join(f"{k} {n}" for k, n in enumerate(names, start=1))
    return f"{text} · {MARK_SLICE_KEY} mark slice complete"


def next_step(has_image: bool, has_layer: bool, summary: dict | None) -> str:
    """What the user should do next, from an empty viewer to a few annotated slices."""
    if not has_image:
        return (
            "open an image (File > Open) or the sample (File > Open Sample > "
            "napari-unetseg), then press New annotation layer"
        )
    if not has_layer:
        return "choose the image and classes, then press New annotation layer"
    if not summary or not summary.get("annotated_voxels"):
        return (
            "paint some objects in one slice (keys 2-9 pick the class), then "
            f"Mark slice complete ({MARK_SLICE_KEY})"
        )
    return "annotate a few more slices (along other axes too), then open Train"


def format_summary(s: dict, ndim: int = 3) -> str:
    """HTML lines: annotated slices per axis (3D only: in a 2D image rows and columns
    are not slices), annotated share, voxels per class or number of objects, warnings."""
    unit = "voxels" if ndim >= 3 else "pixels"
    lines = []
    if ndim >= 3:
        slices = s.get("annotated_slices", {})
        lines.append("annotated slices  " + ", ".join(f"{k}: {v}" for k, v in slices.items()))
    lines.append(f"annotated {unit}  {100.0 * float(s.get('annotated_fraction', 0.0)):.2f} %")
    if "objects" in s:
        n = int(s["objects"])
        lines.append(f"{n} object{'s' if n != 1 else ''}")
        bg = s.get("voxels_per_class", {}).get("background", 0)
        lines.append(f"background  {bg} {unit}")
    else:
        per = s.get("voxels_per_class", {})
        if per:
            lines.append(f"{unit} per class  " + ", ".join(f"{k}: {v}" for k, v in per.items()))
        missing = s.get("missing_classes") or []
        if missing:
            lines.append(f"<b>warning:</b> no {unit} painted for {', '.join(missing)}")
    return "<br>".join(lines)
