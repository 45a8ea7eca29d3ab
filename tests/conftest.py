import os

os.environ.setdefault("NAPARI_UNETSEG_TESTING", "1")
