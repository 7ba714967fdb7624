"""The S3 emulator decides a race for one key as S3 does: one writer wins, the rest lose.

moto as it ships checks ``If-None-Match: *`` and stores the object in two steps on
request threads; the lake's tests once lost a Delta commit to that. Each stored object
is held back inside moto here, so the race's window is wide enough to hit every time.
"""

from __future__ import annotations

import http.client
import threading
from pathlib import Path

import pytest

from proving.objstore import MotoS3

pytestmark = pytest.mark.integration

WRITERS = 3


def race_for_one_key(server: MotoS3, key: str) -> list[int]:
    """The answers to WRITERS conditional puts of ``key``, sent at the same moment."""
    answers: list[int] = []
    start = threading.Barrier(WRITERS)

    def put(tag: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        start.wait()
        connection.request(
            "PUT", f"/{server.bucket}/{key}", body=f"writer {tag}", headers={"If-None-Match": "*"}
        )
        answer = connection.getresponse()
        answer.read()
        answers.append(answer.status)
        connection.close()

    threads = [threading.Thread(target=put, args=(tag,)) for tag in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(answers)


def test_one_writer_wins_a_race_for_a_key(tmp_path: Path) -> None:
    with MotoS3(tmp_path, server_args=("--slow-writes", "0.3")) as server:
        answers = race_for_one_key(server, "_delta_log/00000000000000000001.json")
    # the losers are refused (412 to a signed request; moto says 403 to these unsigned ones)
    assert len(answers) == WRITERS and answers.count(200) == 1, answers


def test_moto_as_it_ships_lets_two_writers_win(tmp_path: Path) -> None:
    """The race the wrapper closes. When moto closes it itself, this turns red: then
    :mod:`proving.moto_s3` can go."""
    with MotoS3(tmp_path, server_args=("--slow-writes", "0.3", "--unserialized")) as server:
        answers = race_for_one_key(server, "_delta_log/00000000000000000001.json")
    assert len(answers) == WRITERS and answers.count(200) > 1, answers
