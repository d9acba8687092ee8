"""Exploration for issue 15: a fast CPU recipe for Fashion-MNIST (and MNIST-1D).

Everything runs on one thread. ``E`` is the time the yardstick loop of
``benchmarks/overhead.py`` (``hand_written``: yardstick CNN, batch 256, SGD Nesterov,
OneCycleLR) takes for one epoch of the 60k training images, measured in the same process
before the candidates run. A candidate's time counts its training steps and the final
test evaluation, not data loading (the uint8 tensors are loaded before the clock starts;
their per-batch normalisation and augmentation are inside it).

Subcommands (results are merged into ``docs/results/fast_recipe_explore.json`` under
``--tag`` keys, so nothing is lost between runs):

    # throughput of model shapes / channels_last / bf16 / batch size, a few hundred steps
    .venv/bin/python benchmarks/fast_recipe/explore.py throughput
    # train recipes: JSON overrides of the baseline recipe, one per argument
    .venv/bin/python benchmarks/fast_recipe/explore.py fashion --seeds 0 1 \
        '{"epochs": 2}' '{"epochs": 2, "ls": 0.0}'
    # MNIST-1D
    .venv/bin/python benchmarks/fast_recipe/explore.py mnist1d --seeds 0 1 '{}'

The schedule is the library's: ``onecycle.schedules.one_cycle`` for the LR and
``one_cycle_moms`` for SGD's momentum (or Adam's beta1), one value per optimizer step.
Weight decay is decoupled (``p *= 1 - lr * wd`` on conv/linear weights), as the
Learner does.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch
import torch.nn.functional as F
from torch import nn

from onecycle.data import Loader, load_fashion_mnist, load_mnist1d
from onecycle.models import cnn, cnn1d
from onecycle.schedules import one_cycle, one_cycle_moms

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "results" / "fast_recipe_explore.json"
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


# --- results file ---------------------------------------------------------------------------


def save(section: str, key: str, value: dict, path: Path = OUT) -> None:
    """Merge ``value`` into ``path[section][key]`` (re-read first: several runs may append)."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("meta", {}).update(
        torch=torch.__version__, threads=torch.get_num_threads(), cpu=platform.processor()
        or platform.machine(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
        bf16_supported=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    )  # fmt: skip
    data.setdefault(section, {})[key] = value
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# --- models ---------------------------------------------------------------------------------


def conv_bn(c_in: int, c_out: int, pool: bool = False, pool_first: bool = True) -> list:
    """conv3x3 (no bias) - [pool] - BN - ReLU (pool first: BN/ReLU on 1/4 of the pixels)."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    if not pool:
        return [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool_first:
        return [conv, nn.MaxPool2d(2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]


class Block(nn.Module):
    """airbench's block: conv-pool-BN-ReLU, then ``extra`` conv-BN-ReLU (residual if asked)."""

    def __init__(self, c_in: int, c_out: int, extra: int = 1, residual: bool = False):
        super().__init__()
        self.head = nn.Sequential(*conv_bn(c_in, c_out, pool=True))
        self.body = nn.Sequential(*[m for _ in range(extra) for m in conv_bn(c_out, c_out)])
        self.residual = residual

    def forward(self, x):
        x = self.head(x)
        return x + self.body(x) if self.residual else self.body(x)


class Scale(nn.Module):
    def __init__(self, s: float):
        super().__init__()
        self.s = s

    def forward(self, x):
        return x * self.s


