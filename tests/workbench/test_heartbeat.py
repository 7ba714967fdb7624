"""Reading the heartbeats components leave for ``workbench up`` and ``status``."""

from __future__ import annotations

import time

from workbench.filemodes import write_json
from workbench.heartbeat import STALE_AFTER_S, read_heartbeat


def test_no_file_and_a_garbled_file_are_no_heartbeat(tmp_path):
    assert read_heartbeat(tmp_path / "absent.json") is None
    garbled = tmp_path / "garbled.json"
    garbled.write_text('{"at": 1')
    assert read_heartbeat(garbled) is None
    listed = tmp_path / "listed.json"
    listed.write_text("[1, 2]")
    assert read_heartbeat(listed) is None


def test_a_fresh_beat_carries_its_fields_and_an_old_one_is_stale(tmp_path):
    path = tmp_path / "processor.heartbeat.json"
    write_json(path, {"at": time.time() - 2, "stored": 7})
    beat = read_heartbeat(path)
    assert beat is not None
    assert not beat.stale
    assert 2 <= beat.age_s < STALE_AFTER_S
    assert beat.get("stored") == 7
    assert beat.get("missing", "none") == "none"

    write_json(path, {"at": time.time() - STALE_AFTER_S - 5})
    beat = read_heartbeat(path)
    assert beat is not None and beat.stale
