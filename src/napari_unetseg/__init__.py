"""napari-unetseg: train a 3D U-Net from a few annotated slices, in napari or headless.

Importing this package is cheap: it imports neither Qt, napari nor torch.
"""

try:
    from ._version import __version__
except ImportError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
