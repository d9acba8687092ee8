"""The Learner: a training loop that reads top to bottom.

``fit`` is the loop; ``fit_one_cycle``, ``fit_clr`` and ``fit_sgdr`` are ``fit`` plus a
schedule. Everything a callback may touch is a plain attribute listed in the class
docstring; nothing is delegated or patched.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from onecycle import distributed as D
from onecycle import schedules as S
from onecycle.callbacks import (
    EVENTS,
    Callback,
    CancelBatch,
    CancelEpoch,
    CancelFit,
    GradientAccumulation,
    NonFiniteGuard,
    Recorder,
)
from onecycle.data.loader import to_device
from onecycle.errors import ConfigError, check_finite, check_int, check_positive
from onecycle.scheduler import Scheduler, ScheduleSpec, momentum_key

if TYPE_CHECKING:
    from onecycle.auto import AutoResult
    from onecycle.range_test import RangeTestResult

__all__ = ["Learner", "accuracy", "adamw", "check_device", "sgd"]

log = logging.getLogger(__name__)

LR = float | slice | Sequence[float]
LRMax = LR | Literal["auto"]
Schedules = Mapping[str, ScheduleSpec]

_NORM_TYPES = (
    nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
)  # fmt: skip


def sgd(params: Any, lr: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum 0.9 (the momentum is then cycled by ``fit_one_cycle``).

    Weight decay is left to the Learner (decoupled), so the optimizer's own is 0.
    """
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)


