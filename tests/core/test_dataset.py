"""nnU-Net v2 raw datasets: reading, writing, round trips, errors, file grouping, regions."""

import json

import nibabel as nib
import numpy as np
import pytest

from napari_unetseg.core.cases import Case
from napari_unetseg.core.dataset import (
    DatasetError,
    LazyCase,
    find_cases,
    parse_regions,
    read_nnunet_dataset,
    regions_class_order,
    regions_from_info,
    write_nnunet_dataset,
)

SPACING = (2.5, 0.8, 0.6)  # (z, y, x)
SHAPE = (4, 6, 7)  # (z, y, x)


def _save(path, zyx, spacing=SPACING):
    """Write a (Z, Y, X) or (Y, X) array as NIfTI in file order (i, j, k) = (x, y, z)."""
    zooms = list(reversed(spacing)) + [1.0] * (3 - len(spacing))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(zyx).T, np.diag([*zooms, 1.0])), path)


def _make(root, cases=("b", "a"), labels=None, channels=("T1", "FLAIR"), shape=SHAPE, **extra):
    """A tiny raw dataset; label maps hold 0, 1, 2 and the ignore label 3."""
    labels = labels or {"background": 0, "edema": 1, "tumor": 2, "ignore": 3}
    spec = {
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        **extra,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(spec))
    rng = np.random.default_rng(0)
    data = {}
    for case in cases:
        imgs = [
            (rng.normal(size=shape) + 100 * c).astype(np.float32) for c in range(len(channels))
        ]
        seg = rng.integers(0, 4, size=shape).astype(np.uint8)
        for c, img in enumerate(imgs):
            _save(root / "imagesTr" / f"{case}_{c:04d}.nii.gz", img)
        _save(root / "labelsTr" / f"{case}.nii.gz", seg)
        data[case] = (np.stack(imgs), seg)
    return data


def test_read_stacks_channels_and_converts_labels(tmp_path):
    data = _make(tmp_path / "Dataset001_X")
    info, cases = read_nnunet_dataset(tmp_path / "Dataset001_X")
    assert info.channel_names == ["T1", "FLAIR"]
    assert info.class_names == ["edema", "tumor"]
    assert (info.ignore_label, info.regions, info.file_ending) == (3, {}, ".nii.gz")
    assert info.name == "Dataset001_X"
    assert [c.name for c in cases] == ["a", "b"]
    for case in cases:
        image, seg = data[case.name]
        assert case.image.shape == (2, *SHAPE)
        np.testing.assert_allclose(case.image, image)
        expected = seg.astype(int) + 1
        expected[seg == 3] = 0
        np.testing.assert_array_equal(case.annotation, expected)
        assert case.spacing == pytest.approx(SPACING)
        assert case.channel_names == ["T1", "FLAIR"]
        assert case.meta.source_path.endswith(f"{case.name}_0000.nii.gz")
        assert [p.name for p in case.image_paths] == [
            f"{case.name}_0000.nii.gz",
            f"{case.name}_0001.nii.gz",
        ]
        assert case.label_path.name == f"{case.name}.nii.gz"


def test_lazy_cases_load_on_access_and_unload(tmp_path):
    _make(tmp_path / "ds")
    _, eager = read_nnunet_dataset(tmp_path / "ds")
    _, lazy = read_nnunet_dataset(tmp_path / "ds", load=False)
    assert all(isinstance(c, LazyCase) and not c.loaded for c in lazy)
    assert "not loaded" in repr(lazy[0])
    assert not lazy[0].loaded
    np.testing.assert_array_equal(lazy[0].annotation, eager[0].annotation)
    assert lazy[0].loaded
    assert not lazy[1].loaded
    np.testing.assert_array_equal(lazy[0].image, eager[0].image)
    assert lazy[0].spatial_shape == SHAPE
    assert lazy[0].channels == 2
    lazy[0].unload()
    assert not lazy[0].loaded
    plain = lazy[1].load()
    assert type(plain) is Case
    assert plain.spacing == pytest.approx(SPACING)


def _spec(root):
    return json.loads((root / "dataset.json").read_text())


def _edit(root, **changes):
    spec = _spec(root)
    spec.update(changes)
    (root / "dataset.json").write_text(json.dumps(spec))


def _mixed_dims(root):
    _make(root)
    for c in range(2):
        _save(root / "imagesTr" / f"c2d_{c:04d}.nii.gz", np.zeros((6, 7), np.float32), (1, 1))
    _save(root / "labelsTr" / "c2d.nii.gz", np.zeros((6, 7), np.uint8), (1, 1))
    _edit(root, numTraining=3)


