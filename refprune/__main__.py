"""``python -m refprune COMMAND``: ``fixtures DIR`` writes the golden fixtures
(:mod:`refprune.fixtures`); ``demo`` runs the demo (:mod:`refprune.demo`)."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m refprune", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fx = sub.add_parser("fixtures", help="write golden fixtures (.npz + manifest.json) into DIR")
    fx.add_argument("directory")
    fx.add_argument("--quiet", action="store_true", help="no progress lines")
    sub.add_parser("demo", help="train, inspect and prune a small net on built-in data (python -m refprune.demo)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "fixtures":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        from .fixtures import write_fixtures

        manifest = write_fixtures(args.directory, progress=not args.quiet)
        print(f"wrote {len(manifest['cases'])} cases and manifest.json to {args.directory}")
        return 0
    from . import demo

    return demo.main(rest)


if __name__ == "__main__":
    sys.exit(main())
