"""The ``onecycle`` command: its subcommands, and ``main``.

Flags and their parsing are in ``onecycle.cli_parser``. Usage errors print one line to
stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from onecycle.cli_parser import UsageError, build_parser, fit_config
from onecycle.errors import ConfigError

__all__ = ["UsageError", "build_parser", "main"]


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is (as SIGINT raises KeyboardInterrupt), so the
    range test restores the model and a checkpointing fit stops cleanly."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated(signum)


def _cmd_schedule(args: argparse.Namespace) -> int:
    from onecycle.config import FitConfig, check_out
    from onecycle.lock import FolderLock
    from onecycle.run import schedules_for

    cfg = FitConfig(
        epochs=args.epochs, schedule=args.schedule, lr_max=args.lr_max, div=args.div,
        div_final=args.div_final, pct_start=args.pct_start, moms=tuple(args.moms),
        anneal=args.anneal, three_phase=args.three_phase, clr_mode=args.clr_mode,
        step_size=args.step_size, gamma=args.gamma, cycles=args.cycles,
        cycle_mult=args.cycle_mult, warmup=args.warmup, cooldown=args.cooldown,
        cooldown_pct=args.cooldown_pct, out=None,
    ).resolved()  # fmt: skip
    if not isinstance(args.steps, int) or args.steps < 1:
        raise ConfigError("steps", args.steps, "an integer >= 1")
    spec = schedules_for(cfg, args.steps)
    with FolderLock(check_out(args.out)) as lock:  # one writer per folder (onecycle.lock)
        return _write_schedule(args, spec, lock.folder)


def _write_schedule(args: argparse.Namespace, spec: dict, out: Path) -> int:
    from onecycle.plots import plot_schedule
    from onecycle.schedules import sample

    png = out / "schedule.png"
    plot_schedule(spec, args.steps, png, title=args.schedule)
    values = {k: sample(v, args.steps) for k, v in spec.items()}
    (out / "schedule.json").write_text(json.dumps({"schedule": args.schedule, "values": values}))
    marks = sorted({0, args.steps // 4, args.steps // 2, 3 * args.steps // 4, args.steps - 1})
    keys = list(values)
    print(f"{'step':>6}  " + "  ".join(f"{k:>12}" for k in keys))
    for i in marks:
        print(f"{i:>6}  " + "  ".join(f"{values[k][i]:>12.6g}" for k in keys))
    print(f"plot: {png}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from onecycle.run import run_fit

    result = run_fit(fit_config(args), stream=sys.stdout)
    final = result.metrics["final"]
    if args.json:
        print(json.dumps(result.metrics, default=str))
        return 0
    acc = final["test_accuracy"]
    print(
        f"test accuracy {acc:.4f} after {final['optimizer_steps']} steps "
        f"in {final['train_seconds']:.1f}s"
        if acc is not None
        else "done"
    )
    tta = final.get("tta")
    if tta and tta["test_accuracy"] is not None:
        print(f"test accuracy with test-time augmentation ({tta['views']}): "
              f"{tta['test_accuracy']:.4f}")  # fmt: skip
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    return 0


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from onecycle.run import run_lr_find

    res, files = run_lr_find(
        fit_config(args), start_lr=args.start_lr, end_lr=args.end_lr, num_it=args.num_it,
        mode=args.mode,
    )  # fmt: skip
    if args.json:
        print(json.dumps(res.to_dict()))
        return 0
    _print_suggestions(res)
    for kind, path in files.items():
        print(f"{kind}: {path}")
    return 0


def _print_suggestions(res) -> None:  # res: RangeTestResult
    print(f"range test: {len(res.lrs)} steps, {res.stop_reason}")
    print(f"{'rule':>12}  {'lr':>10}  why")
    for name, sug in res.suggestions.items():
        lr = f"{sug.lr:10.3g}" if sug.lr is not None else f"{'-':>10}"
        extra = f" (bounds {sug.bounds[0]:.3g} .. {sug.bounds[1]:.3g})" if sug.bounds else ""
        print(f"{name:>12}  {lr}  {sug.reason}{extra}")
    rec = res.recommended
    tail = f"{rec.lr:10.3g}  {rec.reason}" if rec else f"{'-':>10}  none: no reliable lr_max"
    print(f"{'lr_max':>12}  {tail}")


def _cmd_demo(args: argparse.Namespace) -> int:
    import dataclasses

    from onecycle.config import FitConfig
    from onecycle.run import run_fit

    out = Path(args.out)
    # the demo redoes itself: a second `make demo` replaces the first one's run
    cfg = FitConfig(dataset="mnist1d", epochs=args.epochs, out=str(out), seed=args.seed,
                    progress=not args.no_progress, overwrite=True)  # fmt: skip
    print("== 1. lr_max='auto' on MNIST-1D (1-D CNN, AdamW): an LR range test, then short")
    print("   1cycle probes at the candidates it suggests; everything restored afterwards")
    print(
        f"== 2. then 1cycle for {args.epochs} epochs at the pick: lr lr_max/25 -> lr_max -> "
        "lr_max/1e5, momentum (beta1) 0.95 -> 0.85 -> 0.95\n"
    )
    result = run_fit(dataclasses.replace(cfg, lr_max="auto"), stream=sys.stdout)
    final = result.metrics["final"]
    print(
        f"\ntest accuracy {final['test_accuracy']:.4f} after {final['optimizer_steps']} "
        f"steps, {final['train_seconds']:.1f}s of training"
    )
    print("(published MNIST-1D test accuracy: logistic 32%, MLP 68%, CNN ~94%; Greydanus 2020)")
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from onecycle.study import StudyConfig, run_study

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("threads", args.threads, "an integer >= 1")
        import torch

        torch.set_num_threads(args.threads)
    cfg = StudyConfig(
        dataset=args.dataset, model=args.model, opt=args.opt, bs=args.bs, wd=args.wd,
        epochs=args.epochs, lr_max=args.lr_max, seeds=args.seeds,
        evals_per_epoch=args.evals_per_epoch,
        targets=tuple(args.targets) if args.targets else None, ablations=args.ablations,
        quick=args.quick, train_samples=args.train_samples, data_dir=args.data_dir,
        download=args.download, device=args.device, out=args.out,
    )  # fmt: skip
    result = run_study(cfg, stream=sys.stdout)
    print()
    print(Path(result.files["table"]).read_text())
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    return 0


# a file system that took no more: the one-line message, not a traceback
_WRITE_FAILED = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)

COMMANDS = {
    "schedule": _cmd_schedule, "fit": _cmd_fit, "lr-find": _cmd_lr_find, "study": _cmd_study,
    "demo": _cmd_demo,
}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``onecycle`` command; returns the exit status."""
    from onecycle import distributed as D
    from onecycle.callbacks import NonFiniteLossError
    from onecycle.checkpoint import CheckpointError, CheckpointWriteError, TrainingInterrupted
    from onecycle.data import DataError

    # our own INFO lines; other libraries' only from WARNING up (matplotlib says at INFO
    # that it "generated new fontManager" on its first run)
    logging.basicConfig(level=logging.WARNING, format="onecycle: %(message)s")
    logging.getLogger("onecycle").setLevel(logging.INFO)
    started = False
    try:
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave SIGTERM alone
        old_term = None
    try:
        args = build_parser().parse_args(argv)
        # under torchrun: join the process group; only rank 0 prints results
        started = D.init(device=getattr(args, "device", None) or "cpu")  # --device's default
        if started and not D.is_main():
            logging.getLogger("onecycle").setLevel(logging.WARNING)
            sys.stdout = open(os.devnull, "w")  # rank > 0: the process ends after main
        return int(COMMANDS[args.command](args))
    except (UsageError, ConfigError) as e:
        print(f"onecycle: error: {e}" if isinstance(e, ConfigError) else str(e), file=sys.stderr)
        return 2
    except DataError as e:
        print(f"onecycle: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"onecycle: training stopped: {e}", file=sys.stderr)
        return 1
    except CheckpointWriteError as e:
        print(f"onecycle: training stopped: {e}", file=sys.stderr)
        return 1
    except CheckpointError as e:
        print(f"onecycle: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"onecycle: {e}", file=sys.stderr)
        return 128 + e.signum
    except OSError as e:  # a result that could not be written: disk full, quota, read-only
        if e.errno not in _WRITE_FAILED:
            raise
        where = f" {e.filename}" if e.filename else ""
        print(f"onecycle: error: could not write{where} ({e.strerror or e}); free space there "
              "and run again (a fit with --resume continues from its last checkpoint)",
              file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        print(f"onecycle: interrupted by {name}: stopped; a range test or probe was undone, "
              "a fit keeps its last checkpoint", file=sys.stderr)  # fmt: skip
        return 128 + signum
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if started:
            D.shutdown()  # free DDP models, then leave the group: a clean exit
