"""python -m analysis EXPERIMENT_DIR [--include-stopped] [--compare DIR2 ...] [--out DIR]"""
from __future__ import annotations

from analysis._cli import ArgumentParser, run_cli
from layerout.errors import UserError
from layerout.files import WriteError


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m analysis",
        description="Pareto front (validation accuracy vs compute saved), hypervolume, knee, plots and an "
        "HTML report of a finished (or partly finished) search. Needs no Ray: reads the stored results.",
        epilog="Writes pareto.csv, pareto.png, front_policies.png, curves.png, report.html and "
        "policies/<trial_id>.json (every front policy) into the experiment directory (or --out).",
    )
    p.add_argument("experiment_dir", metavar="EXPERIMENT_DIR", help="the experiment directory tune_main.py printed")
    p.add_argument("--include-stopped", action="store_true",
                   help="let trials that the scheduler stopped before the epoch budget enter the front (marked); "
                   "by default only trials that trained the full budget do")
    p.add_argument("--compare", nargs="+", metavar="DIR", default=[],
                   help="other experiment directories whose fronts are drawn with this one in compare.png")
    p.add_argument("--out", metavar="DIR", help="write the files here instead of into EXPERIMENT_DIR")
    p.add_argument("--no-policies", action="store_true", help="do not write policies/<trial_id>.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from analysis.run import run_analysis  # pandas and matplotlib only now: --help answers at once

    try:
        run_analysis(args.experiment_dir, include_stopped=args.include_stopped, out_dir=args.out,
                     compare=args.compare, write_policies=not args.no_policies)
    except WriteError as exc:
        if args.out is not None:
            raise
        raise UserError(f"{exc}; write the analysis elsewhere with --out DIR") from None
    return 0


if __name__ == "__main__":
    run_cli(main)
