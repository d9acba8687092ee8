"""The Learner: the training loop (``onecycle.loop.Loop``) with the method's fits as methods.

``Learner`` adds to the loop what the method is made of, from ``onecycle.recipes``:
``fit_one_cycle``, ``fit_clr``, ``fit_sgdr``, ``fine_tune``, ``lr_find``, ``auto_lr_max``
and ``auto_wd``, each ``fit`` plus a schedule. The loop itself (one epoch, one batch, one
optimizer step, validation) is in ``onecycle.loop``, which imports none of the recipes.
"""

from __future__ import annotations

from onecycle import recipes
from onecycle.distributed import check_device
from onecycle.loop import Loop, accuracy
from onecycle.params import LR, LRMax, adamw, sgd

__all__ = ["LR", "LRMax", "Learner", "accuracy", "adamw", "check_device", "sgd"]


class Learner(Loop):
    """Train ``model`` on ``train_data``, evaluate on ``valid_data``. The defaults are generic
    (SGD, ``wd=5e-4``, ``lr_max=1e-2``); ``onecycle.recipe("mnist1d").learner()`` is the
    Learner ``onecycle fit --dataset mnist1d`` trains, with that data set's tuned recipe.

    Args:
        model: any ``nn.Module``; by default batches are ``(x, y)`` (or dicts with
            ``"labels"``) and the loss is ``loss_func(model(x), y)``: see ``split_batch``.
        train_data, valid_data: any iterables of ``(x, y)`` batches with a length (a
            ``DataLoader`` or ``onecycle.data.Loader``). ``set_epoch(e)`` is called if present.
        loss_func: ``(pred, target) -> scalar tensor``; None: the model's own loss
            (``output.loss``, as Hugging Face models compute it when given labels).
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
        split_batch: ``batch -> (inputs, target)`` for batches that are not ``(x, y)``
            pairs or dicts (``onecycle.batch``): the model is called as ``model(x)``,
            ``model(*inputs)`` or ``model(**inputs)``; a tuple or dict output gives its
            first element or ``"logits"`` to the loss and metrics.
        progress: None (default): show a fit's progress where a person watches (a terminal,
            a notebook; silent in pipes and CI); False: never; True: always (``ProgressBar``).

    Under ``torchrun`` (a process group of several processes) the Learner wraps the model
    in DDP, shards ``onecycle.data.Loader`` data per rank and reduces losses and metrics
    across ranks: see ``onecycle.distributed``.

    Attributes callbacks read or set: ``model, opt, scheduler, loss_func, epoch, n_epoch,
    iter, n_iter, batch, pred, loss, loss_global, will_step, accumulate, autocast, scaler,
    valid_results, epoch_completed, step_values, recorder, fit_signature, resuming, run_config,
    lr_find_result, auto_result, auto_wd_result, replicas, ddp_model, fit_plan, fit_cbs, budget,
    clock``. ``clock`` (``time.monotonic``) is what a time budget counts: set a fake one
    for reproducible budgeted runs (``onecycle.budget``).

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

    # --- the method's fits: fit + a schedule (onecycle.recipes) ------------------------------

    fit_one_cycle = recipes.fit_one_cycle
    fit_clr = recipes.fit_clr
    fit_sgdr = recipes.fit_sgdr
    fine_tune = recipes.fine_tune
    lr_find = recipes.lr_find
    auto_lr_max = recipes.auto_lr_max
    auto_wd = recipes.auto_wd
