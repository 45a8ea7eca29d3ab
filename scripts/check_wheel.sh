#!/usr/bin/env bash
# Install napari-unetseg the way users get it and check that napari finds it: build the
# wheel and the sdist, install the wheel (no extras) into a fresh virtual environment
# together with napari[pyqt6] — what napari's plugin manager does inside an existing
# napari — validate the manifest with npe2, check that npe2 discovers the plugin, and
# open each dock widget of the manifest in a real viewer (under xvfb-run when there is
# one). Called by test.sh when CI=true or UNETSEG_CHECK_WHEEL=1; runs on its own too.
# pip's cache is reused, so a second run takes about a minute.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python_bin="${PYTHON:-python}"
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3

work="$(mktemp -d "${TMPDIR:-/tmp}/unetseg-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "[wheel] building the wheel and the sdist"
"$python_bin" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || {
  cat "$work/build.log"
  exit 1
}
wheel="$(ls "$work"/dist/napari_unetseg-*.whl)"
sdist="$(ls "$work"/dist/napari_unetseg-*.tar.gz)"
echo "[wheel] built $(basename "$wheel") and $(basename "$sdist")"

# the manifest must be a real file in the wheel (src/napari_unetseg/napari.yaml is a link)
"$python_bin" - "$wheel" "$sdist" <<'EOF'
import sys, tarfile, zipfile
wheel, sdist = sys.argv[1:3]
names = zipfile.ZipFile(wheel).namelist()
for need in ("napari_unetseg/napari.yaml", "napari_unetseg/cli.py", "napari_unetseg/_version.py"):
    if need not in names:
        sys.exit(f"[wheel] {need} is missing from {wheel}")
manifest = zipfile.ZipFile(wheel).read("napari_unetseg/napari.yaml").decode()
if "napari-unetseg.train_widget" not in manifest:
    sys.exit("[wheel] napari_unetseg/napari.yaml in the wheel is not the plugin manifest")
entry = [n for n in names if n.endswith("entry_points.txt")]
text = zipfile.ZipFile(wheel).read(entry[0]).decode() if entry else ""
if "napari.manifest" not in text or "napari_unetseg:napari.yaml" not in text:
    sys.exit("[wheel] the napari.manifest entry point is missing from the wheel")
members = tarfile.open(sdist).getnames()
for need in ("README.md", "LICENSE", "napari.yaml", "pyproject.toml"):
    if not any(m.endswith("/" + need) and m.count("/") == 1 for m in members):
        sys.exit(f"[wheel] {need} is missing from {sdist}")
EOF

echo "[wheel] installing the wheel (no extras) and napari[pyqt6] into a fresh venv"
"$python_bin" -m venv "$work/venv"
venv_py="$work/venv/bin/python"
pin=(-c constraints.txt)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then pin=(); fi
"$venv_py" -m pip install -q --disable-pip-version-check "${pin[@]}" "$wheel" "napari[pyqt6]"

echo "[wheel] npe2 validate and discovery"
"$work/venv/bin/npe2" validate napari-unetseg
"$work/venv/bin/npe2" list --fields name,version,contributions | grep -q napari-unetseg || {
  echo "[wheel] npe2 list does not show napari-unetseg"
  exit 1
}
"$work/venv/bin/unetseg" --version

cat >"$work/open_widgets.py" <<'EOF'
"""Open every dock widget of the installed plugin in a napari viewer."""
import napari
import npe2

pm = npe2.PluginManager.instance()
pm.discover()
manifest = pm.get_manifest("napari-unetseg")
names = [w.display_name for w in manifest.contributions.widgets or []]
assert len(names) == 4, f"expected 4 widgets in the manifest, found {names}"
viewer = napari.Viewer(show=False)
try:
    for name in names:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-unetseg", name)
        assert widget is not None, name
        print(f"[wheel] opened widget {name!r}: {type(widget).__name__}")
    sample = viewer.open_sample("napari-unetseg", "blobs3d")
    assert sample, "the sample gave no layers"
    print(f"[wheel] sample layers: {[layer.name for layer in viewer.layers]}")
finally:
    viewer.close()
EOF
echo "[wheel] opening the widgets in a viewer"
if command -v xvfb-run >/dev/null 2>&1; then
  (cd "$work" && xvfb-run -a -s "-screen 0 1280x1024x24" "$venv_py" open_widgets.py)
else
  echo "[wheel] no xvfb-run: using Qt's offscreen platform"
  (cd "$work" && QT_QPA_PLATFORM=offscreen "$venv_py" open_widgets.py)
fi
echo "[wheel] OK"
