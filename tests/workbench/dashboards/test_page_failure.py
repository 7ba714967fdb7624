"""A page whose kernel dies before it answers ends with a visible error, on a real
dashboards server: Voila alone keeps such a page loading for ever."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.security.test_dashboard_probes import PAGE, _login, _serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_page_whose_kernel_dies_at_start_ends_with_an_error(tmp_path: Path) -> None:
    # the pages' kernelspec, shadowed by one whose kernel exits before it answers
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": ["/bin/sh", "-c", "exit 3", "{connection_file}"],
                "display_name": "Python 3",
                "language": "python",
            }
        )
    )
    served = _serve(
        tmp_path,
        JUPYTER_PATH=str(tmp_path / "jupyter"),
        WORKBENCH_DASHBOARD_WARM_KERNELS="0",
    )
    dash = next(served)
    try:
        session = _login(dash.voila, "olga")
        # without the guard the response never ends: Voila's heartbeats arrive every
        # 10 s, so no read times out, and the page is read against a deadline instead
        deadline = time.monotonic() + 120
        body = b""
        with session.get(f"{dash.voila}{PAGE}", stream=True, timeout=60) as page:
            assert page.status_code == 200
            for chunk in page.iter_content(chunk_size=None):
                body += chunk
                assert time.monotonic() < deadline, "the page did not end in 120 s"
        text = body.decode()
        assert "This page could not be shown." in text
        assert "Kernel died before replying to kernel_info" in text
    finally:
        served.close()
    log = (tmp_path / "dashboards.log").read_text()
    assert "page provisioning.ipynb failed before it was ready" in log, log[-3000:]