def make_model(name: str, widths=None) -> nn.Module:
    """Candidate shapes for 28x28x1 images (28 -> 14 -> 7 -> 3 after three pools).

    - ``yard``: onecycle.models.cnn (32-64-128, conv-BN-ReLU-pool), the yardstick.
    - ``pf``: the same convs, pool first (conv-pool-BN-ReLU), widths ``w``.
    - ``ab``: airbench-style: stem conv at 28x28, then 3 blocks (conv-pool-BN-ReLU +
      ``extra`` conv-BN-ReLU), flatten 3x3, linear head (no bias) scaled by 1/9... see code.
    - ``abr``: ``ab`` with residual extra convs.
    """
    if name == "yard":
        return cnn(1, 10, 28)
    if name == "pf":
        w1, w2, w3 = widths or (32, 64, 128)
        return nn.Sequential(
            *conv_bn(1, w1, True), *conv_bn(w1, w2, True), *conv_bn(w2, w3, True),
            nn.Flatten(), nn.Linear(w3 * 9, 10),
        )  # fmt: skip
    if name in ("ab", "abr", "ab0"):
        # widths: (stem, b1, b2, b3); ab0: no extra conv in the first block
        w0, w1, w2, w3 = widths or (24, 32, 64, 128)
        res = name == "abr"
        layers = [*conv_bn(1, w0)] if w0 else []
        c = w0 or 1
        layers += [
            Block(c, w1, extra=0 if name == "ab0" else 1, residual=res),
            Block(w1, w2, residual=res), Block(w2, w3, residual=res),
            nn.Flatten(), nn.Linear(w3 * 9, 10),
        ]  # fmt: skip
        return nn.Sequential(*layers)
    if name == "abg":  # airbench head: global max pool, linear no bias, scaled
        w0, w1, w2, w3 = widths or (24, 64, 128, 128)
        layers = [*conv_bn(1, w0)] if w0 else []
        c = w0 or 1
        layers += [
            Block(c, w1), Block(w1, w2), Block(w2, w3),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(w3, 10, bias=False), Scale(1 / 9),
        ]  # fmt: skip
        return nn.Sequential(*layers)
    raise ValueError(name)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --- E: the yardstick loop of benchmarks/overhead.py ----------------------------------------


def _overhead_module():
    spec = importlib.util.spec_from_file_location("overhead", ROOT / "benchmarks" / "overhead.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure_E(seed: int = 0) -> float:
    """One epoch of ``overhead.hand_written`` (60k samples, batch 256) on float data."""
    data = load_fashion_mnist()
    torch.manual_seed(seed)
    model = cnn(1, 10, 28)
    loader = Loader(data.x_train, data.y_train, 256, seed=seed)
    (t,) = _overhead_module().hand_written(model, loader, 1, 0.2, 5e-4)
    print(
        f"E = {t:.2f} s (yardstick loop, one epoch, {torch.get_num_threads()} thread)", flush=True
    )
    return t


# --- data: uint8 in memory, normalised per batch ---------------------------------------------


def fashion_u8():
    """Fashion-MNIST as uint8 (N, 1, 28, 28) tensors and int64 labels (not timed)."""
    d = load_fashion_mnist(normalize=False)
    to_u8 = lambda x: (x * 255).round_().to(torch.uint8)  # noqa: E731
    return to_u8(d.x_train), d.y_train, to_u8(d.x_test), d.y_test


def normalize(xb: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    a = 1.0 / (255.0 * FASHION_STD)
    return xb.to(dtype).mul_(a).sub_(FASHION_MEAN / FASHION_STD)


def translate(xpad: torch.Tensor, idx: torch.Tensor, pad: int, gen) -> torch.Tensor:
    """Random ±pad px shifts of images ``idx`` from the zero-padded uint8 set, one gather."""
    n = len(idx)
    h = xpad.shape[-1] - 2 * pad
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=gen)
    ar = torch.arange(h)
    cols = (dx + ar.view(1, 1, h)).expand(n, h, h)
    imgs = xpad[:, 0].index_select(0, idx)  # (n, H+2p, W+2p)
    # two gathers: rows then columns
    out = imgs.gather(1, (dy + ar.view(1, h, 1)).expand(n, h, h + 2 * pad))
    out = out.gather(2, cols)
    return out.unsqueeze(1)


def hflip(xb: torch.Tensor, gen) -> torch.Tensor:
    mask = torch.rand(xb.shape[0], generator=gen) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), xb.flip(-1), xb)


# --- training -------------------------------------------------------------------------------

BASE = dict(
    model="pf", widths=None, bs=256, lr=0.2, wd=5e-3, epochs=4, div=25.0, div_final=1e5,
    pct_start=0.25, moms=(0.95, 0.85, 0.95), ls=0.1, flip=False, translate=0, tta=False,
    ema=0.0, channels_last=True, bf16=True, compile=False, opt="sgd", eval_bs=1000,
    anneal="cos",
)  # fmt: skip


def decay_params(model):
    return [p for p in model.parameters() if p.ndim > 1]


