"""The rules file: ipvsadm save format (numeric by default), written atomically, restored with -R.

Write protocol: a temporary file in the same directory, fsync, rename over the old file, fsync of the
directory. A crash at any point leaves either the old file or the new one, never a mix; stale
temporary files are removed at the next start.

Besides what `ipvsadm -S` prints, the file carries one `--set TCP TCPFIN UDP` line when the timeouts
differ from the defaults (ipvsadm -R accepts it). Sync daemons are not saved (as with ipvsadm).
"""

from __future__ import annotations

import os
from pathlib import Path

from pylvs.core.snapshot import Snapshot
from pylvs.daemon.recorder import RecordingBackend
from pylvs.daemon.rules import Rules

DEFAULT_TIMEOUTS = (900, 120, 300)
TMP_MARK = ".tmp."


class RulesFileError(Exception):
    """The rules file cannot be read or does not restore cleanly."""


def timeouts_line(timeouts: tuple[int, int, int]) -> str:
    """The `--set` line the file carries when the timeouts are not the defaults ("" otherwise)."""
    t = tuple(timeouts)
    return "" if t == DEFAULT_TIMEOUTS else f"--set {t[0]} {t[1]} {t[2]}\n"


def format_rules(snap: Snapshot, numeric: bool = True) -> str:
    from pylvs.ipvsadm.save import format_save  # the ipvsadm helper's formatter: -S output exactly

    return format_save(snap, numeric=numeric) + timeouts_line(snap.timeouts)


def restore_text(text: str, rules: Rules | None = None) -> RecordingBackend:
    """Apply a rules file (ipvsadm -R input) to `rules` (a fresh Rules by default); RulesFileError if bad.

    Lines starting with '#' are blanked first, as ipvsadm-restore drops them (line numbers are kept).
    """
    from pylvs.ipvsadm.run import restore

    backend = RecordingBackend(rules)
    body = "".join("\n" if ln.startswith("#") else ln for ln in text.splitlines(keepends=True))
    try:
        result = restore(backend, body, "pylvsd")
    except Exception as e:  # a parser bug must not take the daemon down; report it as a bad file
        raise RulesFileError(f"restore failed: {e!r}") from e
    if result.code != 0:
        msg = " ".join(result.err.split("\n")).strip() or f"exit status {result.code}"
        raise RulesFileError(msg)
    return backend


class RulesStore:
    def __init__(self, path: str | Path, numeric: bool = True) -> None:
        self.path = Path(path)
        self.numeric = numeric

    def prepare(self) -> None:
        """Create the directory and remove temporary files a crash may have left behind."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        prefix = f".{self.path.name}{TMP_MARK}"
        for p in self.path.parent.iterdir():
            if p.name.startswith(prefix):
                try:
                    p.unlink()
                except OSError:
                    pass

    def read(self) -> str:
        """The file's text; "" when there is none yet."""
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError) as e:
            raise RulesFileError(f"{self.path}: {e}") from e

    def load(self) -> Rules:
        """The rules the file describes, on a fresh Rules."""
        text = self.read()
        if not text.strip():
            return Rules()
        try:
            return restore_text(text).rules
        except RulesFileError as e:
            raise RulesFileError(f"{self.path}: {e}") from None

    def save(self, snap: Snapshot) -> None:
        self.write_text(format_rules(snap, self.numeric))

    def write_text(self, text: str) -> None:
        write_atomic(self.path, text.encode("utf-8"))


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
