"""``python -m gsn_metric.train {fit,evaluate,synthesize} ...``.

Each sub-command lives in the module that does its work and exposes ``add_arguments(parser)`` and
``main(args) -> int``; this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> (module, one-line help)
_COMMANDS = {
    "fit": ("gsn_metric.train.loop", "train GSN on a rated dataset (or synthetic KADID pairs)"),
    "evaluate": ("gsn_metric.train.evaluate", "correlations of a weight file with a dataset's human scores"),
    "release": ("gsn_metric.train.release", "train, measure against the classic peers, and install a weight file"),
    "synthesize": ("gsn_metric.train.synthetic", "write a KADID-layout dataset from a folder of pristine images"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gsn_metric.train",
        description="Retrain, evaluate and make training data for the GSN image-quality metric.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(_COMMANDS) + "}")
    helps = []
    for name, (module, help_) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
        helps.append(p.format_help())
    # `--help` documents every flag of every sub-command, not only their names.
    parser.epilog = "\n".join(helps)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a sub-command. Expected failures (bad flags or files, a changed split on resume, an existing run
    without --resume, a damaged checkpoint, a missing extra) are one line on stderr and exit status 2;
    a diverged run is one line and status 1; anything else is a bug and keeps its traceback."""
    try:
        args = build_parser().parse_args(argv)
        return importlib.import_module(args._module).main(args)
    except ModuleNotFoundError as err:
        if err.name not in _EXTRA_MODULES:
            raise
        print(f"error: the training tools need the 'train' extra ({err.name} is missing): "
              "pip install 'gsn-metric[train]'", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


# packages of the train extra (setup.cfg): missing ones get an install hint instead of a traceback
_EXTRA_MODULES = {"scipy", "pytorch_msssim"}


if __name__ == "__main__":
    sys.exit(main())