@torch.no_grad()
def evaluate(model, x_u8, y, r, autocast) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x_u8), r["eval_bs"]):
        xb = normalize(x_u8[i : i + r["eval_bs"]])
        if r["channels_last"]:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast():
            out = model(xb).float()
            if r["tta"]:
                out = out.softmax(1) + model(xb.flip(-1)).float().softmax(1)
        correct += int((out.argmax(1) == y[i : i + r["eval_bs"]]).sum())
    model.train()
    return correct / len(x_u8)


def autocast_ctx(bf16: bool):
    if bf16 and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext


def train_fashion(recipe: dict, data, seed: int, E: float, every_epoch: bool = True) -> dict:
    r = {**BASE, **recipe}
    x, y, xt, yt = data
    torch.manual_seed(seed)
    model = make_model(r["model"], r["widths"])
    if r["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    autocast = autocast_ctx(r["bf16"])
    fwd = model
    gen = torch.Generator().manual_seed(seed)
    pad = r["translate"]
    xpad = F.pad(x, (pad,) * 4) if pad else x
    steps_per_epoch = len(x) // r["bs"]  # drop_last: equal batches
    total = steps_per_epoch * r["epochs"]
    lr_s = one_cycle(r["lr"], r["div"], r["div_final"], r["pct_start"], anneal=r["anneal"])
    mom_s = one_cycle_moms(tuple(r["moms"]), r["pct_start"], anneal=r["anneal"])
    if r["opt"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], betas=(0.9, 0.99), eps=1e-5,
                                weight_decay=0.0)  # fmt: skip
    mkey = "momentum" if r["opt"] == "sgd" else "betas"
    decay = decay_params(model)
    ema = copy.deepcopy(model) if r["ema"] else None
    t_compile = 0.0
    if r["compile"]:
        fwd = torch.compile(model)
    accs, epoch_s = [], []
    elapsed = 0.0
    step = 0
    for epoch in range(r["epochs"]):
        perm = torch.randperm(len(x), generator=gen)
        t0 = time.perf_counter()
        for b in range(steps_per_epoch):
            idx = perm[b * r["bs"] : (b + 1) * r["bs"]]
            xb = translate(xpad, idx, pad, gen) if pad else x.index_select(0, idx)
            if r["flip"]:
                xb = hflip(xb, gen)
            xb = normalize(xb)
            if r["channels_last"]:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = y.index_select(0, idx)
            t = step / max(1, total - 1)
            lr, mom = lr_s(t), mom_s(t)
            for g in opt.param_groups:
                g["lr"] = lr
                g[mkey] = mom if mkey == "momentum" else (mom, g["betas"][1])
            with autocast():
                out = fwd(xb)
            loss = F.cross_entropy(out.float(), yb, label_smoothing=r["ls"])
            loss.backward()
            if r["wd"]:
                with torch.no_grad():
                    torch._foreach_mul_(decay, 1.0 - lr * r["wd"])
            opt.step()
            opt.zero_grad(set_to_none=True)
            if ema is not None and step % 5 == 4:
                with torch.no_grad():
                    w = 1.0 - r["ema"] ** 5
                    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), w)
                    for be, bm in zip(ema.buffers(), model.buffers()):
                        be.copy_(bm)
            if step == 0 and r["compile"]:
                t_compile = time.perf_counter() - t0
            step += 1
        dt = time.perf_counter() - t0
        elapsed += dt
        epoch_s.append(dt)
        if every_epoch and epoch < r["epochs"] - 1:
            accs.append(evaluate(ema or model, xt, yt, r, autocast))  # not timed
    t0 = time.perf_counter()
    acc = evaluate(ema or model, xt, yt, r, autocast)
    eval_s = time.perf_counter() - t0
    elapsed += eval_s
    accs.append(acc)
    res = dict(
        recipe=r, seed=seed, test_accuracy=acc, seconds=elapsed, seconds_over_E=elapsed / E,
        E=E, eval_seconds=eval_s, epoch_seconds=epoch_s, acc_per_epoch=accs,
        images_per_s=steps_per_epoch * r["bs"] * r["epochs"] / sum(epoch_s),
        params=n_params(model), compile_first_step_s=t_compile,
    )  # fmt: skip
    if r["ema"]:
        res["acc_without_ema"] = evaluate(model, xt, yt, r, autocast)
    return res


