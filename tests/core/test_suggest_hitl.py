"""Human in the loop in the core: suggestions with progress events, dropping slices
painted since, the edit that accepts a predicted slice, and the fine-tuning learning
rate of a resumed run."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unetseg.core.config import Config
from napari_unetseg.core.events import Done, Info, Progress, Step
from napari_unetseg.core.suggest import Suggestion, still_open
from napari_unetseg.core.suggest_model import accepted_plane, suggest_events
from napari_unetseg.core.training_setup import apply_finetune_lr

SHAPE = (17, 33, 35)


@pytest.fixture(scope="module")
def tiny_model():
    from unetseg_testing import tiny_slice_model

    return tiny_slice_model(SHAPE)


def test_suggest_events_report_progress_then_the_suggestions(tiny_model):
    ckpt, image, ann, _ = tiny_model
    events = list(suggest_events(ckpt, image, ann, top=3, method="entropy"))
    assert isinstance(events[-1], Done)
    picks = events[-1].result
    assert 1 <= len(picks) <= 3
    assert all(isinstance(s, Suggestion) for s in picks)
    stages = {e.stage for e in events if isinstance(e, Progress)}
    assert {"predicting", "ranking slices"} <= stages


def test_suggest_events_tta_predicts_each_flip(tiny_model):
    ckpt, image, ann, _ = tiny_model
    events = list(suggest_events(ckpt, image, ann, top=2, method="tta"))
    stages = {e.stage for e in events if isinstance(e, Progress)}
    assert {"predicting flipped z", "predicting flipped y", "predicting flipped x"} <= stages
    assert events[-1].result


def test_suggest_events_refuse_another_channel_count(tiny_model):
    ckpt, image, ann, _ = tiny_model
    two = np.stack([image, image])
    with pytest.raises(ValueError, match=r"trained on 1 channel\(s\) but the image holds 2"):
        list(suggest_events(ckpt, two, ann, method="entropy"))


def test_suggest_events_cancelled_gives_no_suggestion(tiny_model):
    from napari_unetseg.core.events import CancelToken

    ckpt, image, ann, _ = tiny_model
    token = CancelToken()
    token.cancel()
    done = list(suggest_events(ckpt, image, ann, method="entropy", cancel=token))[-1]
    assert isinstance(done, Done)
    assert done.cancelled
    assert done.result == []


def test_still_open_drops_slices_painted_since():
    ann = np.zeros(SHAPE, np.uint8)
    picks = [Suggestion(0, 5, 1.0, "a"), Suggestion(1, 10, 0.5, "b"), Suggestion(2, 3, 0.2, "c")]
    assert still_open(ann, picks) == picks
    ann[5] = 1  # z = 5 painted as a whole
    ann[:, :, 3][ann[:, :, 3] == 0] = 1  # x = 3 complete (its z = 5 row already was)
    assert still_open(ann, picks) == [picks[1]]
    ann2 = np.zeros(SHAPE, np.uint8)
    ann2[5, 8:13, 4:9] = 2  # a blob painted in z = 5 crosses y = 10: y = 10 stays open
    assert still_open(ann2, picks) == picks[1:]


def test_accepted_plane_fills_unannotated_voxels_only():
    ann = np.zeros((4, 5), np.uint8)
    ann[0, 0] = 3  # painted by the user
    pred = np.zeros((4, 5), np.uint8)
    pred[:2, :2] = 1
    hits, values = accepted_plane(ann, pred)
    new = ann.copy()
    new[hits] = values
    assert new[0, 0] == 3  # kept
    assert new[1, 1] == 2  # class 1 -> annotation 2
    assert new[3, 4] == 1  # background -> annotation 1
    assert (new > 0).all()
    hits, values = accepted_plane(ann, pred, overwrite=True)
    new = ann.copy()
    new[hits] = values
    assert new[0, 0] == 2
    with pytest.raises(ValueError, match="prediction's slice has shape"):
        accepted_plane(ann, pred[:3])


def test_apply_finetune_lr_scales_the_peak():
    cfg = Config()
    cfg.train.learning_rate = 0.01
    note = apply_finetune_lr(cfg)
    assert cfg.train.learning_rate == pytest.approx(0.002)
    assert isinstance(note, Info)
    assert "0.002" in note.message
    cfg = Config()
    cfg.train.finetune_lr_factor = 1.0
    apply_finetune_lr(cfg)
    assert cfg.train.learning_rate == pytest.approx(Config().train.learning_rate)
    with pytest.raises(ValueError, match="finetune_lr_factor"):
        Config.from_dict({"train": {"finetune_lr_factor": 1.5}}).validate()


def test_resumed_run_trains_at_the_finetune_learning_rate(tiny_model):
    from napari_unetseg.core.training import Trainer

    ckpt, image, ann, cfg = tiny_model
    cfg = cfg.copy()
    cfg.train.iterations = 2
    events = list(Trainer(image[None], ann, cfg, resume=ckpt).run())
    steps = [e for e in events if isinstance(e, Step)]
    assert [s.iteration for s in steps] == [3, 4]
    peak = cfg.train.learning_rate * cfg.train.finetune_lr_factor
    assert max(s.learning_rate for s in steps) <= peak * (1 + 1e-6)
    assert any("fine-tune factor" in e.message for e in events if isinstance(e, Info))
    assert events[-1].result.iterations == 4


def test_resumed_run_warms_up_briefly(tiny_model):
    from napari_unetseg.core.training import Trainer

    ckpt, image, ann, cfg = tiny_model
    cfg = cfg.copy()
    cfg.train.iterations = 60  # warm-up: 5 % of the steps, at most 10
    cfg.train.validate_every = 1000
    trainer = Trainer(image[None], ann, cfg, resume=ckpt)
    rates = []
    for event in trainer.run():
        if isinstance(event, Step):
            rates.append(event.learning_rate)
            if len(rates) == 4:
                trainer.cancel.cancel()
    assert rates[0] < rates[1] < rates[2]  # rising: a warm-up, not the peak at once
