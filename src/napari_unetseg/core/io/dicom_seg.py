"""Labels as a DICOM Segmentation object (SEG) that references its source series.

:func:`write_dicom_seg` turns a label volume (Z, Y, X), laid out like the image
:func:`~napari_unetseg.core.io.read_dicom` returns for the series (z = slices sorted along
the slice normal, y = rows, x = columns), into one BINARY DICOM SEG file made with
highdicom: label value k is segment k, named ``class_names[k - 1]``; the SEG references
the source series (SeriesInstanceUID, every slice's SOPInstanceUID) and takes the
patient and study from it, so PACS viewers show it over the scan. The write is atomic.

highdicom and pydicom are optional (``pip install "napari-unetseg[formats]"``); they are
imported only here.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .meta import VolumeIOError, VolumeMeta

DICOM_SEG_SUFFIXES = (".dcm",)
_MAX_SEGMENTS = 255


def _highdicom():
    try:
        import highdicom
        import pydicom  # noqa: F401
    except ImportError as exc:
        raise VolumeIOError(
            'writing DICOM SEG needs highdicom: pip install "napari-unetseg[formats]"'
        ) from exc
    return highdicom


def _segment_names(labels: np.ndarray, class_names: Sequence[str] | None) -> list[str]:
    names = [str(n) for n in (class_names or [])]
    top = int(labels.max()) if labels.size else 0
    if top > _MAX_SEGMENTS:
        raise VolumeIOError(
            f"the labels hold values up to {top}; a DICOM SEG written here holds at most "
            f"{_MAX_SEGMENTS} segments (write instance masks as NIfTI or NRRD instead)."
        )
    names += [f"class {k}" for k in range(len(names) + 1, top + 1)]
    if not names:
        names = ["class 1"]
    return names


def check_seg_target(meta: VolumeMeta | None) -> str:
    """Raise VolumeIOError unless a SEG can be written for the image of ``meta``; return
    the path of its DICOM source."""
    if meta is None or meta.source_format != "dicom" or not meta.source_path:
        raise VolumeIOError(
            "a DICOM SEG must reference a DICOM series: these labels belong to an image "
            "that was not read from DICOM; write them as NIfTI, NRRD or MetaImage instead."
        )
    _highdicom()
    return meta.source_path


def _datasets(source, meta: VolumeMeta | None):
    """Source headers in read_dicom's slice order from a folder/file path or datasets."""
    from .dicom import series_datasets

    if source is None:
        source_path = check_seg_target(meta)
        uid = meta.extra.get("series_uid") if meta is not None else None
        return series_datasets(source_path, series_uid=uid)
    if isinstance(source, (str, Path)):
        uid = meta.extra.get("series_uid") if meta is not None else None
        return series_datasets(source, series_uid=uid)
    datasets = list(source)
    if not datasets:
        raise VolumeIOError("no source DICOM datasets given for the SEG")
    return _sorted_datasets(datasets)


#: Type 2 attributes (present, may be empty) that the SEG copies from its source; some
#: exporters leave them out.
_COPIED_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
)


def _completed(datasets: list) -> list:
    """Copies of the headers with absent type 2 patient/study attributes set empty."""
    out = []
    for ds in datasets:
        missing = [k for k in _COPIED_TYPE2 if k not in ds]
        if missing:
            ds = copy.deepcopy(ds)
            for key in missing:
                setattr(ds, key, "")
        out.append(ds)
    return out


def _sorted_datasets(datasets: list) -> list:
    """Sort datasets along the slice normal, as read_dicom orders the slices."""
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    dist = [float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for ds in datasets]
    return [datasets[i] for i in np.argsort(dist, kind="stable")]


def write_dicom_seg(
    labels: np.ndarray,
    source,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    *,
    meta: VolumeMeta | None = None,
    overwrite: bool = True,
    description: str = "napari-unetseg segmentation",
) -> Path:
    """Write labels (Z, Y, X) as a DICOM SEG referencing the source series; return the path.

    labels: integer (Z, Y, X) in read_dicom's layout of the source series; 0 = no segment,
        k >= 1 = segment k.
    source: the series folder (or one of its files), or its pydicom datasets (any order;
        sorted along the slice normal here); None takes the series of ``meta`` (the meta
        that read_dicom returned with the image).
    class_names: segment labels for values 1, 2, ...; missing names become "class k".
    meta: the image's VolumeMeta; picks the series of a folder holding several.
    Raises VolumeIOError when the labels do not cover the series voxel for voxel.
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from ... import __version__

    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise VolumeIOError(f"a DICOM SEG needs labels (Z, Y, X); got shape {labels.shape}")
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise VolumeIOError("a DICOM SEG needs non-negative integer labels (0 = no segment)")
    datasets = _completed(_datasets(source, meta))
    expected = (len(datasets), int(datasets[0].Rows), int(datasets[0].Columns))
    if labels.shape != expected:
        raise VolumeIOError(
            f"the labels have shape {labels.shape} but the DICOM series has {expected} "
            "(slices, rows, columns); a SEG must cover its series voxel for voxel."
        )
    names = _segment_names(labels, class_names)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="napari-unetseg", family=codes.cid7162.ArtificialIntelligence, version=__version__
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=name[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k, name in enumerate(names, start=1)
    ]
    dtype = np.uint8 if len(names) < 256 else np.uint16
    pixels = np.ascontiguousarray(labels.astype(dtype))

    def write(tmp: Path) -> None:
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=int(datasets[0].get("SeriesNumber", 0) or 0) + 1000,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="napari-unetseg",
            manufacturer_model_name="napari-unetseg",
            software_versions=str(__version__),
            device_serial_number="0",
            series_description=description[:64],
            transfer_syntax_uid=ExplicitVRLittleEndian,
            omit_empty_frames=False,
        )
        seg.save_as(str(tmp))

    try:
        return atomic_write(path, write, overwrite=overwrite)
    except (ValueError, TypeError, AttributeError) as exc:
        raise VolumeIOError(f"cannot write the DICOM SEG {path}: {exc}") from exc


def read_dicom_seg(
    path: str | Path, source_uids: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str], str]:
    """Read a DICOM SEG (e.g. one written by :func:`write_dicom_seg`).

    source_uids: SOPInstanceUIDs of the source slices in the wanted order (e.g. from
        :func:`~.dicom.series_datasets`); default: the referenced instances as stored.
    Returns (labels (Z, Y, X), value k = segment k; segment labels in segment-number order;
    the referenced SeriesInstanceUID).
    """
    hd = _highdicom()
    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:
        raise VolumeIOError(f"cannot read {path} as a DICOM SEG ({exc})") from exc
    ref = seg.ReferencedSeriesSequence[0]
    if source_uids is None:
        source_uids = [str(i.ReferencedSOPInstanceUID) for i in ref.ReferencedInstanceSequence]
    labels = seg.get_pixels_by_source_instance(list(source_uids), combine_segments=True)
    names = [str(seg.get_segment_description(k).segment_label) for k in seg.segment_numbers]
    return labels, names, str(ref.SeriesInstanceUID)
