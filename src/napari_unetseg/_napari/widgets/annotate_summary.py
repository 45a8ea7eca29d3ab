"""The annotation summary line of the Annotate widget (from core ``annotation_summary``)."""

from __future__ import annotations


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
