"""The Trainer: event sequence, cancellation, resume, determinism, tasks, and learning."""

import dataclasses
import itertools
import shutil

import numpy as np
import pytest
import torch

from napari_unetseg.core.annotations import sparsify
from napari_unetseg.core.checkpoint import Checkpoint, load_checkpoint
from napari_unetseg.core.config import Config
from napari_unetseg.core.events import (
    CancelToken,
    Done,
    Info,
    Preview,
    Step,
    Validation,
    run_to_completion,
)
from napari_unetseg.core.sample import make_sample
from napari_unetseg.core.training import Trainer, _lr_factor

SHAPE = (12, 24, 20)


def tiny_config(**train) -> Config:
    cfg = Config()
    cfg.model.base_width = 4
    cfg.model.depth = 2
    cfg.data.patch_size = (8, 16, 16)
    cfg.train.iterations = 4
    cfg.train.batch_size = 1
    cfg.train.validate_every = 2
    cfg.train.device = "cpu"
    cfg.train.threads = 1
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


@pytest.fixture(scope="module")
def sample():
    image, semantic, instances = make_sample(shape=SHAPE, seed=1)
    return image, semantic, instances


@pytest.fixture(scope="module")
def annotation(sample):
    return sparsify(sample[1], fraction=0.3, seed=0)


def test_event_sequence(sample, annotation):
    cfg = tiny_config()
    trainer = Trainer(sample[0][None], annotation, cfg)
    assert trainer.model.channels_last  # a 3D network trains channels-last on the CPU
    events = list(trainer.run())
    kinds = [type(e) for e in events]
    assert kinds[0] is Info
    assert kinds[-1] is Done
    assert kinds.count(Done) == 1
    steps = [e for e in events if isinstance(e, Step)]
    assert [s.iteration for s in steps] == [1, 2, 3, 4]
    assert all(s.total == 4 for s in steps)
    assert all(np.isfinite(s.loss) and s.learning_rate > 0 for s in steps)
    assert all(s.voxels_per_second > 0 for s in steps)
    assert [s.seconds for s in steps] == sorted(s.seconds for s in steps)
    vals = [e for e in events if isinstance(e, Validation)]
    assert [v.iteration for v in vals] == [2, 4]
    for v in vals:
        assert set(v.dice) == {"foreground", "class 2"}
        assert all(0.0 <= d <= 1.0 for d in v.dice.values())
        assert v.mean_dice == pytest.approx(np.mean(list(v.dice.values())))
    # every validation comes right after the step it belongs to
    for i, e in enumerate(events):
        if isinstance(e, Validation):
            assert isinstance(events[i - 1], Step)
            assert events[i - 1].iteration == e.iteration
    done = events[-1]
    assert not done.cancelled
    ckpt = done.result
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.iterations == 4
    assert ckpt.num_outputs == 3  # background + the two classes found in the annotation
    assert ckpt.class_names == ["foreground", "class 2"]
    assert ckpt.config.data.patch_size == (8, 16, 16)
    assert ckpt.config.model.pool is not None
    assert [h["iteration"] for h in ckpt.history] == [2, 4]
    # the caller's config is not modified
    assert cfg.model.pool is None
    assert cfg.model.num_classes == 2


def test_learning_rate_schedule():
    lrs = [_lr_factor(s, 100, 5) for s in range(100)]
    assert lrs[0] < lrs[4] < lrs[5] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[5:]))
    assert lrs[-1] < 0.05


def test_cancel_between_steps_gives_a_checkpoint(sample, annotation):
    token = CancelToken()
    trainer = Trainer(sample[0][None], annotation, tiny_config(iterations=50), cancel=token)
    seen = []
    for ev in trainer.run():
        seen.append(ev)
        if isinstance(ev, Step) and ev.iteration == 3:
            token.cancel()
    done = seen[-1]
    assert isinstance(done, Done)
    assert done.cancelled
    assert done.result.iterations == 3
    assert max(e.iteration for e in seen if isinstance(e, Step)) == 3


def test_resume_continues_iterations_and_optimizer(sample, annotation, tmp_path):
    first = Trainer(sample[0][None], annotation, tiny_config(iterations=3))
    run_to_completion(first.run())
    path = first.save(tmp_path / "m.safetensors")
    ckpt = load_checkpoint(path)
    assert ckpt.iterations == 3

    second = Trainer(sample[0][None], annotation, tiny_config(iterations=2), resume=ckpt)
    # the weights and the optimizer moments are those of the first run
    for name, value in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name].cpu(), value.cpu())
    events = list(second.run())
    steps = [e for e in events if isinstance(e, Step)]
    assert [s.iteration for s in steps] == [4, 5]
    assert all(s.total == 5 for s in steps)
    final = events[-1].result
    assert final.iterations == 5
    step_counts = {float(s["step"]) for s in final.optimizer_state["state"].values()}
    assert step_counts == {5.0}
    assert [h["iteration"] for h in final.history] == [2, 3, 4, 5]


