import pytest
import torch

from napari_unetseg.core.annotations import IGNORE_INDEX
from napari_unetseg.core.losses import SparseCEDiceLoss


def _batch(shape=(2, 3, 5, 6, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    ignored = torch.rand(target.shape, generator=g) < 0.6
    target[ignored] = IGNORE_INDEX
    return logits, target, ignored


@pytest.mark.parametrize(("ce", "dice"), [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0)])
@pytest.mark.parametrize("shape", [(2, 3, 5, 6, 7), (3, 2, 9, 11)])
def test_ignored_voxels_change_neither_loss_nor_gradient(ce, dice, shape):
    loss_fn = SparseCEDiceLoss(ce_weight=ce, dice_weight=dice)
    logits, target, ignored = _batch(shape)
    a = logits.clone().requires_grad_(True)
    la = loss_fn(a, target)
    la.backward()

    # new logits at ignored voxels, and another (valid) class written into the target there
    b_data = logits.clone()
    noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(7)) * 10
    ign = ignored.unsqueeze(1).expand_as(logits)
    b_data[ign] = noise[ign]
    b = b_data.requires_grad_(True)
    lb = loss_fn(b, target)
    lb.backward()

    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(a.grad, b.grad)
    assert torch.all(a.grad[ign] == 0)
    assert a.grad[~ign].abs().sum() > 0


def test_loss_matches_plain_cross_entropy_on_annotated_voxels():
    logits, target, ignored = _batch()
    loss = SparseCEDiceLoss(ce_weight=1.0, dice_weight=0.0)(logits, target)
    keep = ~ignored
    flat_logits = logits.movedim(1, -1)[keep]
    expected = torch.nn.functional.cross_entropy(flat_logits, target[keep])
    torch.testing.assert_close(loss, expected)


def test_dice_term_is_zero_for_a_perfect_prediction():
    _, target, _ = _batch()
    onehot = torch.nn.functional.one_hot(target.clamp(min=0), 3).movedim(-1, 1).float()
    loss = SparseCEDiceLoss(ce_weight=0.0, dice_weight=1.0)(onehot * 100.0, target)
    assert loss.item() == pytest.approx(0.0, abs=1e-4)
    wrong = SparseCEDiceLoss(ce_weight=0.0, dice_weight=1.0)(-onehot * 100.0, target)
    assert wrong.item() > 0.9


def test_all_ignored_batch_gives_zero_with_grad_fn():
    logits = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
    target = torch.full((2, 4, 5, 6), IGNORE_INDEX, dtype=torch.int64)
    loss = SparseCEDiceLoss()(logits, target)
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_background_only_batch_is_finite():
    logits = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    target = torch.zeros(1, 4, 4, 4, dtype=torch.int64)
    loss = SparseCEDiceLoss()(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


def test_bfloat16_logits_under_autocast_give_float32_loss():
    logits, target, _ = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = SparseCEDiceLoss()(logits.bfloat16(), target)
    assert loss.dtype == torch.float32
    ref = SparseCEDiceLoss()(logits.bfloat16().float(), target)
    torch.testing.assert_close(loss, ref)


def test_bad_targets_are_rejected():
    logits = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="output channels"):
        SparseCEDiceLoss()(logits, torch.full((1, 4, 4), 2))
    with pytest.raises(ValueError, match="do not match"):
        SparseCEDiceLoss()(logits, torch.zeros(1, 4, 5, dtype=torch.int64))


def test_dice_term_matches_an_explicit_formula():
    logits, target, ignored = _batch((2, 4, 5, 6, 7), seed=3)
    target[target == 2] = 1  # class 2 absent: it must not enter the average
    loss = SparseCEDiceLoss(ce_weight=0.0, dice_weight=1.0, smooth=1e-5)(logits, target)
    keep = ~ignored
    p = torch.softmax(logits, 1).movedim(1, -1)[keep]  # (N, K)
    t = target[keep]
    dices = []
    for k in (1, 3):
        inter = p[t == k, k].sum()
        dices.append((2 * inter + 1e-5) / (p[:, k].sum() + (t == k).sum() + 1e-5))
    torch.testing.assert_close(loss, 1 - torch.stack(dices).mean())
