"""The ``onecycle`` command.

Usage errors print one line to stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from onecycle.errors import ConfigError

__all__ = ["main"]


class UsageError(Exception):
    """A command-line usage error: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, status 2
        raise UsageError(f"{self.prog}: {message}")


def _schedule_spec(args: argparse.Namespace, total: int) -> dict:
    from onecycle import schedules as S

    if args.kind == "one-cycle":
        return {
            "lr": S.one_cycle(
                args.lr_max, args.div, args.div_final, args.pct_start, args.anneal, args.three_phase
            ),
            "momentum": S.one_cycle_moms(
                tuple(args.moms), args.pct_start, args.anneal, args.three_phase
            ),
        }
    if args.kind in ("triangular", "triangular2", "exp_range"):
        base = args.lr_max / args.div
        step = args.step_size or max(1, total // 4)
        if args.kind == "exp_range":
            return {"lr": S.exp_range(base, args.lr_max, step, total, args.gamma)}
        return {"lr": getattr(S, args.kind)(base, args.lr_max, step, total)}
    if args.kind == "sgdr":
        return {"lr": S.sgdr(args.lr_max, 0.0, args.cycles, args.cycle_mult)}
    raise UsageError(f"unknown schedule kind {args.kind!r}")


def _cmd_schedule(args: argparse.Namespace) -> int:
    from onecycle.plots import plot_schedule
    from onecycle.schedules import sample

    spec = _schedule_spec(args, args.steps)
    out = Path(args.out)
    png = plot_schedule(spec, args.steps, out / "schedule.png", title=args.kind)
    values = {k: sample(v, args.steps) for k, v in spec.items()}
    (out / "schedule.json").write_text(json.dumps({"kind": args.kind, "values": values}))
    marks = sorted({0, args.steps // 4, args.steps // 2, 3 * args.steps // 4, args.steps - 1})
    keys = list(values)
    print(f"{'step':>6}  " + "  ".join(f"{k:>12}" for k in keys))
    for i in marks:
        print(f"{i:>6}  " + "  ".join(f"{values[k][i]:>12.6g}" for k in keys))
    print(f"plot: {png}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``onecycle`` argument parser (subcommands ``schedule``, ...)."""
    p = _Parser(prog="onecycle", description="Leslie Smith's training method on PyTorch.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("schedule", help="preview a schedule without training (PNG + JSON)")
    s.add_argument(
        "--kind",
        default="one-cycle",
        choices=["one-cycle", "triangular", "triangular2", "exp_range", "sgdr"],
    )
    s.add_argument("--steps", type=int, default=1000, help="optimizer steps in the run")
    s.add_argument("--lr-max", type=float, default=0.1, help="peak learning rate")
    s.add_argument(
        "--div", type=float, default=25.0, help="start LR = lr_max/div (CLR: base LR = lr_max/div)"
    )
    s.add_argument("--div-final", type=float, default=1e5, help="end LR = lr_max/div_final")
    s.add_argument("--pct-start", type=float, default=0.25, help="fraction of steps warming up")
    s.add_argument("--anneal", choices=["cos", "linear"], default="cos")
    s.add_argument("--three-phase", action="store_true", help="Smith's three-phase 1cycle")
    s.add_argument(
        "--moms",
        type=float,
        nargs=3,
        default=[0.95, 0.85, 0.95],
        metavar=("HI", "LO", "END"),
        help="momentum (or Adam beta1) through the cycle",
    )
    s.add_argument(
        "--step-size",
        type=int,
        default=None,
        help="CLR half-cycle in iterations (default: steps/4)",
    )
    s.add_argument("--gamma", type=float, default=0.999, help="exp_range amplitude decay")
    s.add_argument("--cycles", type=int, default=3, help="SGDR restarts")
    s.add_argument("--cycle-mult", type=float, default=2.0, help="SGDR cycle growth")
    s.add_argument("--out", default="runs/schedule", help="output folder")
    s.set_defaults(func=_cmd_schedule)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``onecycle`` command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except (UsageError, ConfigError) as e:
        print(f"onecycle: error: {e}" if isinstance(e, ConfigError) else str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onecycle: interrupted", file=sys.stderr)
        return 130
