"""The optimising half of the Trainer: network, optimizer, one training step, checkpoint.

A step draws a batch of patches (images ``(B, C, *patch)`` float32, targets
``(B, *patch)`` with ``IGNORE_INDEX`` on unannotated voxels), runs the network under
autocast, and updates the weights with AdamW; a step whose loss or gradient is not
finite is skipped (:class:`~.recovery.StepGuard`). On the CPU the 3D network runs in
``channels_last_3d`` memory layout; on CUDA float16 runs with loss scaling. Under torchrun
(:mod:`.ddp`) each rank draws its share of the batch and the network trains through
DistributedDataParallel; ``self.model`` stays the plain module (what is saved).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import torch

from . import ddp
from .annotations import IGNORE_INDEX
from .checkpoint import Checkpoint
from .config import Config
from .events import Info
from .optim import AdamW
from .recovery import StepGuard, gradient_norm

if TYPE_CHECKING:
    from .data import Normalizer
    from .losses import SparseCEDiceLoss
    from .model import UNet
    from .sampling import DatasetSampler


def _compile_failed(e: Exception) -> Info:
    first = (str(e).splitlines() or [""])[0][:200]
    return Info(
        f"compiling failed ({type(e).__name__}: {first}); training continues without it",
        level="warning",
    )


class Optimisation:
    """Network, optimizer and training step; mixed into :class:`~.training.Trainer`,
    which sets the attributes declared here."""

    config: Config
    settings: Config
    task: str
    class_names: list[str]
    channel_names: list[str]
    normalizer: Normalizer
    spacing: tuple[float, ...] | None
    device: torch.device
    amp_dtype: torch.dtype | None
    sampler: DatasetSampler | None
    iteration: int
    history: list[dict]
    model: UNet
    loss_fn: SparseCEDiceLoss
    scaler: torch.amp.GradScaler | None
    _step_model: Callable[..., Any]

    def _build_network(self, resume: Checkpoint | None) -> None:
        """Model (on the device), optimizer, loss, loss scaler and step guard; from
        ``resume`` the weights and optimizer state when given."""
        from .losses import SparseCEDiceLoss
        from .model import UNet

        cfg = self.config
        torch.manual_seed(int(cfg.train.seed))
        self.model = UNet(cfg.model)
        if resume is not None:
            self.model.load_state_dict(resume.state_dict)
        self.model.place(self.device)  # channels-last on the CPU: the network converts inputs
        # the network as the training step calls it: in DistributedDataParallel under
        # torchrun, compiled on request (validation and previews keep the eager module,
        # which shares the weights)
        self._eager_step = ddp.wrap(self.model, self.device)
        self._step_model = self._eager_step
        self._compile_pending = False
        self._notes: list[Info] = []
        if cfg.train.compile:
            try:
                self._step_model = torch.compile(self._eager_step)
                self._compile_pending = True
            except Exception as e:  # e.g. a Python version torch.compile does not support
                self._notes.append(_compile_failed(e))
        # AdamW as torch.optim's, without its 2.6-3.1 s import of torch._dynamo (.optim)
        self.optimizer = AdamW(
            self.model.parameters(),
            lr=cfg.train.learning_rate,
            weight_decay=cfg.train.weight_decay,
        )
        if resume is not None and resume.optimizer_state is not None:
            try:
                self.optimizer.load_state_dict(resume.optimizer_state)
            except (ValueError, KeyError) as e:
                raise ValueError(
                    f"the optimizer state of the resumed model is damaged: {e}"
                ) from e
        self.loss_fn = SparseCEDiceLoss(cfg.train.ce_weight, cfg.train.dice_weight)
        self.scaler = None
        self.guard = StepGuard(self.amp_dtype)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            if self.amp_dtype == torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")

    def checkpoint(self) -> Checkpoint:
        """The current model as a Checkpoint (weights and optimizer state copied to the CPU)."""
        state = {
            k: v.detach().to("cpu", copy=True).contiguous()
            for k, v in self.model.state_dict().items()
        }
        opt = self.optimizer.state_dict()
        opt_copy = {
            "state": {
                pid: {
                    key: (v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v)
                    for key, v in entry.items()
                }
                for pid, entry in opt["state"].items()
            },
            "param_groups": [dict(g) for g in opt["param_groups"]],
        }
        return Checkpoint(
            config=self.config.copy(),
            state_dict=state,
            normalizer=self.normalizer,
            spacing=self.spacing,
            class_names=list(self.class_names),
            task=self.task,
            iterations=self.iteration,
            optimizer_state=opt_copy,
            history=[dict(h) for h in self.history],
            settings=self.settings.copy(),
            channel_names=list(self.channel_names),
        )

    def _autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _compiled_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The training forward pass; if compiling fails (no C++ compiler, an operation
        the compiler does not support), training goes on with the eager network and an
        Info says so."""
        if not self._compile_pending:
            return self._step_model(x)
        try:
            logits = self._step_model(x)
        except Exception as e:  # torch.compile's errors have no common base class
            self._step_model = self._eager_step
            self._notes.append(_compile_failed(e))
            logits = self._eager_step(x)
        self._compile_pending = False
        return logits

    def _train_step(self) -> tuple[float, int]:
        """One optimisation step; returns (loss, annotated voxels in the batch), over all
        ranks under torchrun."""
        if self.sampler is None:
            raise RuntimeError("the Trainer is closed; make a new one to train")
        x_np, y_np = self.sampler.sample(ddp.local_batch(self.config.train.batch_size))
        x = torch.from_numpy(x_np).to(self.device, non_blocking=True)
        y = torch.from_numpy(y_np).to(self.device, non_blocking=True)
        self.model.train()
        with self._autocast():
            logits = self._compiled_forward(x)
        loss = self.loss_fn(logits.float(), y)
        annotated = int((y_np != IGNORE_INDEX).sum())
        value, finite = float(loss.detach()), self.guard.finite(loss)
        if ddp.active():  # every rank skips, or none: a lone skip would stall the others
            total, annotated_all, bad = ddp.sum_stats([value, annotated, 0 if finite else 1])
            value, annotated, finite = total / ddp.world_size(), int(annotated_all), bad == 0
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:  # float16 on CUDA: the scaler skips bad steps itself
            self.scaler.scale(loss).backward()
            # GradScaler only reads param_groups and calls step() (tests/core/test_optim.py)
            self.scaler.step(self.optimizer)  # type: ignore[arg-type]
            self.scaler.update()
            return value, annotated
        if not finite:
            self.amp_dtype = self.guard.bad(self.iteration + 1, "loss")
            return value, annotated
        loss.backward()
        if not self.guard.finite(gradient_norm(self.model.parameters())):
            self.optimizer.zero_grad(set_to_none=True)
            self.amp_dtype = self.guard.bad(self.iteration + 1, "gradient")
            return value, annotated
        self.guard.ok()
        self.optimizer.step()
        return value, annotated
