"""keepalived.conf as text: lines, comments, quoting, parameters, conditionals and includes.

The result is a tree of statements (a keyword, its words, an optional block), each remembering the
file and line it came from so every later message can point at it. Nothing here knows what a keyword
means: that is the keyword table's job (see keywords.py).
"""

from __future__ import annotations

import glob
import os
import re
import socket
from dataclasses import dataclass, field

from pylvs.health.config.errors import ConfigError, Where

INCLUDE_WORDS = frozenset({"include", "includer", "includem", "includew", "includeb", "includea"})
MAX_INCLUDE_DEPTH = 16
_PARAM_DEF = re.compile(r"^\s*\$([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_PARAM_USE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)(?=\s|$)")
_ESCAPES = {"a": "\a", "b": "\b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


@dataclass(slots=True)
class Stmt:
    """One keyword line: `words[0]` is the keyword; `block` holds the statements between its braces."""

    words: list[str]
    where: Where
    block: list[Stmt] | None = None

    @property
    def keyword(self) -> str:
        return self.words[0]

    @property
    def args(self) -> list[str]:
        return self.words[1:]


@dataclass(slots=True)
class _Tok:
    text: str
    where: Where
    brace: bool = False  # an unquoted { or }


@dataclass(slots=True)
class Source:
    """What reading produced besides the statements."""

    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_config(path: str, config_id: str | None = None) -> tuple[list[Stmt], Source]:
    """Read `path` (and whatever it includes) into a statement tree; raise ConfigError on bad syntax."""
    src = Source()
    params: dict[str, str] = {}
    cid = config_id if config_id is not None else socket.gethostname().split(".")[0]
    lines: list[list[_Tok]] = []
    _read_file(os.path.abspath(path), None, 0, params, cid, src, lines)
    return _build(lines), src


def _read_file(
    path: str,
    origin: Where | None,
    depth: int,
    params: dict[str, str],
    cid: str,
    src: Source,
    out: list[list[_Tok]],
) -> None:
    if depth > MAX_INCLUDE_DEPTH:
        raise ConfigError(origin or Where(path, 0), f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as e:
        raise ConfigError(origin or Where(path, 0), f"cannot read {path}: {e.strerror}") from None
    src.files.append(path)
    params["_PWD"] = os.path.dirname(path)
    raw = text.split("\n")
    i = 0
    while i < len(raw):
        lineno = i + 1
        line = raw[i]
        i += 1
        where = Where(path, lineno)
        m = _PARAM_DEF.match(line)
        if m:
            value = m.group(2)
            # a multi-line definition continues while lines end with a backslash
            while value.endswith("\\") and i < len(raw):
                value = value[:-1] + "\n" + raw[i]
                i += 1
            params[m.group(1)] = value.rstrip("\\")
            continue
        line = _substitute(line, params)
        for part in line.split("\n"):
            sub = _conditional(part, cid)
            if sub is None:
                continue
            toks = _split(sub, where)
            if not toks:
                continue
            if not toks[0].brace and toks[0].text in INCLUDE_WORDS:
                _include(toks, where, path, depth, params, cid, src, out)
                params["_PWD"] = os.path.dirname(path)
                continue
            out.append(toks)


def _include(
    toks: list[_Tok],
    where: Where,
    path: str,
    depth: int,
    params: dict[str, str],
    cid: str,
    src: Source,
    out: list[list[_Tok]],
) -> None:
    if len(toks) < 2:
        raise ConfigError(where, f"'{toks[0].text}' needs a file name or pattern")
    base = os.path.dirname(path)
    for tok in toks[1:]:
        pattern = tok.text if os.path.isabs(tok.text) else os.path.join(base, tok.text)
        found = sorted(glob.glob(pattern))
        if not found:
            if toks[0].text == "includer" or (toks[0].text == "include" and glob.has_magic(pattern)):
                src.warnings.append(f"{where}: include {tok.text}: no file matches; nothing included")
                continue
            raise ConfigError(where, f"include {tok.text}: no such file")
        for f in found:
            if os.path.isdir(f):
                continue
            _read_file(os.path.abspath(f), where, depth + 1, params, cid, src, out)


def _substitute(line: str, params: dict[str, str]) -> str:
    """Replace $NAME / ${NAME} with defined parameters (recursively, bounded); leave others alone."""
    if "$" not in line:
        return line
    for _ in range(32):

        def repl(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            return params.get(name, m.group(0))

        new = _PARAM_USE.sub(repl, line)
        if new == line:
            break
        line = new
    return line


def _conditional(line: str, cid: str) -> str | None:
    """`@id rest` keeps rest only on the machine whose config id is `id`; `@^id` on every other one."""
    s = line.lstrip()
    if not s.startswith("@"):
        return line
    head, _, rest = s.partition(" ")
    want = head[1:]
    neg = want.startswith("^")
    if neg:
        want = want[1:]
    return rest if (want == cid) != neg else None


def _split(line: str, where: Where) -> list[_Tok]:
    """Words of one line: quotes group, '#' and '!' start comments, braces are words of their own."""
    toks: list[_Tok] = []
    cur: list[str] = []
    have = False  # a word is being built (possibly empty, from "")
    quote = ""
    i = 0
    n = len(line)

    def flush() -> None:
        nonlocal cur, have
        if have:
            toks.append(_Tok("".join(cur), where))
        cur, have = [], False

    while i < n:
        c = line[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and i + 1 < n:
                i += 1
                cur.append(_ESCAPES.get(line[i], line[i]))
            else:
                cur.append(c)
        elif c in "\"'":
            quote, have = c, True
        elif c in "#!":
            break
        elif c in "{}":
            flush()
            toks.append(_Tok(c, where, brace=True))
        elif c.isspace():
            flush()
        else:
            cur.append(c)
            have = True
        i += 1
    if quote:
        raise ConfigError(where, f"unterminated {quote} quote")
    flush()
    return toks


def _build(lines: list[list[_Tok]]) -> list[Stmt]:
    """Statements and blocks from token lines; a '{' may open the block of the previous line's keyword."""
    root: list[Stmt] = []
    stack: list[tuple[list[Stmt], Stmt | None]] = [(root, None)]
    for toks in lines:
        words: list[str] = []
        where = toks[0].where
        for tok in toks:
            body = stack[-1][0]
            if not tok.brace:
                words.append(tok.text)
                continue
            if tok.text == "{":
                if words:
                    owner = Stmt(words, where)
                    body.append(owner)
                    words = []
                elif body and body[-1].block is None:
                    owner = body[-1]  # brace on the line after its keyword
                else:
                    raise ConfigError(tok.where, "'{' without a keyword before it")
                owner.block = []
                stack.append((owner.block, owner))
            else:
                if words:
                    body.append(Stmt(words, where))
                    words = []
                if len(stack) == 1:
                    raise ConfigError(tok.where, "'}' without a matching '{'")
                stack.pop()
        if words:
            stack[-1][0].append(Stmt(words, where))
    if len(stack) > 1:
        last = stack[-1][1]
        assert last is not None
        raise ConfigError(last.where, f"block of '{last.keyword}' is never closed (missing '}}')")
    return root
