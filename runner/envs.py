"""`python -m runner.envs list | build SET... | remove SET... | lock SET...`: the environments
of other TensorFlow/Keras releases that job sides run in (`tf=` / `load_tf=`).

SET: v2.16, 2.16, tf2.16, or tf2.16-keras3.3.3 (a Keras 3 release of its own); `all` for every
release of the `tf` group.
"""

from __future__ import annotations

import argparse
import sys

from runner.core import releases
from runner.launcher import environments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.envs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help=f"the cache (default: ${environments.ENVS_DIR_ENV}, else "
                                      "~/.cache/runner/envs)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the sets offered, and the environments built")
    for name, what in (("build", "build these sets' environments (once; reused after)"),
                       ("remove", "remove these sets' environments"),
                       ("lock", "resolve these sets into the repository's lock files "
                                "(maintainers: after a release)")):
        command = commands.add_parser(name, help=what)
        command.add_argument("sets", nargs="+", metavar="SET")
    args = parser.parse_args(argv)
    if args.command == "list":
        return show(args.dir)
    try:
        chosen = [found for text in args.sets for found in (
            [releases.LibrarySet(r) for r in releases.RELEASES] if text == "all"
            else [releases.parse(text)])]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        for found in chosen:
            if args.command == "build":
                python = environments.ensure(found, args.dir)
                print(f"{found.name}: {python}")
            elif args.command == "remove":
                removed = environments.remove(found, args.dir)
                print(f"{found.name}: removed {len(removed)} environment(s)"
                      + "".join(f"\n  {p}" for p in removed))
            else:
                environments.compile_lock(found, environments.repository_lock(found))
                print(f"{found.name}: {environments.repository_lock(found)}")
    except environments.BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def show(directory: str | None) -> int:
    print(f"Sets (tf=/load_tf= options; {environments.platform_tag()}):")
    for release in releases.RELEASES:
        found = releases.LibrarySet(release)
        locked = environments.repository_lock(found)
        print(f"  {found.option:7} {found.name:8} "
              + (environments.shown(environments.pins(locked.read_text())) if locked.is_file()
                 else "not locked for this platform: resolved when first built"))
    print(f"Built in {environments.root(directory)}:")
    built = environments.built(directory)
    for path, record in built:
        stale = " stale: no job uses it now" if environments.stale(path, record) else ""
        print(f"  {record['set']:20} {environments.shown(record['versions'])}  "
              f"({record['built']}, {path.name}){stale}")
    if not built:
        print("  none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
