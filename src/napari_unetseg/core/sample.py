"""Deterministic synthetic 3D sample: touching blob-like objects of two classes.

Class 1: round, bright, smooth blobs. Class 2: elongated, dimmer, textured blobs. Objects
are packed so that many touch; touching objects are separate instances and a thin dark
seam runs between them (like a membrane). A smooth multiplicative bias field makes the
two classes overlap in raw intensity across the volume, so telling them apart needs
shape and texture as well as brightness; Gaussian noise is added last.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

_DEFAULT_SHAPE = (64, 128, 128)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3D rotation matrix."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _smooth_profile(n: int, rng: np.random.Generator, waves: int = 2) -> np.ndarray:
    """A smooth 1D curve in [-1, 1] of length n made of a few low-frequency cosines."""
    t = np.linspace(0.0, 1.0, n)
    out = np.zeros(n)
    for k in range(1, waves + 1):
        out += rng.uniform(0.3, 1.0) / k * np.cos(np.pi * k * t + rng.uniform(0, 2 * np.pi))
    peak = np.abs(out).max()
    return out / peak if peak > 0 else out


def make_sample(shape=_DEFAULT_SHAPE, seed: int = 0, n_objects: int = 60):
    """Make a synthetic volume with dense ground truth.

    shape: (Z, Y, X) of the volume. n_objects: number of objects at the default shape
    (64, 128, 128); other shapes get a number scaled to their volume and object size.

    Returns (image, semantic, instances):
      image (Z, Y, X) float32, roughly 0 (background) to 1.3 (bright objects);
      semantic (Z, Y, X) uint8: 0 background, 1 round bright class, 2 elongated dim class;
      instances (Z, Y, X) int32: 0 background, 1..N one id per object (each connected).
    Deterministic for a given (shape, seed, n_objects); well under a second at the default
    shape.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be (Z, Y, X) with every side >= 4, got {shape}")
    rng = np.random.default_rng(seed)
    # Object size follows the smallest side (radii ~4-15 voxels at the default shape).
    scale = float(np.clip(min(shape) / _DEFAULT_SHAPE[0], 0.3, 1.0))
    ratio = np.prod(shape) / np.prod(_DEFAULT_SHAPE) / scale**3
    count = max(4, round(n_objects * ratio))

    dist = np.full(shape, np.inf, dtype=np.float32)  # normalised distance of the owner
    inst = np.zeros(shape, dtype=np.int32)
    kinds: list[int] = []
    centres: list[np.ndarray] = []
    radii_max: list[float] = []
    shape_arr = np.array(shape, dtype=float)
    for idx in range(1, count + 1):
        kind = 1 if rng.random() < 0.45 else 2
        if kind == 1:
            r = rng.uniform(6.0, 10.0) * scale
            radii = r * rng.uniform(0.85, 1.15, size=3)
        else:
            minor = rng.uniform(4.0, 5.5) * scale
            radii = np.array([minor * rng.uniform(2.2, 2.8), minor, minor * 0.85])
        radii = np.maximum(radii, 1.5)
        rot = _rotation(rng)
        reach = float(radii.max())
        if centres and rng.random() < 0.6:
            # Put it next to an existing object so that the two touch.
            j = int(rng.integers(len(centres)))
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            centre = centres[j] + direction * 0.85 * (radii_max[j] + radii.min())
        else:
            centre = rng.uniform(0, 1, size=3) * shape_arr
        centre = np.clip(centre, 1.0, shape_arr - 2.0)
        lo = np.maximum(np.floor(centre - reach - 1), 0).astype(int)
        hi = np.minimum(np.ceil(centre + reach + 2), shape_arr).astype(int)
        zz, yy, xx = np.meshgrid(
            *(np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi)),
            indexing="ij",
            sparse=True,
        )
        offsets = [zz - centre[0], yy - centre[1], xx - centre[2]]
        # Coordinates in the object's frame: rot.T @ offset, scaled by the radii.
        d = np.zeros(tuple(hi - lo), dtype=np.float32)
        for row in range(3):
            comp = sum(np.float32(rot[a, row]) * offsets[a] for a in range(3))
            d += (comp / np.float32(radii[row])) ** 2
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        sub_d, sub_i = dist[box], inst[box]
        win = (d < 1.0) & (d < sub_d)
        sub_d[win] = d[win]
        sub_i[win] = idx
        kinds.append(kind)
        centres.append(centre)
        radii_max.append(reach)

    # Keep the largest connected piece of each object and number objects 1..N.
    instances = np.zeros(shape, dtype=np.int32)
    semantic = np.zeros(shape, dtype=np.uint8)
    new_id = 0
    for idx, sl in enumerate(ndi.find_objects(inst), start=1):
        if sl is None:
            continue
        mask = inst[sl] == idx
        pieces, n = ndi.label(mask)
        if n > 1:
            sizes = np.bincount(pieces.ravel())[1:]
            mask = pieces == (int(np.argmax(sizes)) + 1)
        if mask.sum() < 8:
            continue
        new_id += 1
        instances[sl][mask] = new_id
        semantic[sl][mask] = kinds[idx - 1]

    # Intensities: bright smooth class 1, dimmer textured class 2, dark background.
    texture = rng.normal(size=shape).astype(np.float32)
    texture = ndi.gaussian_filter(texture, 1.0)
    texture /= max(float(texture.std()), 1e-6)
    image = np.full(shape, 0.1, dtype=np.float32)
    image[semantic == 1] = 1.0
    c2 = semantic == 2
    image[c2] = 0.6 + 0.18 * texture[c2]
    # Dark seams where different objects touch.
    seam = np.zeros(shape, dtype=bool)
    for ax in range(3):
        a = np.moveaxis(instances, ax, 0)
        diff = (a[1:] != a[:-1]) & (a[1:] > 0) & (a[:-1] > 0)
        s = np.moveaxis(seam, ax, 0)
        s[1:] |= diff
        s[:-1] |= diff
    image[seam] *= 0.55
    image = ndi.gaussian_filter(image, 0.7)
    bias = (
        1.0
        + 0.25
        * (
            _smooth_profile(shape[0], rng)[:, None, None]
            + _smooth_profile(shape[1], rng)[None, :, None]
            + _smooth_profile(shape[2], rng)[None, None, :]
        )
        / 3.0
    )
    image *= bias.astype(np.float32)
    image += rng.normal(0.0, 0.08, size=shape).astype(np.float32)
    return image.astype(np.float32, copy=False), semantic, instances