BROKEN = {
    "no folder": (lambda r: None, "dataset folder not found"),
    "no json": (lambda r: r.mkdir(), "has no dataset.json"),
    "bad json": (
        lambda r: (r.mkdir(), (r / "dataset.json").write_text("{oops")),
        "not valid JSON",
    ),
    "missing keys": (
        lambda r: (r.mkdir(), (r / "dataset.json").write_text('{"labels": {}}')),
        "lacks the key\\(s\\) channel_names, file_ending",
    ),
    "empty imagesTr": (
        lambda r: (_make(r), [p.unlink() for p in (r / "imagesTr").iterdir()]),
        "holds no .nii.gz images",
    ),
    "no label file": (
        lambda r: (_make(r), (r / "labelsTr" / "a.nii.gz").unlink()),
        "case a: .*labelsTr/a.nii.gz is missing",
    ),
    "no channel file": (
        lambda r: (_make(r), (r / "imagesTr" / "b_0001.nii.gz").unlink()),
        "case b: .*imagesTr/b_0001.nii.gz is missing",
    ),
    "channel shapes differ": (
        lambda r: (_make(r), _save(r / "imagesTr" / "a_0001.nii.gz", np.zeros((4, 6, 8)))),
        "case a: channel files differ in shape",
    ),
    "label shape differs": (
        lambda r: (_make(r), _save(r / "labelsTr" / "b.nii.gz", np.zeros((4, 6, 8), np.uint8))),
        "case b: label file .*b.nii.gz has shape \\(4, 6, 8\\)",
    ),
    "undeclared values": (
        lambda r: (_make(r), _save(r / "labelsTr" / "a.nii.gz", np.full(SHAPE, 7, np.uint8))),
        "a.nii.gz holds label values \\[7\\] that dataset.json does not declare",
    ),
    "ignore not highest": (
        lambda r: _make(r, labels={"background": 0, "ignore": 1, "edema": 2, "tumor": 3}),
        "ignore label must be the highest label \\(4\\), not 1",
    ),
    "mixed 2D and 3D": (_mixed_dims, "mixes 2D and 3D cases"),
    "v1 labels": (
        lambda r: _make(r, labels={"0": "background", "1": "edema"}),
        "nnU-Net v1",
    ),
    "labels with a gap": (
        lambda r: _make(r, labels={"background": 0, "edema": 1, "tumor": 3}),
        "consecutive .*\\[2\\] missing",
    ),
    "regions without order": (
        lambda r: _make(r, labels={"background": 0, "WT": [1, 2], "ET": 2}),
        "needs 'regions_class_order'",
    ),
    "channel index too high": (
        lambda r: (_make(r), _save(r / "imagesTr" / "a_0002.nii.gz", np.zeros(SHAPE))),
        "a_0002.nii.gz: channel 2 but dataset.json declares 2 channel",
    ),
    "bad dataset entry": (
        lambda r: (_make(r), _edit(r, dataset={"a": {"images": []}})),
        "dataset entry 'a' needs 'images' and 'label'",
    ),
    "unsupported ending": (
        lambda r: (_make(r), _edit(r, file_ending=".png")),
        "file_ending '.png' is not supported",
    ),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_datasets_give_one_line_errors(tmp_path, kind):
    make, message = BROKEN[kind]
    root = tmp_path / "ds"
    make(root)
    with pytest.raises(DatasetError, match=message) as err:
        read_nnunet_dataset(root)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_lazy_read_reports_content_errors_on_load(tmp_path):
    root = tmp_path / "ds"
    _make(root)
    _save(root / "labelsTr" / "a.nii.gz", np.full(SHAPE, 9, np.uint8))
    _, cases = read_nnunet_dataset(root, load=False)
    with pytest.raises(DatasetError, match="\\[9\\]"):
        _ = cases[0].annotation


def test_wrong_num_training_warns(tmp_path):
    _make(tmp_path / "ds")
    _edit(tmp_path / "ds", numTraining=5)
    with pytest.warns(UserWarning, match="numTraining is 5 but 2 training cases"):
        read_nnunet_dataset(tmp_path / "ds")


def test_region_based_dataset(tmp_path):
    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing": 3}
    root = tmp_path / "brats"
    _make(root, labels=labels, regions_class_order=[1, 2, 3])
    info, cases = read_nnunet_dataset(root)
    assert info.regions == {"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing": [3]}
    assert regions_from_info(info) == info.regions
    assert info.class_names == ["label 1", "label 2", "enhancing"]
    assert info.ignore_label is None
    assert cases[0].annotation.min() >= 1
    assert cases[0].annotation.max() <= 4


def test_explicit_dataset_entry_is_honoured(tmp_path):
    root = tmp_path / "ds"
    data = _make(root, cases=("a",))
    (root / "imagesTr" / "a_0000.nii.gz").rename(root / "first.nii.gz")
    (root / "imagesTr" / "a_0001.nii.gz").rename(root / "second.nii.gz")
    entry = {"x": {"images": ["first.nii.gz", "second.nii.gz"], "label": "labelsTr/a.nii.gz"}}
    _edit(root, dataset=entry)
    _, cases = read_nnunet_dataset(root)
    assert [c.name for c in cases] == ["x"]
    np.testing.assert_allclose(cases[0].image, data["a"][0])


def _project_cases():
    rng = np.random.default_rng(1)
    out = []
    for name, spacing in (("p1", SPACING), ("p2", (1.0, 1.5, 2.0))):
        image = rng.normal(size=(2, *SHAPE)).astype(np.float32)
        ann = rng.integers(0, 4, size=SHAPE).astype(np.uint8)  # 0 = unannotated, 3 classes
        out.append(Case(name, image, ann, spacing=spacing))
    return out


def test_write_then_read_round_trip(tmp_path):
    cases = _project_cases()
    root = tmp_path / "Dataset002_Out"
    json_path = write_nnunet_dataset(
        root, cases, channel_names=["T1", "FLAIR"], class_names=["edema", "tumor"]
    )
    spec = json.loads(json_path.read_text())
    assert spec["labels"] == {"background": 0, "edema": 1, "tumor": 2, "ignore": 3}
    assert max(spec["labels"].values()) == spec["labels"]["ignore"]
    assert spec["channel_names"] == {"0": "T1", "1": "FLAIR"}
    assert (spec["file_ending"], spec["numTraining"]) == (".nii.gz", 2)
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [
        "p1_0000.nii.gz",
        "p1_0001.nii.gz",
        "p2_0000.nii.gz",
        "p2_0001.nii.gz",
    ]
    assert not list(root.glob(".*"))  # no temporary files left
    info, back = read_nnunet_dataset(root)
    assert (info.channel_names, info.class_names) == (["T1", "FLAIR"], ["edema", "tumor"])
    for orig, new in zip(cases, back):
        assert new.name == orig.name
        np.testing.assert_array_equal(new.image, orig.image)
        np.testing.assert_array_equal(new.annotation, orig.annotation)
        assert new.spacing == pytest.approx(orig.spacing)
    # nnU-Net values on disk: project 1 -> 0, k -> k - 1, 0 -> ignore (3).
    on_disk = np.asarray(nib.load(root / "labelsTr" / "p1.nii.gz").dataobj).T
    ann = cases[0].annotation
    np.testing.assert_array_equal(on_disk, np.where(ann == 0, 3, ann.astype(int) - 1))


def test_write_keeps_source_geometry_and_integer_images(tmp_path):
    root = tmp_path / "src"
    _make(root, cases=("a",))
    _, cases = read_nnunet_dataset(root)
    cases[0].image = np.round(cases[0].image * 10).astype(np.int16)
    cases[0].annotation[cases[0].annotation == 0] = 1  # fully annotated: no ignore label
    out = tmp_path / "out"
    write_nnunet_dataset(out, cases, channel_names=["T1", "FLAIR"], class_names=["e", "t"])
    assert "ignore" not in _spec(out)["labels"]
    written = nib.load(out / "imagesTr" / "a_0001.nii.gz")
    np.testing.assert_allclose(
        written.affine, nib.load(root / "imagesTr" / "a_0001.nii.gz").affine
    )
    assert np.issubdtype(written.get_data_dtype(), np.integer)
    _, back = read_nnunet_dataset(out)
    np.testing.assert_array_equal(back[0].image, cases[0].image)


def test_write_converts_lazy_cases_one_at_a_time(tmp_path):
    data = _make(tmp_path / "src")
    _, lazy = read_nnunet_dataset(tmp_path / "src", load=False)
    out = tmp_path / "out"
    write_nnunet_dataset(out, lazy, channel_names=["T1", "FLAIR"], class_names=["e", "t"])
    assert not any(c.loaded for c in lazy)
    _, back = read_nnunet_dataset(out)
    np.testing.assert_allclose(back[0].image, data["a"][0])
    assert _spec(out)["labels"]["ignore"] == 3


def test_write_refuses_non_empty_folder_and_overwrite_removes_stale_cases(tmp_path):
    cases = _project_cases()
    root = tmp_path / "ds"
    kw = {"channel_names": ["T1", "FLAIR"], "class_names": ["edema", "tumor"]}
    write_nnunet_dataset(root, cases, **kw)
    with pytest.raises(DatasetError, match=r"not empty.*overwrite"):
        write_nnunet_dataset(root, cases[:1], **kw)
    write_nnunet_dataset(root, cases[:1], overwrite=True, **kw)
    _, back = read_nnunet_dataset(root)
    assert [c.name for c in back] == ["p1"]
    assert _spec(root)["numTraining"] == 1


def test_write_puts_unannotated_cases_in_imagests(tmp_path):
    cases = _project_cases()
    cases[1].annotation = None
    root = tmp_path / "ds"
    write_nnunet_dataset(root, cases, channel_names=["a", "b"], class_names=["x", "y"])
    assert sorted(p.name for p in (root / "imagesTs").iterdir()) == [
        "p2_0000.nii.gz",
        "p2_0001.nii.gz",
    ]
    assert _spec(root)["numTraining"] == 1


def test_write_region_based_round_trip(tmp_path):
    cases = _project_cases()
    root = tmp_path / "ds"
    regions = {"WT": [1, 2], "ET": [2]}
    write_nnunet_dataset(
        root, cases, channel_names=["a", "b"], class_names=["edema", "tumor"], regions=regions
    )
    spec = _spec(root)
    assert spec["labels"] == {"background": 0, "WT": [1, 2], "ET": 2, "ignore": 3}
    assert spec["regions_class_order"] == [1, 2]
    info, back = read_nnunet_dataset(root)
    assert info.regions == regions
    assert info.class_names == ["edema", "tumor"]
    np.testing.assert_array_equal(back[0].annotation, cases[0].annotation)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"class_names": ["only"]}, "do not fit 1 classes"),
        ({"channel_names": ["one"]}, "has 2 channels, 1 names given"),
        ({"file_ending": ".png"}, "file_ending '.png'"),
        ({"regions": {"WT": [1, 5]}}, "regions must use exactly the labels 1..2"),
    ],
)
def test_write_rejects_inconsistent_input(tmp_path, change, message):
    kw = {"channel_names": ["a", "b"], "class_names": ["x", "y"], **change}
    with pytest.raises(DatasetError, match=message):
        write_nnunet_dataset(tmp_path / "ds", _project_cases(), **kw)
    assert not (tmp_path / "ds" / "dataset.json").exists()


