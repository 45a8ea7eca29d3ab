"""A non-finite step is skipped and recovered from, deterministically forced here."""

import numpy as np
import pytest
import torch

from napari_unetseg.core.config import Config
from napari_unetseg.core.events import Info, Step, run_to_completion
from napari_unetseg.core.sample import make_sample
from napari_unetseg.core.training import Trainer


class _NanGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def _trainer(precision, iterations=6):
    from unetseg_testing import tiny_settings

    image, semantic, _ = make_sample(shape=(10, 24, 20), seed=1)
    cfg = Config.from_dict(tiny_settings(train={"iterations": iterations, "precision": precision}))
    return Trainer(image[None], semantic.astype(np.int64) + 1, cfg)


def _poison(trainer, bad_calls, kind):
    real, calls = trainer.loss_fn, {"n": 0}

    def loss_fn(logits, target):
        calls["n"] += 1
        loss = real(logits, target)
        if calls["n"] in bad_calls:
            return loss * float("nan") if kind == "loss" else _NanGrad.apply(loss)
        return loss

    trainer.loss_fn = loss_fn


def _finite_weights(trainer):
    return all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_nan_loss_under_bfloat16_switches_to_float32_and_training_goes_on():
    trainer = _trainer("bfloat16")
    _poison(trainer, {2}, "loss")
    events = list(trainer.run())
    warnings = [e.message for e in events if isinstance(e, Info) and e.level == "warning"]
    assert any("float32" in w and "iteration 2" in w for w in warnings)
    assert trainer.amp_dtype is None
    assert trainer.iteration == 6
    assert _finite_weights(trainer)
    assert trainer.guard.skipped == 1


def test_nan_gradient_in_float32_halves_the_learning_rate():
    trainer = _trainer("float32")
    _poison(trainer, {3}, "gradient")
    events = list(trainer.run())
    warnings = [e.message for e in events if isinstance(e, Info) and e.level == "warning"]
    assert any("learning rate halved" in w for w in warnings)
    assert _finite_weights(trainer)
    steps = [e for e in events if isinstance(e, Step)]
    assert trainer.guard.lr_scale == 0.5
    # after the bad step the scheduled rate is halved
    sched = Config.from_dict({}).train.learning_rate
    assert steps[-1].learning_rate < sched


def test_a_run_that_cannot_recover_stops_with_advice_that_fits():
    trainer = _trainer("float32", iterations=20)
    _poison(trainer, set(range(1, 100)), "loss")
    with pytest.raises(FloatingPointError) as err:
        run_to_completion(trainer.run())
    text = str(err.value)
    assert "float32" in text
    assert "use precision" not in text  # never advises the precision already in use
    assert "learning rate" in text
