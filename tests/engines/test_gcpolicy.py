"""The forwarding engines' garbage collection policy (engines/gcpolicy.py)."""

from __future__ import annotations

import gc

from pylvs.engines import gcpolicy


def test_tune_freezes_what_exists_and_spaces_young_collections() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        gcpolicy.tune()
        assert gc.get_threshold() == (gcpolicy.GEN0, 20, 20)
        assert gc.get_freeze_count() > 0
        gc.set_threshold(0)  # collection disabled by whoever embeds us: left disabled
        gcpolicy.tune()
        assert gc.get_threshold()[0] == 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
