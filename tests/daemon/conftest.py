"""Fixtures: pylvsd as a subprocess on a temporary socket and rules file (engine none)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import Pylvsd


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Pylvsd]]:
    """make_daemon(*extra_args, ephemeral=False) -> a not yet started Pylvsd; all are killed at the end."""
    made: list[Pylvsd] = []

    def make(*extra: str, ephemeral: bool = False, engine: str = "none") -> Pylvsd:
        d = Pylvsd(tmp_path, *extra, ephemeral=ephemeral, engine=engine)
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


@pytest.fixture
def ephemeral(make_daemon: Callable[..., Pylvsd]) -> Iterator[Pylvsd]:
    d = make_daemon(ephemeral=True).start()
    yield d
    d.stop()


def have_save() -> bool:
    try:
        import pylvs.ipvsadm.run
        import pylvs.ipvsadm.save  # noqa: F401
    except ImportError:
        return False
    return True


needs_save = pytest.mark.skipif(not have_save(), reason="pylvs.ipvsadm.save/run not written yet")
os.environ.setdefault("PYTHONUNBUFFERED", "1")
