"""Two choices of the fast Fashion-MNIST recipe that explore.py left open, measured here.

1. Data in memory as float32 (what ``Loader`` holds) or as uint8 normalised per batch:
   the cost of making one batch of 256 both ways, against one training step of the
   recipe (airnet, channels_last, bf16 autocast where native, SGD).
2. ``torch.compile`` of the model: its compile time (the first steps) and its steady step
   time against eager, i.e. after how many steps it would pay back.

Steps alternate (eager, compiled, eager, ...) so that machine noise hits both alike.

    .venv/bin/python benchmarks/fast_recipe/checks.py --json docs/results/fast_recipe_checks.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from onecycle.config import native_mixed_precision
from onecycle.data import load_fashion_mnist
from onecycle.models import airnet

MEAN, STD = 0.2860, 0.3530


def _median_time(fn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> Any:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        idx = torch.randint(0, len(x), (256,), generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x.index_select(0, idx))
        F.cross_entropy(out.float(), y.index_select(0, idx), label_smoothing=0.1).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60, help="measured steps per side")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = load_fashion_mnist()  # normalised float32, as Loader holds it
    x, y = d.x_train, d.y_train
    x8 = (load_fashion_mnist(normalize=False).x_train * 255).round_().to(torch.uint8)
    bf16 = native_mixed_precision()
    out: dict[str, Any] = {"threads": args.threads, "bf16": bf16, "torch": torch.__version__}

    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(x), (256,), generator=gen)
    f32 = _median_time(lambda: x.index_select(0, idx), 400)
    u8 = _median_time(lambda: x8.index_select(0, idx).float().mul_(1 / (255 * STD))
                      .sub_(MEAN / STD), 400)  # fmt: skip
    torch.manual_seed(0)
    eager = make_step(airnet().to(memory_format=torch.channels_last), x, y, bf16)
    for _ in range(5):
        eager()
    step_s = _median_time(eager, args.steps)
    out["data"] = {
        "float32_batch_s": f32, "uint8_normalised_batch_s": u8, "train_step_s": step_s,
        "float32_share_of_step": f32 / step_s, "uint8_share_of_step": u8 / step_s,
        "memory_MB": {"float32": x.numel() * 4 / 1e6, "uint8": x8.numel() / 1e6},
    }  # fmt: skip
    print(json.dumps(out["data"], indent=1), flush=True)

    if not args.no_compile:
        torch.manual_seed(0)
        model = airnet().to(memory_format=torch.channels_last)
        compiled = make_step(torch.compile(model), x, y, bf16)
        t0 = time.perf_counter()
        for _ in range(3):  # compiles forward and backward
            compiled()
        first = time.perf_counter() - t0
        eager_t, comp_t = [], []
        for _ in range(args.steps):
            eager_t.append(_median_time(eager, 1))
            comp_t.append(_median_time(compiled, 1))
        e, c = statistics.median(eager_t), statistics.median(comp_t)
        saved = e - c
        out["compile"] = {
            "first_3_steps_s": first, "eager_step_s": e, "compiled_step_s": c,
            "speedup": e / c,
            "pays_back_after_steps": (first - 3 * c) / saved if saved > 0 else None,
            "recipe_steps": 5 * 235,
        }  # fmt: skip
        print(json.dumps(out["compile"], indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
