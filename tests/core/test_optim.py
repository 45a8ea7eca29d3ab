"""The training loop's AdamW: torch.optim.AdamW's numbers and state dicts, without its
import of torch._dynamo."""

import subprocess
import sys
import textwrap

import pytest
import torch

from napari_unetseg.core.config import Config
from napari_unetseg.core.model import UNet
from napari_unetseg.core.optim import AdamW


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = Config()
    cfg.model.base_width, cfg.model.depth, cfg.model.num_classes = 4, 2, 3
    model = UNet(cfg.model)
    model.use_channels_last(True)  # as the trainer runs it on the CPU
    return model


def _steps(model, opt, n, seed=1, lr=None, skip_bias_at=None):
    gen = torch.Generator().manual_seed(seed)
    for i in range(n):
        if lr is not None:
            opt.param_groups[0]["lr"] = lr * (i + 1)
        x = torch.randn(2, 1, 8, 8, 8, generator=gen)
        loss = model(x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if skip_bias_at == i:  # a parameter without a gradient at one step
            model.head.bias.grad = None
        opt.step()


def _same(a, b, tol=1e-6):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=tol, rtol=1e-5), name


@pytest.mark.parametrize("skip", [None, 1])
def test_steps_match_torch_adamw(skip):
    ours, ref = _model(), _model()
    kw = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=1e-3)
    a, b = AdamW(ours.parameters(), **kw), torch.optim.AdamW(ref.parameters(), **kw)
    _steps(ours, a, 5, lr=2e-3, skip_bias_at=skip)
    _steps(ref, b, 5, lr=2e-3, skip_bias_at=skip)
    _same(ours, ref)
    with torch.no_grad():
        moved = sum(
            float((p - q).abs().sum()) for p, q in zip(ours.parameters(), _model().parameters())
        )
    assert moved > 1e-3  # the updates did something
    steps = {int(s["step"]) for s in a.state.values()}
    assert steps == ({5} if skip is None else {4, 5})


def test_state_dicts_load_both_ways():
    """torch's state continues in ours and ours in torch's, with the same numbers as
    an unbroken torch run."""
    kw = dict(lr=5e-3, weight_decay=1e-2)
    ref = _model()
    ref_opt = torch.optim.AdamW(ref.parameters(), **kw)
    _steps(ref, ref_opt, 6)

    first = _model()
    first_opt = torch.optim.AdamW(first.parameters(), **kw)
    _steps(first, first_opt, 2)
    mid = _model()
    mid.load_state_dict(first.state_dict())
    mid_opt = AdamW(mid.parameters(), **kw)
    mid_opt.load_state_dict(first_opt.state_dict())
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):  # the same batches as steps 1-2 of _steps (seed 1): replay them
        torch.randn(2, 1, 8, 8, 8, generator=gen)
    for _ in range(2):
        loss = mid(torch.randn(2, 1, 8, 8, 8, generator=gen)).square().mean()
        mid_opt.zero_grad()
        loss.backward()
        mid_opt.step()
    last = _model()
    last.load_state_dict(mid.state_dict())
    last_opt = torch.optim.AdamW(last.parameters(), **kw)
    last_opt.load_state_dict(mid_opt.state_dict())
    for _ in range(2):
        loss = last(torch.randn(2, 1, 8, 8, 8, generator=gen)).square().mean()
        last_opt.zero_grad()
        loss.backward()
        last_opt.step()
    _same(last, ref)
    assert (
        mid_opt.state_dict()["param_groups"][0].keys()
        == ref_opt.state_dict()["param_groups"][0].keys()
    )


def test_a_state_for_other_parameters_is_refused_and_nothing_changes():
    model = _model()
    opt = AdamW(model.parameters(), lr=1e-3)
    _steps(model, opt, 1)
    before = {k: v.clone() for k, v in opt.state[model.head.bias].items()}
    other = AdamW(_model().encoder[0].parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="parameters, the network has"):
        opt.load_state_dict(other.state_dict())
    bad = opt.state_dict()
    first = next(iter(bad["state"]))
    bad["state"][first] = dict(bad["state"][first], exp_avg=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="has shape"):
        opt.load_state_dict(bad)
    amsgrad = torch.optim.AdamW(model.parameters(), lr=1e-3, amsgrad=True)
    with pytest.raises(ValueError, match="saved with amsgrad"):
        opt.load_state_dict(amsgrad.state_dict())
    assert all(torch.equal(v, opt.state[model.head.bias][k]) for k, v in before.items())
    with pytest.raises(ValueError, match="no parameters"):
        AdamW([])


def test_training_never_imports_the_compiler():
    """The point of the class: a Trainer runs without importing torch._dynamo (2.6-3.1 s
    on a 2-core CPU before the first step)."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from napari_unetseg.core.config import Config
        from napari_unetseg.core.training import train
        from napari_unetseg.core.sample import make_sample
        image, semantic, _ = make_sample((16, 32, 32), seed=0)
        cfg = Config()
        cfg.model.base_width, cfg.model.depth, cfg.train.iterations = 4, 2, 3
        cfg.train.device = "cpu"
        cfg.train.validate_every = 2
        ckpt = train(image, np.where(semantic > 0, semantic + 1, 1), cfg)
        assert ckpt.iterations == 3 and ckpt.optimizer_state["state"]
        print("dynamo" if "torch._dynamo" in sys.modules else "clean")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "clean", out.stderr[-2000:]


def test_works_under_a_grad_scaler():
    """float16 training on CUDA steps through torch.amp.GradScaler; its CPU twin checks
    the same calls (unscale, the inf check, step) on this class."""
    results = []
    for cls in (AdamW, torch.optim.AdamW):
        model = _model()
        opt = cls(model.parameters(), lr=1e-2)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        gen = torch.Generator().manual_seed(3)
        for _ in range(3):
            loss = model(torch.randn(2, 1, 8, 8, 8, generator=gen)).square().mean()
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        results.append(model)
    _same(*results)
    assert any(
        not torch.equal(p, q) for p, q in zip(results[0].parameters(), _model().parameters())
    )
