"""The Voila kernel manager's waiting kernels, on real kernel processes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.web import HTTPError

from workbench.config import Config
from workbench.dashboards.identity import IDENTITY_ENV, sign_identity
from workbench.dashboards.kernels import (
    kernel_count_line,
    kernel_manager_class,
    write_kernel_count,
)

pytestmark = pytest.mark.integration

SECRET = b"s" * 32
# What a page's kernel reports about itself: who it works for, and whether the pages'
# imports were done before it ran a line of the page.
WARMED = ("deltalake", "pyarrow.dataset", "workbench.dashboards.views")
PROBE = (
    "import os, sys\n"
    "print(os.environ.get({env!r}), all(m in sys.modules for m in "
    + repr(WARMED)
    + "), os.getpid())"
)


async def _run(manager: Any, kernel_id: str, code: str) -> str:
    client = manager.get_kernel(kernel_id).client()
    client.start_channels()
    out: list[str] = []

    def hook(message: dict[str, Any]) -> None:
        if message["msg_type"] == "stream":
            out.append(message["content"]["text"])

    try:
        await client.wait_for_ready(timeout=60)
        await client.execute_interactive(code, timeout=60, output_hook=hook)
    finally:
        client.stop_channels()
    return "".join(out).strip()


async def _until(what: Any, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


def _page_env(user: str) -> dict[str, str]:
    return {IDENTITY_ENV: sign_identity(SECRET, user, expiry=int(time.time()) + 3600)}


def test_a_page_takes_the_waiting_kernel_with_its_own_identity_and_the_pool_refills(
    tmp_path: Path,
):
    config = Config.from_env({"WORKBENCH_HOME": str(tmp_path / "home")})
    assert config.dashboard_warm_kernels == 1

    async def scenario() -> None:
        manager = kernel_manager_class(config, SECRET)(
            root_dir=str(tmp_path), connection_dir=str(tmp_path)
        )

        def status() -> dict[str, int]:
            write_kernel_count(config, manager)
            line = kernel_count_line(config)
            assert line is not None
            return line[1]

        cap = config.dashboard_max_kernels
        try:
            manager.fill_pool()
            # started, importing what pages need: no page's kernel yet
            await _until(lambda: manager.warming == 1 and len(manager.list_kernel_ids()) == 1)
            assert status() == {"kernels": 0, "max_kernels": cap, "warm": 0, "warming": 1}
            await _until(lambda: len(manager.warm) == 1)
            assert status() == {"kernels": 0, "max_kernels": cap, "warm": 1, "warming": 0}
            (waiting,) = manager.warm
            assert manager.owner(waiting) is None  # nobody's: 404 to every user
            await manager.cull_kernel_if_idle(waiting)  # idle by design, never culled
            assert waiting in manager

            # a page without a valid login gets nothing, and leaves the kernel waiting
            with pytest.raises(HTTPError) as refused:
                await manager.start_kernel(env={IDENTITY_ENV: "olga|1|forged"})
            assert refused.value.status_code == 403
            assert manager.warm == [waiting]

            olgas = await manager.start_kernel(
                kernel_name="python3", path="", env=_page_env("olga")
            )
            assert olgas == waiting and manager.owner(olgas) == "olga"
            assert status()["kernels"] == 1
            identity, imported, _ = (
                await _run(manager, olgas, PROBE.format(env=IDENTITY_ENV))
            ).split()
            assert identity.startswith("olga|") and imported == "True"

            # the next page finds a fresh waiting kernel, never olga's
            await _until(lambda: len(manager.warm) == 1)
            assert manager.warm != [olgas]
            olegs = await manager.start_kernel(env=_page_env("oleg"))
            assert olegs not in (olgas,) and manager.owner(olegs) == "oleg"
            identity, _, _ = (await _run(manager, olegs, PROBE.format(env=IDENTITY_ENV))).split()
            assert identity.startswith("oleg|")
        finally:
            await manager.shutdown_all()

    asyncio.run(scenario())


def test_without_waiting_kernels_a_page_starts_its_own(tmp_path: Path):
    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_DASHBOARD_WARM_KERNELS": "0"}
    )

    async def scenario() -> None:
        manager = kernel_manager_class(config, SECRET)(
            root_dir=str(tmp_path), connection_dir=str(tmp_path)
        )
        try:
            manager.fill_pool()
            assert manager.warm == [] and manager.warming == 0
            kernel = await manager.start_kernel(env=_page_env("olga"))
            identity, imported, _ = (
                await _run(manager, kernel, PROBE.format(env=IDENTITY_ENV))
            ).split()
            # a cold kernel: the page itself will import what it needs
            assert identity.startswith("olga|") and imported == "False"
            assert manager.warm == [] and manager.warming == 0
        finally:
            await manager.shutdown_all()

    asyncio.run(scenario())


def test_a_kernel_slow_to_start_is_not_culled_as_idle_and_an_abandoned_one_is(
    tmp_path: Path,
):
    """On a loaded CI machine a page's kernel took longer than the idle time to boot; the
    culler shut it down while Voila waited for it, and the page never finished."""
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    spec = tmp_path / "kernels" / "slow"
    spec.mkdir(parents=True)
    # the python kernel, booting 3 s late: what a loaded machine does to its imports
    boot = (
        "import time; time.sleep(3)\n"
        "from ipykernel import kernelapp; kernelapp.launch_new_instance()"
    )
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-c", boot, "-f", "{connection_file}"],
                "display_name": "slow",
                "language": "python",
            }
        )
    )
    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_DASHBOARD_WARM_KERNELS": "0"}
    )

    async def scenario() -> None:
        manager = kernel_manager_class(config, SECRET)(
            root_dir=str(tmp_path),
            connection_dir=str(tmp_path),
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]),
            cull_idle_timeout=1,
            cull_interval=1,
            cull_connected=False,
            cull_busy=False,
        )
        try:
            kernel = await manager.start_kernel(kernel_name="slow", env=_page_env("olga"))
            # it answers once booted, although the culler looked at it every second
            assert (await _run(manager, kernel, "print(6 * 7)")).endswith("42")
            assert kernel in manager
            # then nobody connects: it is culled as idle
            await _until(lambda: kernel not in manager, timeout_s=30)
        finally:
            await manager.shutdown_all()

    asyncio.run(scenario())