# --- throughput -----------------------------------------------------------------------------


def throughput(model_name, widths, bs, channels_last, bf16, steps=40, warm=5, data=None,
               u8=True) -> float:  # fmt: skip
    x = data[0] if u8 else normalize(data[0])
    y = data[1]
    torch.manual_seed(0)
    model = make_model(model_name, widths)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    autocast = autocast_ctx(bf16)
    gen = torch.Generator().manual_seed(0)
    times = []
    for s in range(warm + steps):
        t0 = time.perf_counter()
        idx = torch.randint(0, len(x), (bs,), generator=gen)
        xb = x.index_select(0, idx)
        if u8:
            xb = normalize(xb)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast():
            out = model(xb)
        F.cross_entropy(out.float(), y.index_select(0, idx)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if s >= warm:
            times.append(time.perf_counter() - t0)
    return bs / statistics.median(times)


def cmd_throughput(args):
    data = fashion_u8()
    configs = json.loads(args.configs) if args.configs else [
        ["yard", None], ["pf", None], ["ab", None], ["ab0", None], ["abr", None],
        ["ab", [16, 32, 64, 128]], ["ab", [0, 32, 64, 128]], ["ab0", [0, 64, 128, 256]],
        ["pf", [64, 128, 256]], ["abg", None],
    ]  # fmt: skip
    E_ips = None
    for name, widths in configs:
        for bs in args.bs:
            for cl in args.cl:
                for bf in args.bf16:
                    cl, bf = bool(cl), bool(bf)
                    ips = throughput(name, widths, bs, cl, bf, steps=args.steps, data=data)
                    key = f"{name}{widths or ''}|bs{bs}|cl{int(cl)}|bf16{int(bf)}"
                    if name == "yard" and bs == 256 and not cl and not bf:
                        E_ips = ips
                    row = dict(model=name, widths=widths, bs=bs, channels_last=cl, bf16=bf,
                               images_per_s=ips, params=n_params(make_model(name, widths)),
                               est_epoch_s=60000 / ips)  # fmt: skip
                    print(f"{key:40s} {ips:8.0f} img/s  epoch ~{60000 / ips:6.1f}s  "
                          f"params {row['params']}", flush=True)  # fmt: skip
                    save("throughput", key, row)
    if E_ips:
        print(f"yardstick bs256 float32: {E_ips:.0f} img/s")


def cmd_fashion(args):
    E = args.E or measure_E()
    data = fashion_u8()
    for rec in args.recipes:
        recipe = json.loads(rec)
        for seed in args.seeds:
            res = train_fashion(recipe, data, seed, E, every_epoch=not args.no_epoch_eval)
            res["E_process_start"] = E
            key = f"{args.tag}|{json.dumps(recipe, sort_keys=True)}|seed{seed}"
            print(f"{json.dumps(recipe):70s} seed {seed}  acc {res['test_accuracy']:.4f}  "
                  f"{res['seconds']:6.1f}s  {res['seconds_over_E']:.2f}E  "
                  f"{res['images_per_s']:.0f} img/s  per-epoch {res['acc_per_epoch']}"
                  + (f" no-ema {res['acc_without_ema']:.4f}" if "acc_without_ema" in res else ""),
                  flush=True)  # fmt: skip
            save("fashion", key, res)
    if args.E_end:
        E2 = measure_E()
        save("E_checks", f"{args.tag}|{time.time():.0f}", {"E_start": E, "E_end": E2})


# --- MNIST-1D -------------------------------------------------------------------------------

BASE1D = dict(model="cnn1d", width=24, bs=100, lr=3e-2, wd=1e-2, epochs=None, div=25.0,
              div_final=1e5, pct_start=0.25, moms=(0.95, 0.85, 0.95), opt="adamw", ls=0.0,
              steps=None, shift=0, ema=0.0)  # fmt: skip


class CNN1D(nn.Module):
    """A wider/deeper 1-D CNN option: ``depth`` conv-BN-ReLU layers, stride 2 every other."""

    def __init__(self, width=64, depth=4, length=40):
        super().__init__()
        layers, c = [], 1
        for i in range(depth):
            stride = 2 if i % 2 == 1 or depth <= 3 else 1
            layers += [nn.Conv1d(c, width, 5 if i == 0 else 3, stride=stride,
                                 padding=2 if i == 0 else 1, bias=False),
                       nn.BatchNorm1d(width), nn.ReLU(inplace=True)]  # fmt: skip
            c = width
            length = (length + 2 * (2 if i == 0 else 1) - (5 if i == 0 else 3)) // stride + 1
        self.body = nn.Sequential(nn.Unflatten(1, (1, 40)), *layers, nn.Flatten())
        self.head = nn.Linear(width * length, 10)

    def forward(self, x):
        return self.head(self.body(x))


def train_mnist1d(recipe: dict, data, seed: int) -> dict:
    r = {**BASE1D, **recipe}
    torch.manual_seed(seed)
    if r["model"] == "cnn1d":
        model = cnn1d(40, 10, r["width"])
    else:
        model = CNN1D(r["width"], r.get("depth", 4))
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    gen = torch.Generator().manual_seed(seed)
    spe = len(x) // r["bs"]
    total = r["steps"] or spe * r["epochs"]
    lr_s = one_cycle(r["lr"], r["div"], r["div_final"], r["pct_start"])
    mom_s = one_cycle_moms(tuple(r["moms"]), r["pct_start"])
    if r["opt"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], betas=(0.9, 0.99), eps=1e-5,
                                weight_decay=0.0)  # fmt: skip
    decay = decay_params(model)
    t0 = time.perf_counter()
    step = 0
    while step < total:
        perm = torch.randperm(len(x), generator=gen)
        for b in range(spe):
            if step >= total:
                break
            idx = perm[b * r["bs"] : (b + 1) * r["bs"]]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            if r["shift"]:
                s = int(torch.randint(-r["shift"], r["shift"] + 1, (1,), generator=gen))
                xb = torch.roll(xb, s, 1)
            t = step / max(1, total - 1)
            lr, mom = lr_s(t), mom_s(t)
            for g in opt.param_groups:
                g["lr"] = lr
                if r["opt"] == "sgd":
                    g["momentum"] = mom
                else:
                    g["betas"] = (mom, g["betas"][1])
            F.cross_entropy(model(xb), yb, label_smoothing=r["ls"]).backward()
            if r["wd"]:
                with torch.no_grad():
                    torch._foreach_mul_(decay, 1.0 - lr * r["wd"])
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
    model.eval()
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
    secs = time.perf_counter() - t0
    return dict(recipe=r, seed=seed, test_accuracy=acc, seconds=secs, steps=total,
                params=n_params(model))  # fmt: skip