def test_resume_refuses_a_model_for_other_images(sample, annotation):
    ckpt = run_to_completion(
        Trainer(sample[0][None], annotation, tiny_config(iterations=1)).run()
    ).result
    two_channels = np.stack([sample[0], sample[0]])
    with pytest.raises(ValueError, match="1-channel"):
        Trainer(two_channels, annotation, tiny_config(), resume=ckpt)


def test_same_seed_same_losses(sample, annotation):
    def losses(seed):
        cfg = tiny_config(iterations=4, seed=seed)
        return [
            e.loss for e in Trainer(sample[0][None], annotation, cfg).run() if isinstance(e, Step)
        ]

    a, b = losses(3), losses(3)
    assert a == b
    assert losses(4) != a


def test_instance_task_has_three_outputs(sample):
    ann = sparsify(sample[2], fraction=0.3, seed=0)
    cfg = tiny_config(task="instances", iterations=2)
    cfg.class_names = ["cell"]
    events = list(Trainer(sample[0][None], ann, cfg).run())
    ckpt = events[-1].result
    assert ckpt.task == "instances"
    assert ckpt.num_outputs == 3
    assert ckpt.class_names == ["cell"]
    model = ckpt.build_model()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, *SHAPE)).shape == (1, 3, *SHAPE)
    val = [e for e in events if isinstance(e, Validation)][-1]
    assert set(val.dice) == {"interior", "boundary"}
    assert val.mean_dice == val.dice["interior"]


def test_preview_of_the_requested_slice(sample, annotation):
    trainer = Trainer(sample[0][None], annotation, tiny_config(iterations=2, preview_seconds=0))
    with pytest.raises(ValueError, match="outside"):
        trainer.set_preview(1, SHAPE[1])
    trainer.set_preview(1, 5)
    previews = [e for e in trainer.run() if isinstance(e, Preview)]
    assert previews
    p = previews[0]
    assert (p.axis, p.index) == (1, 5)
    assert p.probabilities.shape == (3, SHAPE[0], SHAPE[2])
    assert p.probabilities.dtype == np.float32
    np.testing.assert_allclose(p.probabilities.sum(axis=0), 1.0, atol=1e-4)


def test_no_preview_unless_asked(sample, annotation):
    cfg = tiny_config(iterations=2, preview_seconds=0)
    assert not any(isinstance(e, Preview) for e in Trainer(sample[0][None], annotation, cfg).run())


def test_explicit_validation_volume(sample, annotation):
    image, semantic, _ = sample
    cfg = tiny_config(iterations=2)
    cfg.class_names = ["bright", "textured"]
    trainer = Trainer(image, annotation, cfg, validation=(image[None], semantic))
    vals = [e for e in trainer.run() if isinstance(e, Validation)]
    assert set(vals[-1].dice) == {"bright", "textured"}
    assert vals[-1].loss is not None
    assert vals[-1].loss > 0


def test_2d_multichannel_training():
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 36), np.uint8)
    truth[8:20, 6:18] = 1
    truth[24:34, 20:32] = 2
    image = np.stack([truth * 1.0 + rng.normal(0, 0.2, truth.shape), rng.normal(size=truth.shape)])
    ann = np.zeros(truth.shape, np.uint8)
    ann[::4] = truth[::4] + 1
    cfg = tiny_config(iterations=3)
    cfg.data.patch_size = (16, 16)
    ckpt = run_to_completion(Trainer(image.astype(np.float32), ann, cfg).run()).result
    assert ckpt.config.model.spatial_dims == 2
    assert ckpt.config.model.in_channels == 2
    assert ckpt.config.model.pool == [[2, 2]]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda a: np.zeros_like(a), "empty"),
        (lambda a: np.where(a > 0, 1, 0).astype(a.dtype), "background only"),
        (lambda a: a[:, :, :-1], "does not match"),
        (lambda a: a.astype(np.float32) + 0.5, "whole numbers"),
    ],
)
def test_bad_annotations_are_explained(sample, annotation, mutate, needle):
    with pytest.raises(ValueError, match=needle):
        Trainer(sample[0][None], mutate(annotation), tiny_config())


@pytest.mark.slow
def test_learns_from_ten_percent_of_slices():
    """A small network trained on 10 % of the slices per axis segments the whole volume."""
    from napari_unetseg.core.inference import predict_volume
    from napari_unetseg.core.metrics import semantic_metrics

    image, semantic, _ = make_sample(shape=(32, 64, 64), seed=0)
    ann = sparsify(semantic, fraction=0.1, seed=0)
    cfg = Config()
    cfg.model.base_width = 8
    cfg.model.depth = 3
    cfg.data.patch_size = (24, 48, 48)
    cfg.data.validation_fraction = 0.0
    cfg.train.iterations = 250
    cfg.train.batch_size = 2
    cfg.train.device = "cpu"
    ckpt = run_to_completion(Trainer(image[None], ann, cfg).run()).result
    pred = predict_volume(ckpt, image[None])
    res = semantic_metrics(pred.labels, semantic)
    dice = [r["dice"] for r in res.values()]
    assert len(dice) == 2
    assert np.mean(dice) >= 0.85, res
    assert min(dice) >= 0.75, res


