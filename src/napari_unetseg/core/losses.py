"""Loss for sparse annotations: cross-entropy with an ignore index plus soft Dice.

Only annotated voxels (target != ``ignore_index``) take part: changing the logits of an
unannotated voxel changes neither the loss nor any gradient, as in the sparse-annotation
training of the 3D U-Net (Cicek et al., 2016).
"""

from __future__ import annotations

import torch
from torch import nn

from .annotations import IGNORE_INDEX


class SparseCEDiceLoss(nn.Module):
    """``ce_weight * CE + dice_weight * (1 - soft Dice)`` over annotated voxels.

    * Cross-entropy: mean over the annotated voxels of the batch.
    * Soft Dice: "batch Dice" as in nnU-Net: intersection and sums are pooled over the
      whole batch and all annotated voxels, per class, with a small smoothing term
      (1e-5). It is averaged over the FOREGROUND classes (1..K-1) that occur among the
      annotated voxels of the batch; a batch without annotated foreground has no Dice term
      (the cross-entropy still penalises false positives there). Averaging only over
      present classes keeps a class that is absent from a patch from pulling its
      probability to zero everywhere with a large, noisy gradient.

    Softmax and sums run in float32 even under autocast (bf16/fp16), so the loss is safe
    with mixed precision.

    Args:
        ce_weight: weight of the cross-entropy term (>= 0).
        dice_weight: weight of the Dice term (>= 0).
        ignore_index: target value of unannotated voxels.
        smooth: smoothing term of the Dice ratio.
    """

    def __init__(
        self,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight == 0:
            raise ValueError("ce_weight and dice_weight must be >= 0 and not both 0")
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.ignore_index = int(ignore_index)
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` (B, K, *spatial) against ``target`` (B, *spatial) int64.

        Returns:
            A float32 scalar. Without any annotated voxel: a zero that still has a
            ``grad_fn`` (so ``backward()`` works and gives zero gradients).
        """
        if logits.ndim < 3 or target.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(
                f"logits (B, K, *spatial) {tuple(logits.shape)} and target (B, *spatial) "
                f"{tuple(target.shape)} do not match"
            )
        if target.dtype != torch.int64:
            target = target.long()
        num_classes = logits.shape[1]
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            mask = target != self.ignore_index
            n_annotated = mask.sum()
            if int(n_annotated) == 0:
                return logits.sum() * 0.0
            bad = mask & ((target < 0) | (target >= num_classes))
            if bool(bad.any()):
                found = torch.unique(target[bad]).tolist()[:5]
                raise ValueError(
                    f"target values must be {self.ignore_index} (ignored) or in "
                    f"[0, {num_classes - 1}] for {num_classes} output channels, found {found}"
                )
            # one log-softmax serves both terms
            logp = torch.log_softmax(logits, dim=1)
            safe_target = torch.where(mask, target, torch.zeros_like(target))
            logp_t = logp.gather(1, safe_target.unsqueeze(1)).squeeze(1)  # (B, *spatial)
            logp_t = torch.where(mask, logp_t, torch.zeros_like(logp_t))
            loss = logits.new_zeros(())
            if self.ce_weight:
                loss = loss + self.ce_weight * (-logp_t.sum() / n_annotated)
            if self.dice_weight:
                loss = loss + self.dice_weight * self._dice_loss(logp, logp_t, safe_target, mask)
        return loss

    def _dice_loss(
        self,
        logp: torch.Tensor,
        logp_t: torch.Tensor,
        safe_target: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """1 - batch soft Dice, averaged over the foreground classes present.

        ``logp`` (B, K, *spatial) log-probabilities; ``logp_t`` (B, *spatial) the
        log-probability of the target class (0 where ignored); ``safe_target`` the target
        with ignored voxels set to 0; ``mask`` the annotated voxels.
        """
        num_classes = logp.shape[1]
        m = mask.to(logp.dtype)
        probs = torch.exp(logp) * m.unsqueeze(1)
        dims = [0, *range(2, logp.ndim)]
        pred_sum = probs.sum(dims)  # (K,)
        p_t = torch.exp(logp_t) * m  # probability of the true class, 0 where ignored
        flat_t = safe_target.reshape(-1)
        intersection = logp.new_zeros(num_classes).scatter_add(0, flat_t, p_t.reshape(-1))
        true_sum = torch.bincount(flat_t, weights=m.reshape(-1), minlength=num_classes)
        true_sum = true_sum.to(logp.dtype)
        dice = (2 * intersection + self.smooth) / (pred_sum + true_sum + self.smooth)
        present = true_sum[1:] > 0
        if not bool(present.any()):
            return probs.sum() * 0.0
        return 1.0 - dice[1:][present].mean()