#: Mean intensity of each tissue in the four sequences (T1, T1c, T2, FLAIR), loosely
#: after how glioma regions look on MRI: necrosis dark on T1, enhancing rim bright on
#: T1c, oedema bright on T2 and FLAIR.
_MRI_CONTRAST = {
    #            T1    T1c   T2    FLAIR
    "outside": (0.0, 0.0, 0.0, 0.0),
    "brain": (0.70, 0.70, 0.45, 0.50),
    "oedema": (0.60, 0.62, 0.85, 0.95),
    "enhancing": (0.65, 1.20, 0.70, 0.75),
    "necrosis": (0.30, 0.35, 0.95, 0.55),
}
MRI_CHANNELS = ("T1", "T1c", "T2", "FLAIR")
#: BraTS regions of the nested labels (1 necrosis, 2 oedema, 3 enhancing tumour).
BRATS_REGIONS = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}


def make_brats_like(shape=(48, 64, 64), seed: int = 0):
    """A synthetic multi-sequence MRI case with a nested tumour, BraTS-style.

    An ellipsoidal "brain" holds one tumour: an oedema region (label 2) around an
    enhancing rim (label 3) around a necrotic core (label 1), each irregular (smoothed
    random fields threshold the shells), at a random place and size. Four channels
    (T1, T1c, T2, FLAIR) give each tissue a different contrast (no single channel
    separates all labels), with a smooth bias field per channel and Gaussian noise.

    Returns (image, labels): image (4, Z, Y, X) float32, labels (Z, Y, X) uint8 with
    0 background, 1 necrosis, 2 oedema, 3 enhancing tumour (score regions with
    :data:`BRATS_REGIONS`). Deterministic for a given (shape, seed).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be (Z, Y, X) with every side >= 16, got {shape}")
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    brain = ((grid / np.array([0.85, 0.9, 0.8])[:, None, None, None]) ** 2).sum(0) < 1.0
    centre = rng.uniform(-0.35, 0.35, size=3)
    radius = rng.uniform(0.45, 0.6)
    dist = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0)) / radius

    def wobble(sigma: float) -> np.ndarray:
        field = ndi.gaussian_filter(rng.normal(size=shape), sigma=sigma * min(shape) / 16)
        return field / (np.abs(field).max() + 1e-8)

    labels = np.zeros(shape, np.uint8)
    labels[(dist < 1.0 + 0.35 * wobble(2.0)) & brain] = 2
    labels[(dist < 0.68 + 0.15 * wobble(1.5)) & brain] = 3
    labels[(dist < 0.45 + 0.12 * wobble(1.5)) & brain] = 1
    # tissue codes 0..4 in the order of _MRI_CONTRAST
    tissue = brain.astype(np.uint8)
    tissue[labels == 2] = 2
    tissue[labels == 3] = 3
    tissue[labels == 1] = 4
    table = np.array(list(_MRI_CONTRAST.values()), np.float32)  # (5 tissues, 4 channels)
    image = np.zeros((4, *shape), np.float32)
    for c in range(4):
        base = table[tissue, c]
        bias = 1.0 + 0.15 * wobble(4.0)
        texture = 0.05 * wobble(0.5)
        image[c] = base * bias + texture * brain + rng.normal(0, 0.05, size=shape)
    return image, labels
