"""The ``onecycle`` command line: its flags, and the typed config they become.

``build_parser`` declares every subcommand and flag (``onecycle <command> --help`` prints
them); ``fit_config`` turns parsed ``fit``/``lr-find`` flags into a ``FitConfig``, which
checks the values. The commands themselves are in ``onecycle.cli``. argparse's own errors
raise ``UsageError`` (one line, exit status 2) instead of exiting.

>>> args = build_parser().parse_args(["fit", "--epochs", "2", "--lr-max", "auto"])
>>> args.command, args.epochs, args.lr_max
('fit', 2, 'auto')
"""

from __future__ import annotations

import argparse

__all__ = ["UsageError", "build_parser", "fit_config"]


class UsageError(Exception):
    """A command-line usage error: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, status 2
        raise UsageError(f"{self.prog}: {message}")


def _lr_max(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def _recipes(key: str) -> str:
    """Each data set's recipe value for ``key``, for a flag's help: "mnist1d 15, ..."."""
    from onecycle.config import RECIPES

    def fmt(v: object) -> str:
        return ("on" if v else "off") if isinstance(v, bool) else f"{v:g}" if isinstance(
            v, float) else str(v)  # fmt: skip

    return ", ".join(f"{name} {fmt(r[key])}" for name, r in RECIPES.items())


def _recipe_table() -> str:
    """The recipes, one line each: the defaults of ``fit`` and ``lr-find`` per data set."""
    from onecycle.config import RECIPES

    lines = ["each data set's recipe (what an unset flag takes; onecycle.recipe(NAME) in "
             "Python):"]  # fmt: skip
    for name, r in RECIPES.items():
        lines.append(f"  {name}: --model {r['model']} --opt {r['opt']} --lr-max {r['lr_max']:g} "
                     f"--bs {r['bs']} --wd {r['wd']:g} --epochs {r['epochs']} "
                     f"--{'' if r['amp'] else 'no-'}amp --label-smoothing "
                     f"{r['label_smoothing']:g}")  # fmt: skip
    return "\n".join(lines)


def _add_data_args(f: argparse.ArgumentParser) -> None:
    g = f.add_argument_group("data and model")
    g.add_argument(
        "--dataset",
        choices=["fashion-mnist", "mnist1d"],
        default="mnist1d",
        help="fashion-mnist: IDX files (Debian's dataset-fashion-mnist, --data-dir "
        "or --download); mnist1d: generated, no download",
    )
    g.add_argument("--data-dir", default=None, help="folder holding the Fashion-MNIST IDX files")
    g.add_argument(
        "--download",
        action="store_true",
        help="fetch Fashion-MNIST (checksummed) if it is not found locally",
    )
    g.add_argument(
        "--model",
        default=None,
        choices=["cnn", "airnet", "airnet-wide", "resnet", "cnn1d", "cnn1d-bn", "mlp"],
        help=f"zoo model (default: the recipe's: {_recipes('model')})",
    )
    g.add_argument(
        "--factory",
        default=None,
        metavar="MODULE:FUNCTION",
        help="your own model and data: a function returning "
        "(model, train_batches, valid_batches, loss_func)",
    )
    g.add_argument(
        "--train-samples",
        type=int,
        default=None,
        help="train on a random subset of this many samples (quick runs)",
    )
    g.add_argument("--recipe", choices=["fast", "best"], default="fast",
                   help="fast: the data set's recipe (default); best: the best accuracy in "
                   "a short budget, with crops, flips, more epochs and "
                   "test-time augmentation (fashion-mnist)")  # fmt: skip
    g.add_argument(
        "--crop-pad",
        type=int,
        default=None,
        help="random-crop augmentation padding (default: the recipe's, 0 = off)",
    )
    g.add_argument(
        "--hflip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips (default: the recipe's)",
    )
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="image models in channels_last memory format (default: the recipe's: "
                   f"{_recipes('channels_last')})")  # fmt: skip
    g.add_argument("--label-smoothing", type=float, default=None, metavar="EPS",
                   help="cross-entropy label smoothing (default: the recipe's: "
                   f"{_recipes('label_smoothing')})")  # fmt: skip


def _add_optim_args(f: argparse.ArgumentParser) -> None:
    g = f.add_argument_group("optimization")
    g.add_argument(
        "--opt",
        choices=["sgd", "adamw"],
        default=None,
        help=f"sgd (Nesterov) or adamw (default: the recipe's: {_recipes('opt')})",
    )
    g.add_argument("--bs", type=int, default=None,
                   help=f"batch size (default: the recipe's: {_recipes('bs')})")  # fmt: skip
    g.add_argument(
        "--wd",
        type=_lr_max,
        default=None,
        help="decoupled weight decay (not on biases/norm layers); large LRs "
        "regularize, so keep it small. 'auto' (fit, 1cycle): Smith's weight-decay test "
        f"picks one of 0, 1e-5, 1e-4, 1e-3, 1e-2 (default: the recipe's: {_recipes('wd')})",
    )
    g.add_argument(
        "--accumulate",
        type=int,
        default=1,
        help="batches per optimizer step (the schedule counts steps)",
    )
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    g.add_argument("--seed", type=int, default=0, help="seed for weights and data order")


def _add_fit_args(f: argparse.ArgumentParser) -> None:
    _add_data_args(f)
    _add_optim_args(f)
    g = f.add_argument_group("length and peak")
    g.add_argument("--epochs", type=int, default=None,
                   help="passes over the training data (default: the recipe's: "
                        f"{_recipes('epochs')}; with --budget an upper bound, default "
                        "none)")  # fmt: skip
    g.add_argument(
        "--budget",
        default=None,
        metavar="TIME",
        help="train for this wall-clock time instead ('90s', '3m', '1.5h', or seconds): the "
        "schedule's progress is time used / budget (steps per second measured as it goes; "
        "validation and checkpoints count), and the run ends on time with the LR annealed. "
        "The step count, hence the weights, vary with the machine's speed",
    )
    g.add_argument(
        "--lr-max",
        type=_lr_max,
        default=None,
        help="peak LR (one-cycle, clr), or the LR (const) / start LR (decays); "
        "'auto' searches first: a range test places candidate peaks, short 1cycle probes "
        "rank them on held-back training samples (clr: the range test's bounds); default: "
        f"the recipe's: {_recipes('lr_max')}",
    )
    g.add_argument(
        "--auto-budget", type=float, default=None, metavar="FRACTION",
        help="with --lr-max auto: what the search may spend beyond the run, as a fraction "
        "of the run's optimizer steps (default 0.3; from about 0.65, e.g. 1.0, the probes' "
        "pick and its neighbours also duel as prefixes of the run to 30%% of it)",
    )  # fmt: skip
    _add_schedule_args(f)
    _add_run_args(f)


def _add_schedule_args(f: argparse.ArgumentParser) -> None:
    """The schedule's shape: shared by ``fit`` and the ``schedule`` preview."""
    from onecycle.config import SCHEDULES

    g = f.add_argument_group("schedule (Smith's method)")
    g.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default="one-cycle",
        help="one-cycle: warm up to lr_max, anneal far below (super-convergence); "
        "clr: cyclical LR between lr_max/div and lr_max; const/step/exp/time: "
        "the classic fixed schedules; sgdr: cosine warm restarts; wsd: "
        "warmup-stable-decay (the trapezoid of LLM training)",
    )
    g.add_argument(
        "--div",
        type=float,
        default=25.0,
        help="one-cycle starts at lr_max/div; clr's lower bound is lr_max/div",
    )
    g.add_argument(
        "--div-final",
        type=float,
        default=None,
        help="one-cycle ends at lr_max/div_final (default 1e5; fastai's meaning, "
        "torch's final_div_factor is relative to the start); exp/time decay "
        "end at lr_max/div_final (default 100)",
    )
    g.add_argument(
        "--pct-start",
        type=float,
        default=0.25,
        help="fraction of the steps spent warming up (fastai 0.25, torch 0.3)",
    )
    g.add_argument(
        "--moms",
        type=float,
        nargs=3,
        default=[0.95, 0.85, 0.95],
        metavar=("HI", "LO", "END"),
        help="cyclical momentum (SGD momentum or Adam beta1), against the LR",
    )
    g.add_argument(
        "--anneal",
        choices=["cos", "linear"],
        default="cos",
        help="shape of the one-cycle phases (linear = Smith's papers)",
    )
    g.add_argument(
        "--three-phase",
        action="store_true",
        help="Smith's three-phase 1cycle: up, down to the start LR, annihilate",
    )
    g.add_argument(
        "--clr-mode",
        choices=["triangular", "triangular2", "exp_range"],
        default="triangular2",
        help="CLR amplitude policy",
    )
    g.add_argument(
        "--step-size",
        type=int,
        default=None,
        help="CLR half-cycle in optimizer steps (default: 2 epochs)",
    )
    g.add_argument("--gamma", type=float, default=0.99994, help="exp_range decay per step")
    g.add_argument("--cycles", type=int, default=3, help="SGDR: number of cycles")
    g.add_argument("--cycle-mult", type=float, default=2.0, help="SGDR: cycle length growth")
    g.add_argument("--warmup", type=float, default=0.05, help="wsd: warm-up fraction of the run")
    g.add_argument("--cooldown", choices=["linear", "cos", "1-sqrt"], default="1-sqrt",
                   help="wsd: the decay's shape (1-sqrt: Hägele et al. 2024's best)")  # fmt: skip
    g.add_argument("--cooldown-pct", type=float, default=0.2,
                   help="wsd: fraction of the run spent decaying to 0")  # fmt: skip