def test_regions_class_order():
    assert regions_class_order({"WT": [1, 2, 3], "TC": [2, 3], "ET": [3]}) == [1, 2, 3]
    kits = {"kidney": [1, 2, 3], "masses": [2, 3], "tumor": [2]}
    assert regions_class_order(kits) == [1, 3, 2]
    with pytest.raises(DatasetError, match="regions_class_order"):
        regions_class_order({"A": [1, 2], "B": [3]})


def test_parse_regions():
    parsed = parse_regions("WT=1,2,3; TC=1,3 ;ET=3;")
    assert parsed == {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
    assert list(parsed) == ["WT", "TC", "ET"]
    for bad, message in [
        ("", "no regions"),
        ("WT", "has no name"),
        ("=1,2", "has no name"),
        ("WT=1,a", "not a list of labels"),
        ("WT=", "needs foreground labels"),
        ("WT=0,1", "needs foreground labels"),
        ("WT=1;WT=2", "given twice"),
    ]:
        with pytest.raises(DatasetError, match=message):
            parse_regions(bad)


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_find_cases_groups_channels(tmp_path):
    _touch(tmp_path, "B_0001.nii.gz", "B_0000.nii.gz", "A_0000.nii.gz", "A_0001.nii.gz")
    _touch(tmp_path, "notes.txt", ".hidden_0000.nii.gz")
    found = find_cases(tmp_path)
    assert [(c, [p.name for p in ps]) for c, ps in found] == [
        ("A", ["A_0000.nii.gz", "A_0001.nii.gz"]),
        ("B", ["B_0000.nii.gz", "B_0001.nii.gz"]),
    ]


def test_find_cases_single_channel_names(tmp_path):
    _touch(tmp_path, "scan.nii.gz", "img_0001.tif", "img_0002.tif")
    found = find_cases(tmp_path)
    assert [c for c, _ in found] == ["img_0001", "img_0002", "scan"]
    assert [c for c, _ in find_cases(tmp_path, file_ending=".tif")] == ["img_0001", "img_0002"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ((), "holds no image files"),
        (("x.txt",), "holds no image files"),
        (("A_0000.nii.gz", "A_0002.nii.gz"), "case 'A' lacks channel\\(s\\) _0001"),
        (("A_0000.nii.gz", "A_0001.nii.gz", "B_0000.nii.gz"), "different numbers of channels"),
        (("A_0000.nii", "A_0000.nii.gz"), "both channel 0 of case 'A'"),
    ],
)
def test_find_cases_errors(tmp_path, names, message):
    _touch(tmp_path / "in", *names)
    with pytest.raises(DatasetError, match=message) as err:
        find_cases(tmp_path / "in")
    assert "\n" not in str(err.value)