def adamw(params: Any, lr: float) -> torch.optim.Optimizer:
    """AdamW with fastai's defaults (betas 0.9/0.99, eps 1e-5); weight decay by the Learner."""
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.0)


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max equals the target class.

    >>> accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])).item()
    0.5
    """
    return (pred.argmax(dim=-1) == target).float().mean()


def check_device(name: str, value: torch.device | str) -> torch.device:
    """``value`` as a ``torch.device`` this process can use, else ConfigError: an unknown
    name (``"banana"``) or an accelerator this torch build or machine does not have.

    >>> check_device("device", "cpu")
    device(type='cpu')
    """
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(name, value, "a torch device: 'cpu', 'cuda', 'cuda:1', 'mps'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(name, value, "'cpu': this torch build or machine has no CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(name, value, f"a CUDA index < {torch.cuda.device_count()}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(name, value, "'cpu': MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps", "meta"):
        mod = getattr(torch, dev.type, None)  # xpu, ...: ask the backend
        if mod is None or not getattr(mod, "is_available", lambda: False)():
            raise ConfigError(name, value, f"'cpu': {dev.type} is not available here")
    return dev


def _default_splitter(model: nn.Module) -> list[list[nn.Parameter]]:
    return [list(model.parameters())]


class Learner:
    """Train ``model`` on ``train_data``, evaluate on ``valid_data``.

    Args:
        model: any ``nn.Module``; batches are ``(x, y)`` and the loss is
            ``loss_func(model(x), y)``.
        train_data, valid_data: any iterables of ``(x, y)`` batches with a length (a
            ``DataLoader`` or ``onecycle.data.Loader``). ``set_epoch(e)`` is called if present.
        loss_func: ``(pred, target) -> scalar tensor``.
        opt_func: ``(param_groups, lr) -> optimizer``. Default ``sgd`` (Nesterov, momentum
            0.9); ``adamw`` is the other built-in. Leave its own weight decay at 0.
        metrics: callables ``(pred, target) -> scalar tensor``, averaged over validation.
        cbs: callbacks used in every fit (a ``Recorder`` is always added, and a
            ``NonFiniteGuard`` unless ``cbs`` holds one).
        wd: decoupled weight decay ("true" wd, as AdamW/fastai): each step multiplies the
            weights by ``1 - lr * wd``. Not applied to biases and normalization
            parameters unless ``wd_bn_bias=True``.
        splitter: ``model -> list of parameter lists``, the param groups for
            discriminative LRs and ``freeze``. Default: one group.
        moms: default momentum cycle for ``fit_one_cycle``.
        train_bn: keep normalization layers trainable when frozen (fastai's default).
        device: where the model and batches live (default: where the model is).

    Under ``torchrun`` (a process group of several processes) the Learner wraps the model
    in DDP, shards ``onecycle.data.Loader`` data per rank and reduces losses and metrics
    across ranks: see ``onecycle.distributed``.

    Attributes callbacks read or set: ``model, opt, scheduler, loss_func, epoch, n_epoch,
    iter, n_iter, batch, pred, loss, loss_global, will_step, accumulate, autocast, scaler,
    valid_results, epoch_completed, step_values, recorder, fit_signature, run_config,
    lr_find_result, auto_result, auto_wd_result``.

    >>> import torch
    >>> from onecycle.data import Loader
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(512, 2, generator=g); y = (x[:, 0] > 0).long()
    >>> learn = Learner(torch.nn.Linear(2, 2), Loader(x, y, 64), Loader(x, y, 256),
    ...                 loss_func=torch.nn.functional.cross_entropy, metrics=[accuracy])
    >>> learn.fit_one_cycle(3, lr_max=0.5)
    >>> learn.recorder.rows[-1]["accuracy"] > 0.95
    True
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Iterable[Any],
        valid_data: Iterable[Any] | None = None,
        *,
        loss_func: Callable[[Any, Any], torch.Tensor],
        opt_func: Callable[[Any, float], torch.optim.Optimizer] = sgd,
        metrics: Sequence[Callable[[Any, Any], torch.Tensor]] = (),
        cbs: Sequence[Callback] = (),
        wd: float = 5e-4,
        wd_bn_bias: bool = False,
        splitter: Callable[[nn.Module], list[list[nn.Parameter]]] | None = None,
        moms: tuple[float, float, float] = (0.95, 0.85, 0.95),
        train_bn: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError("model", type(model).__name__, "a torch.nn.Module")
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError("model", type(model).__name__, "a model with trainable parameters")
        if not callable(loss_func):
            raise ConfigError("loss_func", loss_func, "a callable (pred, target) -> loss")
        _check_data("train_data", train_data)
        if valid_data is not None:
            _check_data("valid_data", valid_data)
        self.device = check_device("device", device) if device is not None else _model_device(model)
        self.model = model.to(self.device)
        self.train_data, self.valid_data = train_data, valid_data
        if not callable(opt_func):
            raise ConfigError("opt_func", opt_func, "a callable (param_groups, lr) -> optimizer")
        self.loss_func, self.opt_func = loss_func, opt_func
        if callable(metrics):  # metrics=accuracy: one metric, meant as [accuracy]
            metrics = [metrics]
        if isinstance(metrics, (str, bytes)) or not isinstance(metrics, Iterable) or not all(
            callable(m) for m in metrics
        ):  # fmt: skip
            raise ConfigError("metrics", metrics, "a list of callables (pred, target) -> value")
        self.metrics = list(metrics)
        self.wd = check_finite("wd", wd)
        if self.wd < 0:
            raise ConfigError("wd", wd, "a number >= 0")
        self.wd_bn_bias, self.train_bn = bool(wd_bn_bias), bool(train_bn)
        self.moms = moms
        self.splitter = splitter or _default_splitter
        self.param_groups = self._split()
        self.opt: torch.optim.Optimizer | None = None
        self.recorder = Recorder()
        # a NonFiniteGuard is always on; pass your own (check_grads=True) to configure it
        guard = [] if any(isinstance(c, NonFiniteGuard) for c in cbs) else [NonFiniteGuard()]
        self.cbs: list[Callback] = [*guard, self.recorder, *cbs]
        self._cb_table = self._bind(self.cbs)
        # loop state, readable by callbacks
        self.scheduler: Scheduler | None = None
        self.epoch = self.n_epoch = self.iter = self.n_iter = 0
        self.accumulate = 1
        self.will_step = False
        self.autocast: Callable[[], AbstractContextManager[Any]] = nullcontext
        self.scaler: torch.amp.GradScaler | None = None
        self.valid_results: dict[str, float] = {}
        self.lr_find_result: RangeTestResult | None = None
        self.auto_result: AutoResult | None = None  # what lr_max="auto" saw and chose
        self.auto_wd_result: AutoResult | None = None  # what wd="auto" saw and chose
        self.step_values: dict[str, list[float]] = {}  # hyper-parameters of the last step
        self.fit_signature = ""  # what a checkpoint must match to resume this fit
        self.run_config: dict[str, Any] = {}  # stored in checkpoints (the CLI's config)
        self.epoch_completed = False
        self.batch: Any = None
        self.pred: Any = None
        self.loss: torch.Tensor = torch.zeros(())
        self.loss_global: torch.Tensor = self.loss  # the loss averaged over ranks (DDP)
        self.ddp_model: nn.Module | None = None  # the DDP wrapper, under torch.distributed
        self._ddp_trainable: tuple[bool, ...] = ()

    # --- parameter groups, freezing, weight decay ------------------------------------------------

    def _split(self) -> list[list[nn.Parameter]]:
        groups = [list(g) for g in self.splitter(self.model)]
        seen: set[int] = set()
        for g in groups:
            for p in g:
                if id(p) in seen:
                    raise ConfigError("splitter", "a parameter in two groups", "disjoint groups")
                seen.add(id(p))
        if not groups or not all(groups):
            raise ConfigError("splitter", f"{len(groups)} groups", "non-empty parameter groups")
        norm = {id(p) for m in self.model.modules() if isinstance(m, _NORM_TYPES)
                for p in m.parameters(recurse=False)}  # fmt: skip
        self._norm_ids = norm
        return groups

    def trainable_params(self) -> list[nn.Parameter]:
        """Parameters that currently receive gradients."""
        return [p for g in self.param_groups for p in g if p.requires_grad]

    def freeze_to(self, n: int) -> None:
        """Freeze the first ``n`` param groups (negative counts from the end)."""
        n = check_int("n", n, minimum=-len(self.param_groups))
        n = n % len(self.param_groups) if n < 0 else min(n, len(self.param_groups))
        for i, group in enumerate(self.param_groups):
            for p in group:
                p.requires_grad_(i >= n or (self.train_bn and id(p) in self._norm_ids))

    def freeze(self) -> None:
        """Train only the last param group (the head), as fastai's ``freeze``."""
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Train every param group."""
        self.freeze_to(0)

    def _decay_params(self) -> list[list[nn.Parameter]]:
        out = []
        for group in self.param_groups:
            out.append([
                p for p in group
                if p.requires_grad
                and (self.wd_bn_bias or (p.ndim > 1 and id(p) not in self._norm_ids))
            ])  # fmt: skip
        return out

    def group_values(self, value: LR, name: str = "lr") -> list[float]:
        """One value per param group: a float for all, ``slice(lo, hi)`` spread geometrically
        from the first to the last group, ``slice(hi)`` as ``hi/10`` for all but the last
        (fastai's meaning), or a sequence with one value per group.
        """
        n = len(self.param_groups)
        if isinstance(value, slice):
            if value.step is not None or value.stop is None:
                raise ConfigError(name, value, "slice(hi) or slice(lo, hi)")
            hi = check_positive(name, value.stop)
            if value.start is None:
                return [hi / 10] * (n - 1) + [hi]
            lo = check_positive(name, value.start)
            if lo > hi:
                raise ConfigError(name, value, "slice(lo, hi) with lo <= hi (body LR to head LR)")
            if n == 1:
                return [hi]
            return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
        if isinstance(value, Sequence) and not isinstance(value, str):
            if len(value) != n:
                raise ConfigError(name, value, f"{n} values, one per param group")
            return [check_positive(name, v) for v in value]
        return [check_positive(name, value)] * n

    def _make_opt(self, lrs: list[float]) -> None:
        groups = [{"params": g, "lr": lr} for g, lr in zip(self.param_groups, lrs)]
        self.opt = self.opt_func(groups, lrs[-1])
        if any(g.get("weight_decay", 0) for g in self.opt.param_groups) and self.wd:
            log.warning("opt_func set its own weight_decay and the Learner adds wd=%g", self.wd)

    # --- several processes (torch.distributed) ----------------------------------------------------

    def _setup_distributed(self) -> None:
        """Under a process group: shard the data per rank, wrap the model in DDP (again if
        the trainable parameters changed, e.g. after ``unfreeze``), check that every rank
        runs the same number of batches."""
        if not D.is_distributed():
            return
        rank, world = D.rank(), D.world_size()
        self.train_data = _shard(self.train_data, rank, world, True, "train_data")
        if self.valid_data is not None:
            self.valid_data = _shard(self.valid_data, rank, world, False, "valid_data")
        trainable = tuple(p.requires_grad for p in self.model.parameters())
        if self.ddp_model is None or trainable != self._ddp_trainable:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DDP(self.model, device_ids=ids)  # rank 0's weights everywhere
            self._ddp_trainable = trainable
        counts = D.all_gather_object(len(self.train_data))  # type: ignore[arg-type]
        if len(set(counts)) > 1:
            raise ConfigError("train_data", f"batches per rank {counts}",
                              "the same number of batches on every rank")  # fmt: skip

    def _release_ddp(self) -> None:
        """Drop the DDP wrapper after each fit (the next fit wraps again): a script may
        then call ``dist.destroy_process_group()`` while this Learner lives; a DDP model
        alive past its group aborts some torch versions at exit."""
        if self.ddp_model is not None:
            self.ddp_model = None
            gc.collect()

    def _reduce_loss(self) -> None:
        if self.ddp_model is None or not D.is_distributed():
            self.loss_global = self.loss
            return
        red = self.loss.detach().float().reshape(1).clone()
        D.all_reduce_sum(red)
        self.loss_global = red[0] / D.world_size()

    # --- the loop ------------------------------------------------------------------------------

    def fit(
        self,
        n_epoch: int,
        lr: LR = 1e-2,
        *,
        schedules: Schedules | Callable[[int], Schedules] | None = None,
        wd: float | None = None,
        cbs: Sequence[Callback] = (),
        start_epoch: int = 0,
        reset_opt: bool = False,
        resume: str | Path | None = None,
        _total_steps: int | None = None,
    ) -> None:
        """Train for ``n_epoch`` epochs.

        ``lr`` sets the learning rate per group (float, slice or sequence) when no schedule
        gives it. ``schedules`` is ``{hyper: schedule}`` over the whole fit (progress 0 to 1
        over all its optimizer steps), or a function ``total_steps -> schedules`` for
        schedules that need the step count (CLR). ``start_epoch`` skips the first epochs,
        schedule included (resume at an epoch boundary, as fastai).

        ``resume``: a checkpoint file, a folder of them, or ``"auto"`` (the folder of the
        ``Checkpoint`` callback in use): continue from the newest good checkpoint, mid-epoch
        and mid-cycle, exactly (bit-identical on CPU with ``onecycle.data.Loader``). With
        no checkpoint there yet, training starts fresh (logged).
        """
        n_epoch = check_int("n_epoch", n_epoch)
        start_epoch = check_int("start_epoch", start_epoch, minimum=0)
        if start_epoch >= n_epoch:
            raise ConfigError("start_epoch", start_epoch, f"an integer < n_epoch={n_epoch}")
        wd_now = self.wd if wd is None else check_finite("wd", wd)
        if wd_now < 0:
            raise ConfigError("wd", wd, "a number >= 0")
        lrs = self.group_values(lr)
        if self.opt is None or reset_opt:
            self._make_opt(lrs)
        assert self.opt is not None
        for group in self.opt.param_groups:
            group["wd"] = wd_now  # decoupled, applied by the Learner; schedulable as "wd"
        self.n_epoch = n_epoch
        self._setup_distributed()
        extra = sorted(cbs, key=lambda c: c.order)
        self._cb_table = self._bind([*self.cbs, *extra])
        try:
            self._event("before_fit")
            self.n_iter = len(self.train_data)  # type: ignore[arg-type]
            steps_per_epoch = math.ceil(self.n_iter / self.accumulate)
            # the range test and probes (onecycle.auto) run a schedule over fewer steps
            total = _total_steps or n_epoch * steps_per_epoch
            spec = schedules(total) if callable(schedules) else schedules
            spec = dict(spec) if spec else {"lr": [S.const(v) for v in lrs]}
            self.scheduler = Scheduler(self.opt, spec, total)
            if start_epoch:
                self.scheduler.load_state_dict({"step": start_epoch * steps_per_epoch})
            self._decay = self._decay_params()
            self.fit_signature = (
                f"n_epoch={n_epoch}; total_steps={total}; accumulate={self.accumulate}; "
                f"schedules={spec!r}"
            )
            skip = 0
            if resume is not None:
                start_epoch, skip = self._resume(resume, extra)
            for self.epoch in range(start_epoch, n_epoch):
                self._do_epoch(skip if self.epoch == start_epoch else 0)
        except CancelFit:
            pass
        finally:
            self._event("after_fit")
            self._cb_table = self._bind(self.cbs)
            self._release_ddp()

    def _resume(self, resume: str | Path, extra: Sequence[Callback]) -> tuple[int, int]:
        from onecycle import checkpoint as ck

        auto = resume == "auto"
        if auto:
            folders = [c.folder for c in [*self.cbs, *extra] if isinstance(c, ck.Checkpoint)]
            if not folders:
                raise ConfigError("resume", "auto", "a path, or a Checkpoint callback in cbs")
            resume = folders[0]
        path = Path(resume)
        if not path.exists() and not auto:  # a typo must not train from scratch
            raise ConfigError("resume", str(resume), "an existing checkpoint file or folder "
                              "(resume='auto' starts fresh when there is none yet)")  # fmt: skip
        if D.is_distributed():  # rank 0 picks the checkpoint; every rank loads that one
            pick = None
            if D.is_main():
                newest = ck.latest(path) if path.is_dir() or not path.exists() else None
                pick = str(newest[0]) if newest else (str(path) if path.is_file() else None)
            pick = D.broadcast_object(pick)
            found = None if pick is None else (Path(pick), ck.load(pick))
        else:
            found = ck.latest(path) if path.is_dir() or not path.exists() else (path, ck.load(path))
        if found is None:
            log.info("no checkpoint in %s yet: starting fresh", path)
            return 0, 0
        source, state = found
        epoch, skip = ck.restore(self, state, str(source))
        step = self.scheduler.step_count if self.scheduler else 0
        log.info("resumed from %s: epoch %d, %d batches in, optimizer step %d",
                 source, epoch, skip, step)  # fmt: skip
        return epoch, skip

    def _do_epoch(self, skip: int = 0) -> None:
        self.epoch_completed = False
        self._event("before_epoch")
        try:
            self._do_train(skip)
            if self.valid_data is not None:
                self.valid_results = self._do_validate(self.valid_data)
            self.epoch_completed = True
        except CancelEpoch:
            self.epoch_completed = True  # skipped on purpose: the next epoch comes next
        finally:
            self._event("after_epoch")

    def _do_train(self, skip: int = 0) -> None:
        """One pass over the training data; ``skip``: batches already done (resume)."""
        self.model.train()
        if skip == 0 and hasattr(self.train_data, "set_epoch"):
            self.train_data.set_epoch(self.epoch)
        elif hasattr(getattr(self.train_data, "sampler", None), "set_epoch"):
            self.train_data.sampler.set_epoch(self.epoch)  # DistributedSampler
        self.valid_results = {}
        self._event("before_train")
        # A loader that was positioned by load_state_dict starts at batch `skip` by itself;
        # any other iterable is wound forward (exact only if its order is deterministic).
        positioned = skip > 0 and hasattr(self.train_data, "load_state_dict")
        for i, batch in enumerate(self.train_data, start=skip if positioned else 0):
            if i < skip:
                continue
            self.iter = i
            self._do_batch(batch)
        self._event("after_train")

    def _do_batch(self, batch: Any) -> None:
        assert self.opt is not None and self.scheduler is not None
        self.batch = to_device(batch, self.device)
        acc = self.accumulate
        group_start = (self.iter // acc) * acc
        group_size = min(acc, self.n_iter - group_start)
        self.will_step = self.iter + 1 == group_start + group_size
        model = self.ddp_model or self.model
        # DDP averages gradients on the micro-batch that steps, not on every one
        quiet = self.ddp_model is not None and not self.will_step
        sync = model.no_sync() if quiet else nullcontext()  # type: ignore[operator]
        try:
            self._event("before_batch")
            xb, yb = self.batch
            with sync:
                with self.autocast():
                    self.pred = model(xb)
                    self.loss = self.loss_func(self.pred, yb)
                self._reduce_loss()
                self._event("after_loss")
                loss = self.loss / group_size if group_size > 1 else self.loss
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            self._event("after_backward")
            if self.will_step and self._optimizer_step():
                self._event("after_step")
        except CancelBatch:
            self.opt.zero_grad(set_to_none=True)
        finally:
            self._event("after_batch")

    def _optimizer_step(self) -> bool:
        """Weight decay, step, zero grads; advance the schedule only if the step happened."""
        assert self.opt is not None and self.scheduler is not None
        if self.scaler is None:
            self._weight_decay()
            self.opt.step()
            stepped = True
        else:
            scale = self.scaler.get_scale()
            self.scaler.step(self.opt)
            self.scaler.update()
            stepped = self.scaler.get_scale() >= scale  # the scale drops only on a skip
            if stepped:
                self._weight_decay()  # after the step here: a skipped step must not decay
        self.opt.zero_grad(set_to_none=True)
        if stepped:
            self.step_values = self.scheduler.applied  # what this step used, for callbacks
            self.scheduler.step()
        return stepped

    @torch.no_grad()
    def _weight_decay(self) -> None:
        assert self.opt is not None
        for group, params in zip(self.opt.param_groups, self._decay):
            factor = 1.0 - float(group["lr"]) * float(group.get("wd", 0.0))
            if params and factor != 1.0:
                torch._foreach_mul_(params, factor)

    @torch.no_grad()
    def _do_validate(self, data: Iterable[Any]) -> dict[str, float]:
        self.model.eval()
        self._event("before_validate")
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        sums = [torch.zeros((), dtype=torch.float64, device=self.device) for _ in self.metrics]
        n = 0
        for batch in data:
            xb, yb = to_device(batch, self.device)
            with self.autocast():
                pred = self.model(xb)
                loss = self.loss_func(pred, yb)
            bs = len(yb)
            total += loss.detach().double() * bs
            for i, m in enumerate(self.metrics):
                sums[i] += m(pred, yb).detach().double() * bs
            n += bs
        if D.is_distributed():  # each rank saw its shard: add them up
            packed = torch.stack([total, *sums, torch.tensor(float(n), dtype=torch.float64,
                                                             device=self.device)])  # fmt: skip
            D.all_reduce_sum(packed)
            total, sums, n = packed[0], list(packed[1:-1]), int(packed[-1].item())
        if n == 0:
            raise ConfigError("valid_data", "an empty iterable", "at least one batch")
        results = {"valid_loss": float(total) / n}
        for m, s in zip(self.metrics, sums):
            results[getattr(m, "__name__", type(m).__name__)] = float(s) / n
        self._event("after_validate")
        return results

    def validate(self, data: Iterable[Any] | None = None) -> dict[str, float]:
        """Loss and metrics on ``data`` (default: ``valid_data``), averaged per sample."""
        data = data if data is not None else self.valid_data
        if data is None:
            raise ConfigError("data", None, "validation batches (none given to the Learner)")
        return self._do_validate(data)

    @torch.no_grad()
    def get_preds(self, data: Iterable[Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Model outputs and targets over ``data`` (default: ``valid_data``), on the CPU."""
        data = data if data is not None else self.valid_data
        if data is None:
            raise ConfigError("data", None, "batches to predict on (no valid_data given)")
        self.model.eval()
        preds, targets = [], []
        for batch in data:
            xb, yb = to_device(batch, self.device)
            with self.autocast():
                preds.append(self.model(xb).float().cpu())
            targets.append(yb.cpu())
        return torch.cat(preds), torch.cat(targets)

    # --- the method's schedules ---------------------------------------------------------------

    def _moms_schedules(
        self, moms: tuple[float, float, float] | None, make: Callable[[tuple], ScheduleSpec]
    ) -> dict[str, ScheduleSpec]:
        if self.opt is None:
            self._make_opt([1e-3] * len(self.param_groups))
        assert self.opt is not None
        if moms is None and momentum_key(self.opt) is None:
            log.info("optimizer has no momentum: momentum is not cycled")
            return {}
        return {"momentum": make(tuple(moms if moms is not None else self.moms))}

    def lr_find(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_it: int = 100,
        mode: Literal["exp", "linear"] = "exp",
        smooth: float = 0.98,
        stop_div: bool = True,
        div_factor: float = 4.0,
        valid_batches: Iterable[Any] | None = None,
        metric: Callable[[Any, Any], torch.Tensor] | None = None,
        accumulate: int | None = None,
        *,
        moms: tuple[float, float, float] | None = None,
        wd: float | None = None,
        cbs: Sequence[Callback] = (),
    ) -> RangeTestResult:
        """The LR range test on this learner, through its own training loop: every step
        applies exactly what ``fit`` applies (decoupled ``wd`` and its no-decay groups,
        the callbacks marked ``affects_update`` in ``self.cbs`` and ``cbs``: clipping,
        accumulation, mixed precision), with momentum (or beta1) held at ``moms[1]``
        (default the Learner's, 0.85): the value 1cycle uses when its LR peaks, which is
        what the sweep is read for. Everything is restored afterwards.

        The sweep's LRs apply to the last param group; the others keep their ratio to it.
        ``valid_batches``: the validation loss (and ``metric``) after every step. Options
        as ``onecycle.range_test``.
        """
        from onecycle.auto import lr_sweep
        from onecycle.range_test import check_sweep

        check_sweep(start_lr, end_lr, num_it, mode, smooth, div_factor)  # before any change
        if accumulate is not None:
            accumulate = check_int("accumulate", accumulate)
        if self.opt is None:
            self._make_opt([float(start_lr)] * len(self.param_groups))
        extra = list(cbs)
        if accumulate is not None and accumulate > 1:
            extra.append(GradientAccumulation(accumulate))
        return lr_sweep(
            self, start_lr, end_lr, num_it, mode, smooth, stop_div, div_factor,
            moms=moms, wd=wd, cbs=extra, valid_batches=valid_batches, metric=metric,
        )  # fmt: skip

    def steps_per_epoch(self, cbs: Sequence[Callback] = ()) -> int:
        """Optimizer steps in one epoch of ``train_data`` (accumulation from ``cbs`` or
        the Learner's callbacks included; under DDP, per rank)."""
        acc = self.accumulate
        for cb in [*self.cbs, *cbs]:
            if isinstance(cb, GradientAccumulation):
                acc = cb.n
        self._setup_distributed()
        return math.ceil(len(self.train_data) / acc)  # type: ignore[arg-type]

    def auto_lr_max(
        self,
        total_steps: int | None = None,
        *,
        budget: float | None = None,
        moms: tuple[float, float, float] | None = None,
        wd: float | None = None,
        pct_start: float = 0.25,
        cbs: Sequence[Callback] = (),
    ) -> list[float]:
        """``lr_max`` per param group for a 1cycle run of ``total_steps`` optimizer steps
        (default: one epoch): range test, candidates, short probes (``onecycle.auto``),
        at most ``budget`` x ``total_steps`` steps in all (default ``auto.BUDGET``). The
        details are kept in ``self.auto_result`` and the sweep in ``self.lr_find_result``.

        Raises ``ConfigError`` naming the reason when the sweep supports no recommendation.
        """
        from onecycle.auto import BUDGET, auto_lr_max

        total = total_steps if total_steps is not None else self.steps_per_epoch(cbs)
        res = auto_lr_max(self, total, budget=BUDGET if budget is None else budget, moms=moms,
                          wd=wd, pct_start=pct_start, cbs=cbs)  # fmt: skip
        self.auto_result = res
        self.lr_find_result = res.range_test
        if res.lr_max is None:
            raise ConfigError(
                "lr_max", "auto",
                f"an explicit number: the range test found no reliable lr_max ({res.reason})",
            )  # fmt: skip
        log.info("lr_max=auto: %.3g (%s; %.1f%% of the run's steps)", res.lr_max, res.reason,
                 100 * res.compute_ratio)  # fmt: skip
        ratios = res.range_test.group_ratios if res.range_test else [1.0]
        return [res.lr_max * r for r in ratios]

    def auto_wd(
        self,
        lr_max: LR,
        total_steps: int,
        values: Sequence[float] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2),
        *,
        budget: float = 0.1,
        moms: tuple[float, float, float] | None = None,
        cbs: Sequence[Callback] = (),
    ) -> float:
        """Smith's weight-decay test at ``lr_max`` (``onecycle.auto.wd_range_test``): the
        weight decay in ``values`` whose short 1cycle probe ends with the lowest held-back
        loss. Kept in ``self.auto_wd_result``."""
        from onecycle.auto import wd_range_test

        res = wd_range_test(self, self.group_values(lr_max, "lr_max"), total_steps, values,
                            budget=budget, moms=moms, cbs=cbs)  # fmt: skip
        self.auto_wd_result = res
        assert res.wd is not None
        log.info("wd=auto: %g (%s)", res.wd, res.reason)
        return res.wd

    def fit_one_cycle(
        self,
        n_epoch: int,
        lr_max: LRMax = 1e-2,
        div: float = 25.0,
        div_final: float = 1e5,
        pct_start: float = 0.25,
        moms: tuple[float, float, float] | None = None,
        wd: float | Literal["auto"] | None = None,
        cbs: Sequence[Callback] = (),
        start_epoch: int = 0,
        *,
        anneal: S.Anneal = "cos",
        three_phase: bool = False,
        resume: str | Path | None = None,
    ) -> None:
        """Smith's 1cycle policy (fastai's ``fit_one_cycle``): ``fit`` plus a schedule.

        The LR of each group rises from ``lr_max/div`` to ``lr_max`` over the first
        ``pct_start`` of all steps, then anneals to ``lr_max/div_final``; momentum (or
        Adam's beta1) moves against it through ``moms`` (default: the Learner's,
        0.95-0.85-0.95). ``lr_max`` may be a slice or a sequence (discriminative LRs), or
        ``"auto"``: a range test and short probes first (``onecycle.auto``; everything
        restored, at most a tenth of this run's steps), then their pick. ``wd="auto"``:
        Smith's weight-decay test at that ``lr_max`` (another tenth at most). See
        ``onecycle.schedules.one_cycle`` for ``anneal`` and ``three_phase``, and ``fit``
        for ``resume``.
        """
        auto_lr = isinstance(lr_max, str) and lr_max == "auto"
        if isinstance(lr_max, str) and not auto_lr:
            raise ConfigError("lr_max", lr_max, "a number, a slice, a sequence, or 'auto'")
        if isinstance(wd, str) and wd != "auto":
            raise ConfigError("wd", wd, "a number >= 0, None, or 'auto'")
        total = None
        if (auto_lr or wd == "auto") and resume is None:
            total = (n_epoch - start_epoch) * self.steps_per_epoch(cbs)
        if auto_lr:
            if total is None:
                raise ConfigError("lr_max", "auto", "a number when resuming (the run chose one)")
            lrs = self.auto_lr_max(total, moms=moms, wd=None if wd == "auto" else wd,
                                   pct_start=pct_start, cbs=cbs)  # fmt: skip
        else:
            lrs = self.group_values(lr_max, "lr_max")  # type: ignore[arg-type]
        if wd == "auto":
            if total is None:
                raise ConfigError("wd", "auto", "a number when resuming (the run chose one)")
            wd = self.auto_wd(lrs, total, moms=moms, cbs=cbs)
        spec: dict[str, ScheduleSpec] = {
            "lr": [S.one_cycle(v, div, div_final, pct_start, anneal, three_phase) for v in lrs]
        }
        spec.update(self._moms_schedules(
            moms, lambda m: S.one_cycle_moms(m, pct_start, anneal, three_phase)  # type: ignore[arg-type]
        ))  # fmt: skip
        self.fit(n_epoch, lrs, schedules=spec, wd=wd, cbs=cbs, start_epoch=start_epoch,
                 resume=resume)  # fmt: skip

    def fit_clr(
        self,
        n_epoch: int,
        base_lr: float,
        max_lr: float,
        step_size: int | None = None,
        mode: str = "triangular",
        gamma: float = 0.99994,
        moms: tuple[float, float] | None = None,
        wd: float | None = None,
        cbs: Sequence[Callback] = (),
        resume: str | Path | None = None,
    ) -> None:
        """Smith's cyclical learning rates (arXiv:1506.01186) between ``base_lr`` and ``max_lr``.

        ``step_size`` is half a cycle in optimizer steps (default: 2 epochs' worth, the low
        end of Smith's 2-10 epochs). ``mode``: ``triangular``, ``triangular2`` or
        ``exp_range`` (amplitude times ``gamma ** step``). ``moms=(hi, lo)`` cycles the
        momentum against the LR; default: momentum left as the optimizer has it.
        """
        makers = {"triangular": S.triangular, "triangular2": S.triangular2}
        if mode not in (*makers, "exp_range"):
            raise ConfigError("mode", mode, "'triangular', 'triangular2' or 'exp_range'")
        if moms is not None and (len(moms) != 2):
            raise ConfigError("moms", moms, "two values (hi, lo) or None")

        def spec(total: int) -> Schedules:
            step = step_size if step_size is not None else max(1, 2 * total // n_epoch)
            if mode == "exp_range":
                lr = S.exp_range(base_lr, max_lr, step, total, gamma)
            else:
                lr = makers[mode](base_lr, max_lr, step, total)
            out: dict[str, ScheduleSpec] = {"lr": lr}
            if moms is not None:
                out["momentum"] = S.Cyclic(moms[0], moms[1], step, total, lr.mode, lr.gamma)
            return out

        self.fit(n_epoch, max_lr, schedules=spec, wd=wd, cbs=cbs, resume=resume)

    def fit_sgdr(
        self,
        n_cycles: int,
        cycle_len: int,
        lr_max: float = 1e-2,
        cycle_mult: int = 2,
        wd: float | None = None,
        cbs: Sequence[Callback] = (),
        resume: str | Path | None = None,
    ) -> None:
        """SGDR (arXiv:1608.03983): ``n_cycles`` cosine anneals from ``lr_max`` to 0, the
        first ``cycle_len`` epochs long, each next one ``cycle_mult`` times longer."""
        n_cycles = check_int("n_cycles", n_cycles)
        cycle_len = check_int("cycle_len", cycle_len)
        cycle_mult = check_int("cycle_mult", cycle_mult)
        n_epoch = sum(cycle_len * cycle_mult**k for k in range(n_cycles))
        spec = {"lr": S.sgdr(lr_max, 0.0, n_cycles, float(cycle_mult))}
        self.fit(n_epoch, lr_max, schedules=spec, wd=wd, cbs=cbs, resume=resume)

    def fine_tune(
        self,
        epochs: int,
        base_lr: float | Literal["auto"] = 2e-3,
        freeze_epochs: int = 1,
        lr_mult: float = 100.0,
        pct_start: float = 0.3,
        div: float = 5.0,
        **kwargs: Any,
    ) -> None:
        """fastai's transfer-learning recipe: train the head frozen for ``freeze_epochs``
        (1cycle to ``base_lr``), then unfreeze and train ``epochs`` with discriminative LRs
        ``slice(base_lr/2/lr_mult, base_lr/2)``. ``base_lr="auto"``: chosen for the frozen
        phase by ``auto_lr_max`` (sweep and probes on the frozen model, budgeted against
        both phases' steps)."""
        epochs = check_int("epochs", epochs)
        freeze_epochs = check_int("freeze_epochs", freeze_epochs)
        lr_mult = check_positive("lr_mult", lr_mult)
        if lr_mult < 1:
            raise ConfigError("lr_mult", lr_mult, "a number >= 1 (body LR = head LR / lr_mult)")
        S.one_cycle(1.0, div, pct_start=pct_start)  # refuse a bad div/pct_start before training
        self.freeze()
        if isinstance(base_lr, str):
            if base_lr != "auto":
                raise ConfigError("base_lr", base_lr, "a number > 0 or 'auto'")
            if self.opt is None:
                self._make_opt([1e-3] * len(self.param_groups))
            assert self.opt is not None
            for g, v in zip(self.opt.param_groups, self.group_values(slice(1.0))):
                g["lr"] = v  # the sweep keeps these ratios: slice(base_lr) as trained below
            total = (freeze_epochs + epochs) * self.steps_per_epoch(kwargs.get("cbs", ()))
            base_lr = self.auto_lr_max(total, pct_start=0.99, moms=kwargs.get("moms"),
                                       cbs=kwargs.get("cbs", ()))[-1]  # fmt: skip
        base_lr = check_positive("base_lr", base_lr)
        self.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99, **kwargs)
        base_lr /= 2
        self.unfreeze()
        self.fit_one_cycle(
            epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div, **kwargs
        )

    # --- plumbing -------------------------------------------------------------------------------

    def _bind(self, cbs: Sequence[Callback]) -> dict[str, list[Callable[[Learner], None]]]:
        """Per event, the bound methods of the callbacks that override it, in order.

        Precomputed so that an event nobody listens to costs one empty loop.
        """
        ordered = sorted(cbs, key=lambda c: c.order)
        table: dict[str, list[Callable[[Learner], None]]] = {}
        for name in EVENTS:
            table[name] = [
                getattr(cb, name) for cb in ordered
                if getattr(type(cb), name) is not getattr(Callback, name)
            ]  # fmt: skip
        return table

    def _event(self, name: str) -> None:
        for fn in self._cb_table[name]:
            fn(self)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _shard(data: Any, rank: int, world: int, even: bool, name: str) -> Any:
    """``data`` for this rank: an ``onecycle.data.Loader`` is sharded (once). Training
    data of another kind must bring its own ``DistributedSampler``; validation data of
    another kind is evaluated whole on every rank (the reduced result is the same)."""
    from torch.utils.data.distributed import DistributedSampler

    from onecycle.data.loader import Loader

    if isinstance(data, Loader):
        if data.world_size == world:
            return data  # sharded already (by the user, or by an earlier fit)
        if data.world_size != 1:
            raise ConfigError(name, f"a Loader sharded for {data.world_size} processes",
                              f"an unsharded Loader, or one sharded for {world}")  # fmt: skip
        return data.shard(rank, world, even=even)
    if not even or isinstance(getattr(data, "sampler", None), DistributedSampler):
        return data
    raise ConfigError(
        name, type(data).__name__,
        f"under torch.distributed ({world} processes): an onecycle.data.Loader (sharded "
        "automatically) or a DataLoader with a DistributedSampler",
    )  # fmt: skip


def _check_data(name: str, data: Any) -> None:
    if not hasattr(data, "__iter__"):
        raise ConfigError(name, type(data).__name__, "an iterable of (x, y) batches")
    try:
        n = len(data)
    except TypeError:
        raise ConfigError(name, type(data).__name__, "batches with a length (len(data))") from None
    if n == 0:
        raise ConfigError(name, "0 batches", "at least one batch (is batch_size > data size?)")