def _add_amp_arg(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mixed precision: bf16 on CPU, fp16 + GradScaler on CUDA (default: the "
        f"recipe's where the hardware has it natively: {_recipes('amp')})",
    )


def _add_run_args(f: argparse.ArgumentParser) -> None:
    g = f.add_argument_group("training")
    g.add_argument("--clip", type=float, default=None, help="clip the gradient norm")
    _add_amp_arg(g)
    g.add_argument("--tta", choices=["flip", "flip+shift", "none"], default=None,
                   help="also report the test accuracy with test-time augmentation (the "
                   "outputs averaged over flipped / shifted images; default: the recipe's, "
                   "flip+shift for --recipe best)")  # fmt: skip
    g = f.add_argument_group("checkpoints and resume")
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="K",
        help="also checkpoint every K optimizer steps (epoch ends always are), "
        "atomically, in OUT/checkpoints",
    )
    g.add_argument("--keep", type=int, default=3, help="checkpoints to keep")
    g.add_argument(
        "--log",
        choices=["csv", "tensorboard"],
        default=None,
        help="per-step LR, momentum, wd, loss; per-epoch metrics; in OUT/logs",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue exactly from the newest good checkpoint in OUT (or start "
        "fresh if there is none): re-run the same command after any stop",
    )
    g.add_argument(
        "--resume-from", default=None, metavar="PATH", help="continue from this checkpoint file"
    )
    g.add_argument(
        "--extend",
        action="store_true",
        help="with --resume: the checkpoint's run had fewer --epochs; lengthen it from "
        "there without a second warm-up (the extra steps hold its LR, then the rest)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="a fresh run into an OUT that holds another run's checkpoints: clear them, and "
        "its metrics, plots and logs, first (without it such a run is refused)",
    )
    g = f.add_argument_group("output")
    g.add_argument("--out", default="runs/fit", help="folder for metrics.json and plots (one "
                   "run at a time: locked while it runs)")  # fmt: skip
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--json", action="store_true", help="print metrics.json's content")


def fit_config(args: argparse.Namespace):  # -> FitConfig
    from onecycle.config import FitConfig

    if args.command == "lr-find":
        return FitConfig(
            dataset=None if args.factory else args.dataset, data_dir=args.data_dir,
            download=args.download, factory=args.factory, model=args.model, opt=args.opt,
            recipe=args.recipe, bs=args.bs, wd=args.wd, accumulate=args.accumulate,
            crop_pad=args.crop_pad, hflip=args.hflip, train_samples=args.train_samples,
            seed=args.seed,
            device=args.device, out=args.out, progress=False, amp=args.amp,
            channels_last=args.channels_last, label_smoothing=args.label_smoothing,
        )  # fmt: skip
    return FitConfig(
        dataset=None if args.factory else args.dataset, data_dir=args.data_dir,
        download=args.download, factory=args.factory, model=args.model, opt=args.opt,
        epochs=args.epochs, schedule=args.schedule, lr_max=args.lr_max, div=args.div,
        div_final=args.div_final, pct_start=args.pct_start, moms=tuple(args.moms),
        anneal=args.anneal, three_phase=args.three_phase, clr_mode=args.clr_mode,
        step_size=args.step_size, gamma=args.gamma, cycles=args.cycles,
        cycle_mult=args.cycle_mult, warmup=args.warmup, cooldown=args.cooldown,
        cooldown_pct=args.cooldown_pct, bs=args.bs, wd=args.wd, accumulate=args.accumulate,
        clip=args.clip, amp=args.amp, crop_pad=args.crop_pad, hflip=args.hflip,
        channels_last=args.channels_last, label_smoothing=args.label_smoothing,
        train_samples=args.train_samples, seed=args.seed, device=args.device, out=args.out,
        progress=not args.no_progress, checkpoint_every=args.checkpoint_every, keep=args.keep,
        resume=args.resume, resume_from=args.resume_from, extend=args.extend, log=args.log,
        budget=args.budget, auto_budget=args.auto_budget, overwrite=args.overwrite,
        recipe=args.recipe, tta=args.tta,
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``onecycle`` argument parser: subcommands ``schedule``, ``fit``, ``lr-find``,
    ``study``, ``demo`` (``args.command``), each with its flags."""
    p = _Parser(prog="onecycle", description="Leslie Smith's training method on PyTorch.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("schedule", help="preview a schedule without training (PNG + JSON)")
    s.add_argument("--steps", type=int, default=1000, help="optimizer steps in the run")
    s.add_argument("--epochs", type=int, default=5, help="epochs those steps span (CLR's default "
                   "step size is 2 epochs)")  # fmt: skip
    s.add_argument("--lr-max", type=float, default=0.1, help="peak (or starting) LR")
    _add_schedule_args(s)
    s.add_argument("--out", default="runs/schedule", help="output folder")

    f = sub.add_parser(
        "fit", help="train a model with a schedule; table, metrics.json and plots",
        description="Train on real data with Smith's 1cycle (default), CLR or a fixed "
                    "schedule.\nPrints the configuration it resolved, then trains; writes "
                    "OUT/metrics.json,\nOUT/loss.png and OUT/schedule.png.",
        epilog=_recipe_table(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    _add_fit_args(f)

    r = sub.add_parser(
        "lr-find", help="the LR range test: suggestions table, lr_find.json and lr_find.png",
        description="Train briefly while the LR grows from --start-lr to --end-lr, stop when "
                    "the loss diverges,\nrestore everything, and suggest learning rates "
                    "(valley, steep, minimum, Smith's\nCLR bounds, and an lr_max for 1cycle).",
        epilog=_recipe_table(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    _add_data_args(r)
    _add_optim_args(r)
    g = r.add_argument_group("sweep")
    g.add_argument("--start-lr", type=float, default=1e-7, help="first LR of the sweep")
    g.add_argument("--end-lr", type=float, default=10.0, help="last LR of the sweep")
    g.add_argument("--num-it", type=int, default=100, help="optimizer steps in the sweep")
    g.add_argument(
        "--mode",
        choices=["exp", "linear"],
        default="exp",
        help="exp: geometric (fastai); linear: Smith's paper",
    )
    _add_amp_arg(g)
    g = r.add_argument_group("output")
    g.add_argument("--out", default="runs/lr_find", help="folder for lr_find.json and .png")
    g.add_argument("--json", action="store_true", help="print the suggestions and curve as JSON")

    st = sub.add_parser(
        "study", help="Smith's claims on your data: fixed LRs, decays, CLR and 1cycle compared",
        description="Range test, then the same model, data and epoch budget trained with four "
                    "fixed LRs placed from the curve, step/exp/time decay, CLR triangular2 "
                    "and 1cycle; test accuracy several times per epoch. Writes "
                    "OUT/study.json, OUT/study.md and PNGs, and prints the speed-ups.",
    )  # fmt: skip
    g = st.add_argument_group("data and model")
    g.add_argument("--dataset", choices=["fashion-mnist", "mnist1d"], default="mnist1d")
    g.add_argument("--data-dir", default=None, help="folder holding the Fashion-MNIST IDX files")
    g.add_argument("--download", action="store_true", help="download Fashion-MNIST if missing")
    g.add_argument("--model", default=None, help="cnn, resnet, cnn1d, mlp (default: recipe)")
    g.add_argument("--opt", choices=["sgd", "adamw"], default=None, help="default: recipe")
    g.add_argument("--bs", type=int, default=None, help="batch size (default: recipe)")
    g.add_argument("--wd", type=float, default=None, help="weight decay (default: recipe)")
    g.add_argument("--train-samples", type=int, default=None, help="use a subset for training")
    g.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu)")
    g = st.add_argument_group("study")
    g.add_argument("--epochs", type=int, default=None,
                   help="epoch budget (default: mnist1d 30, fashion-mnist 4)")  # fmt: skip
    g.add_argument("--lr-max", type=float, default=None,
                   help="the near-optimal LR (1cycle's peak; the fixed LRs are placed around "
                        "it); default: the range test's recommendation")  # fmt: skip
    g.add_argument("--seeds", type=int, default=1, help="seeds per schedule (mean and spread)")
    g.add_argument("--evals-per-epoch", type=int, default=4, help="test evaluations per epoch")
    g.add_argument("--targets", type=float, nargs="+", default=None,
                   help="accuracies for the iterations-to-reach columns")  # fmt: skip
    g.add_argument("--ablations", action="store_true",
                   help="also: momentum, weight decay, batch size, triangle vs cosine")  # fmt: skip
    g.add_argument("--quick", action="store_true",
                   help="a smoke run: 3 epochs, 2 evaluations per epoch")  # fmt: skip
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--out", default="runs/study", help="folder for study.json, study.md, PNGs")

    d = sub.add_parser("demo", help="the whole method on MNIST-1D: range test, then 1cycle")
    d.add_argument("--epochs", type=int, default=30, help="1cycle length in epochs")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="runs/demo", help="folder for JSON and plots")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p
