"""AdamW for the training loop, without the start-up cost of ``torch.optim``.

Creating any ``torch.optim`` optimizer imports ``torch._dynamo`` (its methods are wrapped
so that the compiler skips them). On a 2-core CPU that import takes 2.6-3.1 s, paid by the
first Train of every napari session and by every ``unetseg train`` run before the first
step: a tenth of a 30-second training budget. :class:`AdamW` computes the update of
``torch.optim.AdamW`` (decoupled weight decay, bias-corrected moments, no AMSGrad) with
torch's ``_foreach`` kernels and reads and writes torch's state-dict layout, so a model
saved by either optimizer continues with either (``tests/core/test_optim.py`` checks both
against ``torch.optim.AdamW``).

It is what :class:`~.training.Trainer` needs and no more: one parameter group, ``lr``
changed by the caller through ``param_groups``, ``zero_grad``, ``step``, ``state_dict`` and
``load_state_dict``; it also works under ``torch.amp.GradScaler`` (which only calls
``step`` and reads ``param_groups``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

#: Keys of torch's AdamW parameter group besides ``params`` (kept so that either
#: optimizer loads the other's state dict).
_GROUP_FLAGS: dict[str, Any] = {
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
    "decoupled_weight_decay": True,
}


class AdamW:
    """AdamW (Loshchilov and Hutter) over one group of parameters; see the module."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ):
        params = list(params)
        if not params:
            raise ValueError("the optimizer was given no parameters")
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(
                f"invalid AdamW setting: lr {lr}, betas {betas}, eps {eps}, "
                f"weight decay {weight_decay}"
            )
        self.param_groups: list[dict[str, Any]] = [
            {
                "params": params,
                "lr": float(lr),
                "betas": (float(betas[0]), float(betas[1])),
                "eps": float(eps),
                "weight_decay": float(weight_decay),
                **_GROUP_FLAGS,
            }
        ]
        #: per parameter: ``step`` (a float32 scalar tensor on the CPU, as torch keeps
        #: it), ``exp_avg`` and ``exp_avg_sq`` (shaped like the parameter)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    @property
    def params(self) -> list[torch.Tensor]:
        return list(self.param_groups[0]["params"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        group = self.param_groups[0]
        lr, (beta1, beta2) = float(group["lr"]), group["betas"]
        eps, decay = float(group["eps"]), float(group["weight_decay"])
        # parameters with the same step count (all of them, unless some had no gradient
        # at some step) are updated together
        by_step: dict[float, list[torch.Tensor]] = {}
        for p in self.params:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("AdamW does not support sparse gradients")
            st = self.state.get(p)
            if st is None:
                st = self.state[p] = {
                    "step": torch.tensor(0.0, dtype=torch.float32),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
            st["step"] += 1
            by_step.setdefault(float(st["step"]), []).append(p)
        for step, ps in by_step.items():
            grads = [g for g in (p.grad for p in ps) if g is not None]  # (all of them)
            avgs = [self.state[p]["exp_avg"] for p in ps]
            sqs = [self.state[p]["exp_avg_sq"] for p in ps]
            if decay != 0.0:
                torch._foreach_mul_(ps, 1.0 - lr * decay)
            torch._foreach_lerp_(avgs, grads, 1.0 - beta1)
            torch._foreach_mul_(sqs, beta2)
            torch._foreach_addcmul_(sqs, grads, grads, value=1.0 - beta2)
            step_size = lr / (1.0 - beta1**step)
            root = (1.0 - beta2**step) ** 0.5
            denom = torch._foreach_sqrt(sqs)
            torch._foreach_div_(denom, root)
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(ps, avgs, denom, value=-step_size)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: ``{"state": {index: {...}}, "param_groups": [{..., "params":
        [indices]}]}`` (tensors are the optimizer's own, not copies)."""
        params = self.params
        index = {id(p): i for i, p in enumerate(params)}
        state = {index[id(p)]: dict(st) for p, st in self.state.items() if id(p) in index}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(params)))
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict of this class or of ``torch.optim.AdamW`` for the same
        parameters; ``ValueError`` when it does not fit them (nothing is changed then)."""
        params = self.params
        groups = state_dict.get("param_groups")
        if not isinstance(groups, list) or len(groups) != 1:
            n = len(groups) if isinstance(groups, list) else "no"
            raise ValueError(f"the optimizer state has {n} parameter groups, not 1")
        saved = groups[0]
        for flag in ("amsgrad", "maximize"):
            if saved.get(flag):
                raise ValueError(
                    f"the optimizer state was saved with {flag}, which AdamW here lacks"
                )
        if len(saved.get("params", [])) != len(params):
            raise ValueError(
                f"the optimizer state is for {len(saved.get('params', []))} parameters, "
                f"the network has {len(params)}"
            )
        position = {pid: i for i, pid in enumerate(saved["params"])}
        new_state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for pid, entry in state_dict.get("state", {}).items():
            if pid not in position:
                raise ValueError(f"the optimizer state names an unknown parameter {pid!r}")
            p = params[position[pid]]
            out: dict[str, torch.Tensor] = {}
            for key in ("exp_avg", "exp_avg_sq"):
                value = entry[key]
                if tuple(value.shape) != tuple(p.shape):
                    raise ValueError(
                        f"the optimizer's {key} of parameter {pid} has shape "
                        f"{tuple(value.shape)}, the parameter {tuple(p.shape)}"
                    )
                out[key] = value.detach().to(device=p.device, dtype=p.dtype).clone()
            out["step"] = torch.as_tensor(entry["step"], dtype=torch.float32).detach().clone()
            new_state[p] = out
        group = {**self.param_groups[0], **{k: v for k, v in saved.items() if k != "params"}}
        group["betas"] = tuple(group["betas"])
        group["params"] = params
        self.param_groups = [group]
        self.state = new_state
