"""The legacy replay memory: claims, leases, expiry, a fixed size, sharing between processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ingest_service.gateway.replay import PROBES, ReplayGuard, fingerprint


def test_a_confirmed_frame_is_a_replay_until_its_window_ends():
    guard = ReplayGuard(None, slots=1024)
    fp = fingerprint("dev-1", b"mac-1")
    assert guard.claim(fp, lease_until_ms=1_010, now_ms=1_000) == "new"
    guard.confirm(fp, until_ms=5_000, now_ms=1_005)
    assert guard.claim(fp, lease_until_ms=4_010, now_ms=4_000) == "replay"
    assert guard.claim(fp, lease_until_ms=5_010, now_ms=5_000) == "new"  # forgotten: stale
    other = fingerprint("dev-2", b"mac-1")  # the same MAC from another device is another frame
    assert other != fp and guard.claim(other, lease_until_ms=5_010, now_ms=5_000) == "new"


def test_a_frame_not_stored_can_be_sent_again():
    guard = ReplayGuard(None, slots=1024)
    fp = fingerprint("dev-1", b"mac")
    assert guard.claim(fp, lease_until_ms=2_000, now_ms=1_000) == "new"
    assert guard.claim(fp, lease_until_ms=2_000, now_ms=1_001) == "pending"  # still in flight
    guard.release(fp, now_ms=1_002)  # the broker refused it
    assert guard.claim(fp, lease_until_ms=2_000, now_ms=1_003) == "new"


def test_a_claim_whose_worker_died_lapses_with_its_lease():
    guard = ReplayGuard(None, slots=1024)
    fp = fingerprint("dev-1", b"mac")
    assert guard.claim(fp, lease_until_ms=2_000, now_ms=1_000) == "new"  # never confirmed
    assert guard.claim(fp, lease_until_ms=3_000, now_ms=1_999) == "pending"
    assert guard.claim(fp, lease_until_ms=3_000, now_ms=2_000) == "new"


def test_release_never_forgets_a_confirmed_frame():
    guard = ReplayGuard(None, slots=1024)
    fp = fingerprint("dev-1", b"mac")
    guard.claim(fp, lease_until_ms=1_100, now_ms=1_000)
    guard.confirm(fp, until_ms=9_000, now_ms=1_050)
    guard.release(fp, now_ms=1_060)
    assert guard.claim(fp, lease_until_ms=1_200, now_ms=1_100) == "replay"


def test_the_table_is_fixed_and_full_is_said_not_overwritten(tmp_path: Path):
    path = tmp_path / "replay"
    guard = ReplayGuard(path, slots=1)  # every fingerprint shares the same PROBES slots
    assert path.stat().st_size == 16 * (1 + PROBES)
    fps = [fingerprint("dev-1", bytes([n])) for n in range(PROBES + 1)]
    for fp in fps[:PROBES]:
        assert guard.claim(fp, lease_until_ms=10_000, now_ms=1_000) == "new"
    assert guard.claim(fps[-1], lease_until_ms=10_000, now_ms=1_000) == "full"
    assert all(guard.claim(fp, lease_until_ms=10_000, now_ms=2_000) == "pending" for fp in fps[:-1])
    # once the claims lapse their slots are reused: the size never grows
    assert guard.claim(fps[-1], lease_until_ms=20_000, now_ms=10_000) == "new"
    assert path.stat().st_size == 16 * (1 + PROBES)
    guard.close()


def test_every_process_sees_the_same_memory(tmp_path: Path):
    path = tmp_path / "replay"
    fp = fingerprint("dev-1", b"mac")
    mine = ReplayGuard(path, slots=4096)
    assert mine.claim(fp, lease_until_ms=2_000, now_ms=1_000) == "new"
    mine.confirm(fp, until_ms=10**13, now_ms=1_001)
    other_fp = fingerprint("dev-1", b"other")
    script = (
        "import sys; from pathlib import Path\n"
        "from ingest_service.gateway.replay import ReplayGuard\n"
        "g = ReplayGuard(Path(sys.argv[1]), slots=4096)\n"
        "print(g.claim(int(sys.argv[2]), lease_until_ms=3_000, now_ms=2_000),"
        " g.claim(int(sys.argv[3]), lease_until_ms=3_000, now_ms=2_000))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path), str(fp), str(other_fp)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["replay", "new"]
    assert mine.claim(other_fp, lease_until_ms=2_600, now_ms=2_500) == "pending"  # its claim
    mine.close()
