"""`pylvs`: the umbrella command. Each subcommand is a module `pylvs.cli.cmd_<name>` exposing
`HELP` (one line), `add_arguments(parser)` and `run(args) -> int`, so adding one touches no other file."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

import pylvs.cli


def _commands() -> dict[str, ModuleType]:
    cmds: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(pylvs.cli.__path__):
        if info.name.startswith("cmd_"):
            cmds[info.name[4:].replace("_", "-")] = importlib.import_module(f"pylvs.cli.{info.name}")
    return cmds


def main(argv: list[str] | None = None) -> int:
    cmds = _commands()
    parser = argparse.ArgumentParser(prog="pylvs", description="Linux Virtual Server in Python")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in sorted(cmds.items()):
        p = sub.add_parser(name, help=getattr(mod, "HELP", ""), description=getattr(mod, "HELP", ""))
        mod.add_arguments(p)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        rc: int = cmds[args.command].run(args)
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