def cmd_mnist1d(args):
    data = load_mnist1d()
    for rec in args.recipes:
        recipe = json.loads(rec)
        for seed in args.seeds:
            res = train_mnist1d(recipe, data, seed)
            key = f"{args.tag}|{json.dumps(recipe, sort_keys=True)}|seed{seed}"
            print(
                f"{json.dumps(recipe):70s} seed {seed}  acc {res['test_accuracy']:.4f}  "
                f"{res['seconds']:6.1f}s",
                flush=True,
            )
            save("mnist1d", key, res)


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--bs", type=int, nargs="+", default=[256, 512, 1024])
    t.add_argument("--steps", type=int, default=30)
    t.add_argument("--cl", type=int, nargs="+", default=[0, 1], help="channels_last off/on")
    t.add_argument("--bf16", type=int, nargs="+", default=[0, 1], help="bf16 autocast off/on")
    t.add_argument("--configs", default=None, help='JSON [["ab", [24,32,64,128]], ...]')
    for name in ("fashion", "mnist1d"):
        p = sub.add_parser(name)
        p.add_argument("recipes", nargs="+", help="JSON overrides of the baseline recipe")
        p.add_argument("--seeds", type=int, nargs="+", default=[0])
        p.add_argument("--tag", default="r")
        if name == "fashion":
            p.add_argument("--E", type=float, default=None, help="skip measuring E (debug)")
            p.add_argument("--E-end", action="store_true", help="measure E again at the end")
            p.add_argument("--no-epoch-eval", action="store_true")
    args = ap.parse_args()
    {"throughput": cmd_throughput, "fashion": cmd_fashion, "mnist1d": cmd_mnist1d}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
