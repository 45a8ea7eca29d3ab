"""The core must run without napari, Qt or magicgui, and importing the package is cheap."""

import subprocess
import sys
import textwrap

GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True
    )


def test_core_modules_import_no_gui_toolkit():
    proc = _run(
        f"""
        import importlib, pkgutil, sys
        import napari_unetseg.core as core
        for m in pkgutil.iter_modules(core.__path__):
            importlib.import_module("napari_unetseg.core." + m.name)
        import napari_unetseg.cli
        bad = sorted(m for m in sys.modules if m.split(".")[0] in {GUI_MODULES!r})
        print(",".join(bad))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"core pulled in GUI modules: {proc.stdout}"


def test_core_works_when_gui_toolkits_cannot_be_imported():
    # Block the GUI packages outright: the core must still import and run.
    proc = _run(
        f"""
        import sys
        for name in {GUI_MODULES!r}:
            sys.modules[name] = None
        import importlib, pkgutil
        import napari_unetseg.core as core
        for m in pkgutil.iter_modules(core.__path__):
            importlib.import_module("napari_unetseg.core." + m.name)
        from napari_unetseg.core.config import Config
        print(Config().validate().model.num_classes)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"


def test_package_import_is_light():
    proc = _run(
        """
        import sys
        import napari_unetseg, napari_unetseg.core
        print(",".join(m for m in ("torch", "napari", "qtpy") if m in sys.modules))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
