"""What a failed drill says of its stack's logs before its scratch home is deleted."""

from __future__ import annotations

from pathlib import Path

from proving.scratch import ScratchStack


def test_a_failed_drill_names_errors_and_exited_workers_but_not_refused_connections(
    tmp_path: Path,
) -> None:
    stack = ScratchStack(home=tmp_path / "home")
    stack.config.log_dir.mkdir(parents=True)
    (stack.config.log_dir / "processor.log").write_text(
        "2026-12-06 10:00:00,000 INFO pool: processor worker 0 (pid 11) started\n"
        "2026-12-06 10:00:01,000 ERROR fetcher: Connect to ipv4#127.0.0.1:9 failed: "
        "Connection refused\n"
        "2026-12-06 10:00:02,000 ERROR kafka.net.manager: Connection failed: "
        "KafkaConnectionError: 111 ECONNREFUSED\n"
        "2026-12-06 10:00:03,000 ERROR consumer: Kafka member failed: boom\n"
        "2026-12-06 10:00:04,000 WARNING pool: processor worker 0 (pid 11) exited with 1 "
        "after 3.0s; replaced by pid 12\n"
    )
    (stack.config.log_dir / "gateway.log").write_text(
        "2026-12-06 10:00:00,000 WARNING gateway: slow ack\n"
    )
    assert stack.evidence() == [
        "processor.log: 2026-12-06 10:00:03,000 ERROR consumer: Kafka member failed: boom",
        "processor.log: 2026-12-06 10:00:04,000 WARNING pool: processor worker 0 (pid 11) "
        "exited with 1 after 3.0s; replaced by pid 12",
    ]