def _losses_and_infos(sample, annotation, **train):
    cfg = tiny_config(iterations=3, validate_every=10, **train)
    events = list(Trainer(sample[0][None], annotation, cfg).run())
    losses = [e.loss for e in events if isinstance(e, Step)]
    infos = [e for e in events if isinstance(e, Info)]
    return losses, infos, events[-1].result


def test_compile_that_fails_falls_back_to_the_eager_network(sample, annotation, monkeypatch):
    eager, _, _ = _losses_and_infos(sample, annotation)

    class Broken:
        def __init__(self, module):
            self.module = module

        def __call__(self, x):
            raise RuntimeError("no C++ compiler found\nlong trace")

    monkeypatch.setattr(torch, "compile", Broken)
    losses, infos, ckpt = _losses_and_infos(sample, annotation, compile=True)
    warnings = [i for i in infos if i.level == "warning"]
    assert len(warnings) == 1
    assert "compiling failed (RuntimeError: no C++ compiler found)" in warnings[0].message
    assert losses == eager  # the same steps, run eagerly
    assert ckpt.iterations == 3


@pytest.mark.slow
@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="torch.compile needs a C++ compiler on the CPU",
)
def test_compiled_training_step_matches_the_eager_one(sample, annotation):
    eager, _, ref = _losses_and_infos(sample, annotation)
    losses, infos, ckpt = _losses_and_infos(sample, annotation, compile=True)
    assert any("torch.compile" in i.message for i in infos)
    assert not [i for i in infos if i.level == "warning"], [i.message for i in infos]
    np.testing.assert_allclose(losses, eager, rtol=1e-3)
    # the checkpoint holds the plain module's weights, without the compiler's prefix
    assert set(ckpt.state_dict) == set(ref.state_dict)


@pytest.mark.slow
def test_learns_across_cases():
    """Trained on two sparsely annotated volumes, the network segments a third, unseen one."""
    from napari_unetseg.core.cases import Case
    from napari_unetseg.core.inference import predict_volume
    from napari_unetseg.core.metrics import semantic_metrics

    volumes = [make_sample(shape=(32, 64, 64), seed=seed)[:2] for seed in (11, 12, 13)]
    cases = [
        Case(name=f"s{i}", image=image[None], annotation=sparsify(truth, fraction=0.1, seed=i))
        for i, (image, truth) in enumerate(volumes[:2])
    ]
    cfg = Config()
    cfg.model.base_width = 8
    cfg.model.depth = 3
    cfg.data.patch_size = (16, 48, 48)
    cfg.data.validation_fraction = 0.0
    cfg.train.iterations = 150
    cfg.train.batch_size = 2
    cfg.train.device = "cpu"
    ckpt = run_to_completion(Trainer(config=cfg, cases=cases).run()).result
    image, truth = volumes[2]
    pred = predict_volume(ckpt, image[None])
    res = semantic_metrics(pred.labels, truth)
    dice = [r["dice"] for r in res.values()]
    assert len(dice) == 2
    assert np.mean(dice) > 0.7, res


def test_resume_without_normalisation_and_a_closed_trainer_are_refused(sample, annotation):
    trainer = Trainer(sample[0][None], annotation, tiny_config(iterations=1))
    ckpt = run_to_completion(trainer.run()).result
    bare = dataclasses.replace(ckpt, normalizer=None)
    with pytest.raises(ValueError, match="no normalisation"):
        Trainer(sample[0][None], annotation, tiny_config(), resume=bare)
    trainer.close()
    with pytest.raises(RuntimeError, match="closed"):
        trainer.set_preview(0, 1)
    with pytest.raises(RuntimeError, match="closed"):
        list(trainer.run())


def test_validation_lays_windows_out_as_prediction(sample, annotation, monkeypatch):
    """Validation predicts with the window ``predict`` would take for the same image (the
    patch grown along short axes), not the bare training patch: the Dice it reports is
    the one a prediction gets, and it computes fewer windows."""
    import napari_unetseg.core.inference as inference_pkg
    from napari_unetseg.core.inference import count_windows, prediction_window

    seen = []
    original = inference_pkg.sliding_window

    def spy(model, image, window, *args, **kwargs):
        seen.append((tuple(image.shape[1:]), tuple(window)))
        return original(model, image, window, *args, **kwargs)

    monkeypatch.setattr(inference_pkg, "sliding_window", spy)
    cfg = tiny_config(iterations=2)
    trainer = Trainer(sample[0][None], annotation, cfg)
    vals = [e for e in trainer.run() if isinstance(e, Validation)]
    assert vals
    assert seen
    ckpt = trainer.checkpoint()
    overlap = cfg.infer.overlap
    for shape, window in seen:
        expected = prediction_window(ckpt, shape, overlap, trainer.model.divisor)
        assert window == tuple(min(w, s) for w, s in zip(expected, shape))
    # on this volume the grown window covers it at once; the bare patch takes 8 windows
    assert seen[0] == (SHAPE, SHAPE)
    assert count_windows(SHAPE, cfg.data.patch_size, overlap) == 8
