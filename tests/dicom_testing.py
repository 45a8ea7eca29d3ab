"""A DICOM series generated with pydicom for the tests: oblique, shuffled file names."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

# Oblique slice orientation: row and column directions (orthonormal), in LPS.
_A = 0.35
ROW = np.array([np.cos(_A), np.sin(_A), 0.0])
COL = np.array([-np.sin(_A) * np.cos(0.2), np.cos(_A) * np.cos(0.2), np.sin(0.2)])
NORMAL = np.cross(ROW, COL)
ORIGIN = np.array([-80.5, 20.25, -33.0])
DY, DX, STEP = 0.8, 0.6, 2.5


def make_series(folder, n=6, desc="CT axial", uid=None, shear=0.0, skip=(), seed=0):
    """Write n slices (rows 8, columns 10) with shuffled file names and instance numbers.

    Stored values are raw (n, 8, 10) int16 in position order, rescaled by slope 1 and
    intercept -1024 (Hounsfield units = raw - 1024). Returns (raw, series UID).
    """
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 2500, size=(n, 8, 10)).astype(np.int16)
    uid = uid or generate_uid()
    study = generate_uid()
    frame_of_reference = generate_uid()
    names = rng.permutation(n)
    instances = rng.permutation(n) + 1
    for z in range(n):
        if z in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = uid
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PatientID = "phantom"
        ds.PatientName = "Phantom^Test"
        ds.Modality = "CT"
        ds.SeriesDescription = desc
        ds.InstanceNumber = int(instances[z])
        position = ORIGIN + z * STEP * NORMAL + z * shear * ROW
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in (*ROW, *COL)]
        ds.PixelSpacing = [DY, DX]
        ds.SliceThickness = STEP
        ds.Rows, ds.Columns = raw.shape[1:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = 1
        ds.RescaleIntercept = -1024
        ds.PixelData = raw[z].tobytes()
        ds.save_as(folder / f"s{seed}_{names[z]:03d}.dcm", enforce_file_format=True)
    return raw, uid
