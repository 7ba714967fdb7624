"""``workbench bench hub``: idle culling on a real hub — notebook servers and their memory
before and after the idle culler.

In a scratch home under ``$WORKBENCH_HOME/bench/hub`` (its own ports, a small sample
lake, ``--users`` analysts), the bench starts the hub with
``WORKBENCH_HUB_IDLE_TIMEOUT=--idle`` and ``WORKBENCH_HUB_CULL_EVERY=--cull-every``,
logs each analyst in, spawns their server and runs one cell in a kernel, then leaves
them idle. It reports the servers running and the resident memory of the analysts' OS
accounts' processes (servers and kernels) right after, and once the culler has
stopped them, with the seconds that took. Needs root, like the hub; the analysts' OS
accounts are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import time

import psutil

from proving.bench import add_bench, report
from proving.hub_session import HubSession
from proving.ports import free_port
from proving.sample import write_sample_lake
from workbench.cli import say, whole_number
from workbench.config import Config
from workbench.exceptions import HubUnavailable
from workbench.filemodes import private_dir
from workbench.hub.accounts import os_user_name, remove_account
from workbench.hub.api import HubClient
from workbench.stack import supervisor
from workbench.tenancy import Principal, UserStore

__all__ = ["run_bench"]


def _accounts_memory(users: list[str]) -> tuple[int, int]:
    """Processes and summed RSS (bytes) of the users' OS accounts."""
    names = {os_user_name(u) for u in users}
    count = rss = 0
    for proc in psutil.process_iter(["username", "memory_info"]):
        if proc.info.get("username") in names and proc.info.get("memory_info"):
            count += 1
            rss += proc.info["memory_info"].rss
    return count, rss


def run_bench(config: Config, args: argparse.Namespace) -> int:
    """See the module's docstring."""
    if os.geteuid() != 0:
        raise HubUnavailable("the hub bench needs root, as the hub does")
    home = config.home / "bench" / "hub"
    shutil.rmtree(home, ignore_errors=True)
    private_dir(home)
    env = {
        **config.env(),
        "WORKBENCH_HOME": str(home),
        "WORKBENCH_LAKE": str(home / "lake"),
        "WORKBENCH_HUB_IDLE_TIMEOUT": str(args.idle),
        "WORKBENCH_HUB_CULL_EVERY": str(args.cull_every),
        "WORKBENCH_HUB_MAX_SERVERS": str(max(args.users, 1)),
    }
    for var in ("WORKBENCH_HUB_PORT", "WORKBENCH_HUB_API_PORT", "WORKBENCH_HUB_PROXY_API_PORT"):
        env[var] = str(free_port())
    scratch = Config.from_env(env)
    write_sample_lake(scratch, events=2_000, devices=20, buildings=2, days=1.0)
    store = UserStore(scratch)
    users = [f"bench-{secrets.token_hex(3)}" for _ in range(args.users)]
    passwords = {u: secrets.token_urlsafe(12) for u in users}
    for user in users:
        store.add(user, role="analyst", tenant="t-0001", password=passwords[user],
                  by=Principal.system("bench"))  # fmt: skip
    url = f"http://{scratch.host}:{scratch.hub_port}"
    try:
        supervisor.up(scratch, only=["hub"], report=say)
        for user in users:
            session = HubSession(url, user, passwords[user])
            session.spawn()
            kernel = session.kernel()
            kernel.run("import polars, workbench; x = sum(range(10**6))")
            kernel.close()
            say(f"{user}: server and kernel running")
        servers_before = len(HubClient(scratch).running_servers())
        procs_before, rss_before = _accounts_memory(users)
        idle_from = time.monotonic()
        deadline = idle_from + args.idle + 3 * args.cull_every + 120
        while HubClient(scratch).running_servers() and time.monotonic() < deadline:
            time.sleep(1.0)
        culled_after = time.monotonic() - idle_from
        servers_after = len(HubClient(scratch).running_servers())
        time.sleep(2.0)  # the stopped servers' kernels exit with them
        procs_after, rss_after = _accounts_memory(users)
    finally:
        supervisor.down(scratch, report=say)
        for user in users:
            remove_account(user)
    mib = 1024 * 1024
    rows = [
        ["before (idle servers)", servers_before, procs_before, f"{rss_before / mib:.0f}"],
        [f"after culling ({culled_after:.0f} s idle)", servers_after, procs_after,
         f"{rss_after / mib:.0f}"],
    ]  # fmt: skip
    report(
        config,
        "hub",
        rows,
        header=["moment", "servers", "processes", "RSS MiB"],
        figures={
            "users": args.users,
            "idle_timeout_s": args.idle,
            "cull_every_s": args.cull_every,
            "servers_before": servers_before,
            "servers_after": servers_after,
            "rss_before_bytes": rss_before,
            "rss_after_bytes": rss_after,
            "culled_after_s": round(culled_after, 1),
            "load_average": os.getloadavg(),
        },
    )
    return 0 if servers_after == 0 else 1


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=whole_number(1), default=3, help="analysts (default 3)")
    parser.add_argument(
        "--idle", type=whole_number(1), default=90, help="idle timeout, seconds (default 90)"
    )
    parser.add_argument(
        "--cull-every", type=whole_number(1), default=10, help="culler period, seconds (default 10)"
    )


add_bench("hub", run_bench, "hub: notebook servers and memory before and after idle culling",
          _configure)  # fmt: skip
