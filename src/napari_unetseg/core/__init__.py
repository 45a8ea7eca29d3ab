"""The Qt-free engine of napari-unetseg: I/O, data, model, training, inference, metrics.

Nothing under ``core`` imports napari, Qt or magicgui (a test enforces it). torch is
imported by the modules that need it, not by this package's ``__init__``.
"""
