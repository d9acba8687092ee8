"""The CUDA paths, for real: skipped without a GPU (CI has none), run on any machine with one.

fp16 + GradScaler (a step the scaler skips does not advance the schedule), bf16 autocast
with channels_last, the CUDA random state in checkpoints and a bit-exact resume on one
GPU, and the range test restoring the CUDA random state.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onecycle import Callback, Learner, MixedPrecision, sgd
from onecycle import checkpoint as ck
from onecycle.data import Loader
from onecycle.models import airnet
from onecycle.schedules import one_cycle

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _mlp() -> nn.Module:  # dropout: the CUDA random state matters
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 4))


def _learner(cbs=(), seed: int = 0, learnable: bool = False) -> Learner:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 20, generator=g), torch.randint(0, 4, (512,), generator=g)
    if learnable:  # a rule the MLP can learn: a range test with something to read
        y = (x[:, :5].sum(1) > 0).long() * 2 + (x[:, 5] > 0).long()
    return Learner(_mlp(), Loader(x, y, 64, seed=1, device="cuda"),
                   loss_func=F.cross_entropy, opt_func=sgd, wd=1e-3, cbs=list(cbs),
                   device="cuda")  # fmt: skip


class InfGradAt(Callback):
    order = 6  # after MixedPrecision has set up the GradScaler

    def __init__(self, at: int) -> None:
        self.at = at

    def after_backward(self, learn: Learner) -> None:
        if learn.iter == self.at and learn.epoch == 0:
            next(learn.model.parameters()).grad[0, 0] = float("inf")


def test_fp16_a_step_the_scaler_skips_does_not_advance_the_schedule():
    learn = _learner(cbs=[MixedPrecision(), InfGradAt(3)])
    learn.fit_one_cycle(1, lr_max=0.2)  # 8 batches
    lrs = learn.recorder.lrs
    assert len(lrs) == 7 and learn.scheduler.step_count == 7
    assert lrs == pytest.approx([one_cycle(0.2)(i / 7) for i in range(7)])
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


def test_bf16_and_channels_last_train_the_recipe_model():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 1, 28, 28, generator=g), torch.randint(0, 10, (512,), generator=g)
    model = airnet().to(memory_format=torch.channels_last)
    learn = Learner(model, Loader(x, y, 64, device="cuda"), loss_func=F.cross_entropy,
                    cbs=[MixedPrecision(torch.bfloat16)], device="cuda")  # fmt: skip
    learn.fit_one_cycle(2, 0.05)
    assert learn.scaler is None  # bf16 needs no loss scaling
    w = [m for m in learn.model.modules() if isinstance(m, nn.Conv2d)][1].weight
    assert w.is_cuda and w.is_contiguous(memory_format=torch.channels_last)
    assert learn.recorder.losses[-1] < learn.recorder.losses[0]


class Crash(Exception):
    pass


class CrashAt(Callback):
    order = 99

    def __init__(self, step: int) -> None:
        self.step = step

    def after_step(self, learn: Learner) -> None:
        if learn.scheduler.step_count == self.step:
            raise Crash


def test_checkpoints_carry_the_cuda_random_state_and_resume_bit_exactly(tmp_path):
    torch.backends.cudnn.deterministic = True
    ref = _learner()
    ref.fit_one_cycle(3, 0.05, cbs=[ck.Checkpoint(tmp_path / "ref", every=1)])
    first = _learner()
    with pytest.raises(Crash):
        first.fit_one_cycle(3, 0.05, cbs=[ck.Checkpoint(tmp_path / "run", every=1), CrashAt(11)])
    torch.cuda.manual_seed_all(999)  # another CUDA random state: the checkpoint must restore it
    second = _learner(seed=77)
    second.fit_one_cycle(3, 0.05, cbs=[ck.Checkpoint(tmp_path / "run", every=1)],
                         resume="auto")  # fmt: skip
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, second.model.state_dict()[k]), k


def test_the_range_test_restores_the_cuda_random_state_and_the_weights():
    learn = _learner()
    learn.fit_one_cycle(1, 0.05)
    weights = copy.deepcopy(learn.model.state_dict())
    rng = torch.cuda.get_rng_state()
    learn.lr_find(num_it=30)
    assert torch.equal(torch.cuda.get_rng_state(), rng)
    for k, v in weights.items():
        assert torch.equal(v, learn.model.state_dict()[k]), k


def test_the_sweep_under_fp16_applies_autocast_the_grad_scaler_and_decay_as_fit_does():
    """lr_find under ``MixedPrecision`` on CUDA: the same losses as a hand-written loop
    with fp16 autocast, a GradScaler, decoupled decay (after a step the scaler did not
    skip, as ``fit``) and SGD at momentum 0.85 (1cycle's peak) at the sweep's LRs."""
    learn = _learner(cbs=[MixedPrecision()])  # wd=1e-3
    init = copy.deepcopy(learn.model.state_dict())
    res = learn.lr_find(start_lr=1e-3, end_lr=1.0, num_it=8, stop_div=False)
    assert res.stop_reason == "completed 8 steps" and learn.scaler is None  # put back

    model = _mlp().cuda()
    model.load_state_dict(init)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.85, nesterov=True)
    scaler = torch.amp.GradScaler("cuda")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 20, generator=g), torch.randint(0, 4, (512,), generator=g)
    torch.manual_seed(0)  # dropout: lr_find ran from the Learner's restored random state
    losses = []
    for lr, (xb, yb) in zip(res.lrs, Loader(x, y, 64, seed=1, device="cuda")):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = F.cross_entropy(model(xb), yb)
        losses.append(float(loss.detach()))
        scaler.scale(loss).backward()
        for group in opt.param_groups:
            group["lr"] = lr
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        assert scaler.get_scale() >= scale  # no step skipped: the loops stay in lock step
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim > 1:
                    p.mul_(1 - lr * 1e-3)
        opt.zero_grad()
    assert losses[0] == pytest.approx(res.losses[0], rel=1e-3)
    assert losses == pytest.approx(res.losses, rel=2e-3)


def test_auto_on_cuda_with_fp16_restores_everything_and_trains_at_its_pick():
    from onecycle.auto import auto_lr_max

    learn = _learner(cbs=[MixedPrecision()], learnable=True)
    weights = copy.deepcopy(learn.model.state_dict())
    rng = torch.cuda.get_rng_state()
    auto = auto_lr_max(learn, total_steps=400)
    assert auto.lr_max is not None, auto.reason
    assert torch.equal(torch.cuda.get_rng_state(), rng) and learn.scaler is None
    for k, v in weights.items():
        assert torch.equal(v, learn.model.state_dict()[k]), k
    learn.fit_one_cycle(2, lr_max="auto")
    peak = learn.auto_result.lr_max  # the fallback's peak, if the run collapsed
    assert peak * 0.99 <= max(learn.recorder.lrs) <= peak  # 16 steps: the peak is not on one
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


def test_a_cuda_loader_draws_the_cpu_loaders_order_and_augments_on_the_gpu():
    """The order comes from a CPU generator on every device (the same batches on a GPU as
    on the CPU); crops and flips draw from a generator where the batch is."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 1, 8, 8, generator=g), torch.arange(256)
    cpu = Loader(x, y, 32, seed=3)
    gpu = Loader(x, y, 32, seed=3, device="cuda", crop_pad=2, hflip=True)
    for _ in range(2):  # two epochs: each its own permutation
        for (_, yc), (xg, yg) in zip(cpu, gpu, strict=True):
            assert xg.is_cuda and torch.equal(yc, yg.cpu())
    again = [xb.cpu() for xb, _ in Loader(x, y, 32, seed=3, device="cuda", crop_pad=2, hflip=True)]
    first = [xb.cpu() for xb, _ in Loader(x, y, 32, seed=3, device="cuda", crop_pad=2, hflip=True)]
    assert all(torch.equal(a, b) for a, b in zip(again, first))  # reproducible on the GPU
    assert not all(
        torch.equal(a, x[yb]) for a, (_, yb) in zip(first, Loader(x, y, 32, seed=3))
    )  # augmented
