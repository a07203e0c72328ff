"""The option scanner ipvsadm uses (popt 1.19), reduced to what ipvsadm's table needs.

It reproduces popt's visible behaviour: bundled short options (`-Lnc`), `--long=value`, `-t=value`
and `-tvalue`, an optional argument (`-p [timeout]`) taken only when the next word does not start
with `-`, a mandatory argument taken whatever it looks like, `--` ending the options, non-option
words collected as leftovers in order, and popt's error codes and texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ArgKind(Enum):
    NONE = 0
    REQUIRED = 1
    OPTIONAL = 2


@dataclass(frozen=True, slots=True)
class OptSpec:
    long: str | None
    short: str | None
    arg: ArgKind
    tag: str  # what the scanner returns for this option


POPT_ERROR_NOARG = -10
POPT_ERROR_BADOPT = -11
POPT_ERROR_UNWANTEDARG = -12

POPT_MESSAGES = {
    POPT_ERROR_NOARG: "missing argument",
    POPT_ERROR_BADOPT: "unknown option",
    POPT_ERROR_UNWANTEDARG: "option does not take an argument",
}


@dataclass(frozen=True, slots=True)
class PoptError:
    code: int
    bad_option: str  # the whole word being scanned, as poptBadOption() gives it

    @property
    def message(self) -> str:
        return f"{self.bad_option}: {POPT_MESSAGES[self.code]}"


class OptTable:
    """The options a program accepts, indexed by long and by short name (build it once)."""

    def __init__(self, specs: list[OptSpec]) -> None:
        self.long = {o.long: o for o in specs if o.long}
        self.short = {o.short: o for o in specs if o.short}


class Scanner:
    """poptGetNextOpt / poptGetArg over argv[1:]."""

    def __init__(self, args: list[str], table: OptTable) -> None:
        self.args = args
        self.next = 0
        self.leftovers: list[str] = []
        self._rest_leftover = False
        self._next_char: str | None = None  # rest of a bundle of short options
        self._long = table.long
        self._short = table.short

    def _bad_word(self) -> str:
        return self.args[self.next - 1] if self.next > 0 else ""

    def next_opt(self) -> tuple[str, str | None] | PoptError | None:
        """The next option as (tag, argument), a PoptError, or None at the end."""
        while True:
            long_arg: str | None = None
            opt: OptSpec | None = None
            if self._next_char is not None:
                chars = self._next_char
                self._next_char = None
                opt = self._short.get(chars[0])
                if opt is None:
                    return PoptError(POPT_ERROR_BADOPT, self._bad_word())
                rest = chars[1:]
                if rest:
                    if rest[0] == "=":
                        if opt.arg is ArgKind.NONE:
                            return PoptError(POPT_ERROR_UNWANTEDARG, self._bad_word())
                        rest = rest[1:]
                    self._next_char = rest
            else:
                if self.next >= len(self.args):
                    return None
                word = self.args[self.next]
                self.next += 1
                if self._rest_leftover or not word.startswith("-") or word == "-":
                    self.leftovers.append(word)
                    continue
                if word == "--":
                    self._rest_leftover = True
                    continue
                if word.startswith("--"):
                    name, eq, value = word[2:].partition("=")
                    opt = self._long.get(name)
                    if opt is None:
                        return PoptError(POPT_ERROR_BADOPT, word)
                    if eq:
                        if opt.arg is ArgKind.NONE:
                            return PoptError(POPT_ERROR_UNWANTEDARG, word)
                        long_arg = value
                else:
                    self._next_char = word[1:]
                    continue

            if opt.arg is ArgKind.NONE:
                return (opt.tag, None)
            if long_arg is not None:
                return (opt.tag, long_arg)
            if self._next_char is not None:
                arg = self._next_char
                self._next_char = None
                return (opt.tag, arg)
            if self.next >= len(self.args):
                if opt.arg is ArgKind.OPTIONAL:
                    return (opt.tag, None)
                return PoptError(POPT_ERROR_NOARG, self._bad_word())
            nxt = self.args[self.next]
            if opt.arg is ArgKind.OPTIONAL and nxt.startswith("-"):
                return (opt.tag, None)
            self.next += 1
            return (opt.tag, nxt)

    def get_arg(self) -> str | None:
        """poptGetArg: the next leftover word (call after the options are exhausted)."""
        if self.leftovers:
            return self.leftovers.pop(0)
        return None
