"""The ``lstmfast`` command (``python -m lstmfast``): ``demo`` and ``info``."""

import argparse
import sys

__all__ = ["main"]


def _parser():
    from . import demo
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="lstmfast",
        description="lstmfast: Deeplearning4j's LSTM (GravesLSTM, LSTM) as typed Cython over BLAS, "
                    "for training and inference on the CPU.")
    parser.add_argument("--version", action="version", version=f"lstmfast {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo_parser = commands.add_parser(
        "demo", help="train an LSTM on the spot (a character model of the standard library's "
                     "docstrings, or --task reber)",
        description="Train an LSTM on the CPU with nothing to download: a character-level language "
                    "model like DL4J's flagship example (default), or the embedded Reber grammar "
                    "(--task reber).")
    demo.add_arguments(demo_parser)
    commands.add_parser("info", help="version, dtypes, the BLAS in use and its threads, the fast code path",
                        description="Show what lstmfast runs on.")
    return parser


def main(argv=None):
    """Entry point of ``python -m lstmfast`` and of the ``lstmfast`` console script; returns
    the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from . import demo
            return demo.run(args)
        if args.command == "info":
            from . import _info
            return _info.run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly
        import os
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
