"""Who may use a Voila kernel, and how many kernels there may be.

* A kernel belongs to the user whose page started it (read from the signed identity
  Voila hands the kernel); its REST calls (``/api/kernels/<id>``, Voila's shutdown call)
  and its websocket answer that user only — anyone else, even of the same tenant, gets
  404, as if there were no such kernel.
* A kernel websocket must ask for the ``v1.kernel.websocket.jupyter.org`` subprotocol:
  without it jupyter_server would send the legacy frames, which Voila 0.5 reads as v1 —
  it takes the first 8 bytes for a count of offsets near 10^18 and builds that list on
  the server's only thread. Such a socket is refused (400) before the upgrade.
* A page is refused (503, saying why) when its user already runs
  ``WORKBENCH_DASHBOARD_MAX_KERNELS_PER_USER`` kernels or the server
  ``WORKBENCH_DASHBOARD_MAX_KERNELS``; jupyter_server's culler shuts down a kernel with no
  open page after ``WORKBENCH_DASHBOARD_KERNEL_IDLE`` seconds (a tab closed without its
  unload call, a dropped network), but not one still starting: its page is waiting for
  it (for two minutes at most; then it is stuck, and culled).
* The notebook listing (``/voila/api/contents``) answers 404 to everyone: the start page
  it served redirects to the Panel server, and a viewer may open no Voila page at all.
* ``WORKBENCH_DASHBOARD_WARM_KERNELS`` kernels wait for pages, started and with the
  pages' imports done (:data:`WARM_UP`): starting Python and importing Panel, polars
  and pyarrow was most of a page's first paint. A waiting kernel belongs to nobody
  (404 to everyone) and is never culled. A page that takes one first hands it the
  request's environment (the signed identity among it), so it is then what a freshly
  started kernel would be. Each serves one page.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import logging
import os
import queue
import time
from collections.abc import AsyncIterator
from typing import Any

from workbench.config import Config
from workbench.dashboards.identity import IDENTITY_ENV, verify_identity
from workbench.filemodes import write_json

__all__ = [
    "SUBPROTOCOL",
    "WARM_UP",
    "cull_traits",
    "guard_handlers",
    "kernel_count_line",
    "kernel_manager_class",
    "write_kernel_count",
]

logger = logging.getLogger(__name__)

SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"
# What a waiting kernel runs before a page takes it: the pages' imports, with those the
# lake's reads make on first use (deltalake, and pyarrow.dataset, which pulls pandas in:
# 0.28 s of the provisioning page's 0.40 s build at a million devices).
WARM_UP = "import deltalake, pyarrow.dataset, workbench.dashboards.views"
# A waiting kernel starts where Voila starts a page's (the served folder's top).
_WARM_PATH = ""
_READY_TIMEOUT_S = 60.0
# A kernel still starting is not idle: the culler took kernels that needed more than the
# idle time to boot on a loaded machine, and Voila then never finished their page. One
# that has not started in this long is stuck, and culled as idle.
_STARTING_GRACE_S = 120.0
# After a kernel failed to warm up, pages start cold kernels for this long.
_WARM_RETRY_S = 60.0


def cull_traits(config: Config) -> dict[str, Any]:
    """jupyter_server's culler settings for ``config``: idle kernels with no connection."""
    idle = max(1, config.dashboard_kernel_idle)
    return {
        "cull_idle_timeout": idle,
        "cull_interval": max(1, min(60, idle // 2)),
        "cull_connected": False,
        "cull_busy": False,
    }


def kernel_manager_class(config: Config, secret: bytes) -> type[Any]:
    """A kernel manager that records each kernel's owner and caps kernels per user and
    in total."""
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
    from tornado.web import HTTPError

    class WorkbenchKernelManager(AsyncMappingKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)  # type: ignore[no-untyped-call]
            self.owners: dict[str, str] = {}
            self.starting: list[str] = []
            self.warm: list[str] = []  # started, warmed up, waiting for a page
            self.warming = 0
            self.warm_retry_at = 0.0
            self._tasks: set[asyncio.Future[None]] = set()

        def owner(self, kernel_id: str) -> str | None:
            """The user whose page started ``kernel_id`` (None: no such kernel)."""
            return self.owners.get(kernel_id) if kernel_id in self else None

        def _admit(self, user: str) -> None:
            running = set(self.list_kernel_ids())
            self.owners = {k: u for k, u in self.owners.items() if k in running}
            users = [*self.owners.values(), *self.starting]
            mine = users.count(user)
            why = None
            if mine >= config.dashboard_max_kernels_per_user:
                why = (
                    f"{user} already has {mine} dashboard kernels running, the most one user "
                    "may have: close another provisioning page, or wait until an abandoned "
                    "one is shut down"
                )
            elif len(users) >= config.dashboard_max_kernels:
                why = (
                    f"the dashboards run {len(users)} kernels, the most they may: "
                    "try again in a few minutes"
                )
            if why:
                # Voila's error page shows the reason phrase only: it carries the why
                raise HTTPError(503, "%s", why, reason=why)

        async def start_kernel(self, **kwargs: Any) -> str:  # type: ignore[override]
            env = kwargs.get("env") or {}
            user = verify_identity(secret, env.get(IDENTITY_ENV, ""), now=time.time())
            if user is None:
                raise HTTPError(403, "this page carries no valid login")
            self._admit(user)
            # 1. hold the slot while the kernel starts, so concurrent pages count
            self.starting.append(user)
            try:
                kernel_id = await self._take_warm(kwargs)
                if kernel_id is None:
                    kernel_id = str(await super().start_kernel(**kwargs))
            finally:
                self.starting.remove(user)
            # 2. the kernel is its user's from now on
            self.owners[kernel_id] = user
            self.fill_pool()
            return kernel_id

        def fill_pool(self) -> None:
            """Start warming kernels until ``WORKBENCH_DASHBOARD_WARM_KERNELS`` wait."""
            if time.monotonic() < self.warm_retry_at:
                return
            missing = config.dashboard_warm_kernels - len(self.warm) - self.warming
            for _ in range(max(0, missing)):
                self.warming += 1
                task = asyncio.ensure_future(self._warm_one())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        async def _warm_one(self) -> None:
            kernel_id = None
            try:
                start: dict[str, Any] = {"path": _WARM_PATH, "env": dict(os.environ)}
                kernel_id = str(await super().start_kernel(**start))
                await self._run(kernel_id, WARM_UP)
            except Exception:
                logger.exception("a kernel failed to warm up: pages start cold kernels")
                self.warm_retry_at = time.monotonic() + _WARM_RETRY_S
                if kernel_id is not None and kernel_id in self:
                    await self.shutdown_kernel(kernel_id, now=True)
            else:
                self.warm.append(kernel_id)
            finally:
                self.warming -= 1

        async def _take_warm(self, kwargs: dict[str, Any]) -> str | None:
            """A waiting kernel given the page's environment, or None (start a cold one)."""
            name = kwargs.get("kernel_name") or self.default_kernel_name
            if name != self.default_kernel_name or kwargs.get("path", _WARM_PATH) != _WARM_PATH:
                return None
            while self.warm:
                kernel_id = self.warm.pop(0)
                if kernel_id not in self:  # shut down meanwhile
                    continue
                # what a cold start would have put in its environment: the request's
                # variables (the identity, Voila's URLs) over the server's own
                env = kwargs.get("env") or {}
                update = {k: v for k, v in env.items() if os.environ.get(k) != v}
                code = f"import json, os\nos.environ.update(json.loads({json.dumps(update)!r}))"
                try:
                    await self._run(kernel_id, code)
                except Exception:
                    logger.exception("a waiting kernel refused its page: it is shut down")
                    await self.shutdown_kernel(kernel_id, now=True)
                    continue
                logger.info("a page took waiting kernel %s", kernel_id)
                return kernel_id
            return None

        async def _run(self, kernel_id: str, code: str) -> None:
            """Run ``code`` silently in the kernel, over its shell channel only.

            No ``wait_for_ready``: jupyter_client's ends by draining IOPub until 0.2 s
            pass without a message, a fifth of a second on every page. The shell
            channel queues the request until the kernel listens, and its reply says
            whether the code ran."""
            kernel: Any = self.get_kernel(kernel_id)
            client: Any = kernel.client()
            client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
            try:
                msg_id = client.execute(code, silent=True, store_history=False)
                deadline = time.monotonic() + _READY_TIMEOUT_S
                while True:
                    try:
                        reply = await client.get_shell_msg(timeout=1)
                    except queue.Empty:
                        if not await kernel.is_alive():
                            raise RuntimeError("the kernel died") from None
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"no answer in {_READY_TIMEOUT_S:.0f} s") from None
                        continue
                    if reply["parent_header"].get("msg_id") == msg_id:
                        break
            finally:
                client.stop_channels()
            content = reply["content"]
            if content["status"] != "ok":
                raise RuntimeError(f"{content.get('ename')}: {content.get('evalue')}")

        async def cull_kernel_if_idle(self, kernel_id: str) -> None:
            if kernel_id in self.warm:  # a waiting kernel is idle by design
                return
            kernel = self._kernels.get(kernel_id)
            # jupyter_server stamps last_activity at the start and on each message, so a
            # kernel still starting has been booting (or silent) that long
            if kernel is not None and getattr(kernel, "execution_state", None) == "starting":
                booting = dt.datetime.now(dt.UTC) - kernel.last_activity
                if booting.total_seconds() < _STARTING_GRACE_S:
                    return
            await super().cull_kernel_if_idle(kernel_id)  # type: ignore[no-untyped-call]

        async def shutdown_kernel(  # type: ignore[override]
            self, kernel_id: str, *args: Any, **kwargs: Any
        ) -> None:
            if kernel_id in self.warm:
                self.warm.remove(kernel_id)
            await super().shutdown_kernel(kernel_id, *args, **kwargs)  # type: ignore[no-untyped-call]

    return WorkbenchKernelManager


def write_kernel_count(config: Config, manager: Any) -> None:
    """Write how many kernels ``manager`` runs, and the caps, to
    ``$WORKBENCH_HOME/run/dashboard-kernels.json`` for ``workbench status``."""
    running = set(manager.list_kernel_ids())
    count = {
        # the pages' kernels, as the cap counts them: owned, or being started for a page
        # (a kernel warming up is no page's yet)
        "kernels": len(running & set(manager.owners)) + len(manager.starting),
        "warm": len(manager.warm),
        "warming": manager.warming,
        "max_kernels": config.dashboard_max_kernels,
        "at": time.time(),
    }
    write_json(config.run_dir / "dashboard-kernels.json", count)


def kernel_count_line(config: Config) -> tuple[str, dict[str, int]] | None:
    """``workbench status``'s words and figures for the kernels :func:`write_kernel_count`
    last wrote, with a warning once they near their cap; None before the first count."""
    try:
        count = json.loads((config.run_dir / "dashboard-kernels.json").read_text())
    except (OSError, ValueError):
        return None
    kernels, cap = int(count["kernels"]), int(count["max_kernels"])
    warm, warming = int(count.get("warm", 0)), int(count.get("warming", 0))
    text = f"{kernels} of {cap} provisioning kernels, {warm} waiting"
    if warming:
        text += f", {warming} warming up"
    if kernels >= 0.8 * cap:
        text += " (near the cap WORKBENCH_DASHBOARD_MAX_KERNELS: new pages will be refused)"
    return text, {"kernels": kernels, "max_kernels": cap, "warm": warm, "warming": warming}


def _check_owner(handler: Any, kernel_id: str) -> None:
    from tornado.web import HTTPError

    user = handler.current_user
    owner = handler.kernel_manager.owner(kernel_id)
    if user is None or owner is None or owner != user.username:
        raise HTTPError(404, "no such kernel")


def _page_failed(path: str, exc: BaseException) -> str:
    """The end of a page whose rendering failed: what its reader sees instead of a page
    that never finishes."""
    logger.error("page %s failed before it was ready: %s: %s", path, type(exc).__name__, exc)
    why = html.escape(f"{type(exc).__name__}: {exc}")
    return (
        '<div class="wb-page-error" role="alert" style="margin:2em;padding:1em;'
        'border:2px solid #b00020;color:#b00020;font-family:sans-serif">'
        f"<strong>This page could not be shown.</strong> It failed before it was ready "
        f"({why}); most often its Python kernel did not start. Reload the page; if it "
        "fails again, tell your operator (the dashboards' log has the details).</div>"
    )


def guard_page_rendering() -> None:
    """Make every Voila page end when its rendering fails.

    Voila renders a page in a background task and streams what it puts in a queue; when
    the kernel dies before it answers (it crashed at start-up, or was shut down), the
    task fails unseen and the page's response never ends — Voila's heartbeats keep the
    browser waiting for ever. The renderer installed here ends the page with a visible
    error instead, and logs it. ``voila.handler`` looks the renderer class up by name
    when a page is requested, so replacing that name is enough (checked by
    ``tests/workbench/dashboards/test_page_failure.py`` against the installed Voila).
    """
    import voila.handler
    from voila.notebook_renderer import NotebookRenderer

    if getattr(voila.handler.NotebookRenderer, "guarded", False):
        return

    class GuardedRenderer(NotebookRenderer):  # type: ignore[misc]
        guarded = True

        def generate_content_generator(
            self, kernel_id: str | None = None, kernel_future: Any = None
        ) -> AsyncIterator[tuple[str, Any]]:
            inner = super().generate_content_generator(kernel_id, kernel_future)

            async def guarded() -> AsyncIterator[tuple[str, Any]]:
                try:
                    async for item in inner:
                        yield item
                except Exception as exc:
                    yield _page_failed(str(self.notebook_path), exc), None

            return guarded()

    voila.handler.NotebookRenderer = GuardedRenderer


def guard_handlers(handlers: list[Any]) -> list[Any]:
    """Voila's handlers with the kernel and contents handlers replaced by guarded ones
    (and pages that end when their rendering fails, :func:`guard_page_rendering`)."""
    guard_page_rendering()
    from jupyter_server.services.kernels.handlers import KernelHandler
    from tornado.web import HTTPError, RequestHandler
    from voila.shutdown_kernel_handler import VoilaShutdownKernelHandler
    from voila.tornado.contentshandler import VoilaContentsHandler
    from voila.tornado.handler import TornadoVoilaHandler
    from voila.tornado.kernel_websocket_handler import VoilaKernelWebsocketHandler

    class PageHandler(TornadoVoilaHandler):  # type: ignore[misc]
        async def prepare(self, **kwargs: Any) -> None:
            await super().prepare(**kwargs)
            # The page asks for its kernel's shutdown from its unload handler, sending the
            # _xsrf cookie's value; nothing else here sets that cookie, so the call was
            # refused (403) and every page left or reloaded kept its kernel until the
            # culler came, counting against the user's cap: three reloads locked the
            # user out. Reading the token sets the cookie.
            _ = self.xsrf_token

    class OwnKernelHandler(KernelHandler):
        async def prepare(self, **kwargs: Any) -> None:
            await super().prepare(**kwargs)
            if not self._finished:
                _check_owner(self, self.path_kwargs["kernel_id"])

    class OwnShutdownHandler(VoilaShutdownKernelHandler):  # type: ignore[misc]
        async def prepare(self, **kwargs: Any) -> None:
            await super().prepare(**kwargs)
            if not self._finished:
                _check_owner(self, self.path_args[0])

    class OwnWebsocketHandler(VoilaKernelWebsocketHandler):  # type: ignore[misc]
        async def get(self, kernel_id: str, *args: Any, **kwargs: Any) -> None:
            offered = self.request.headers.get("Sec-WebSocket-Protocol", "")
            if SUBPROTOCOL not in (p.strip() for p in offered.split(",")):
                raise HTTPError(400, "kernel websockets speak %s only", SUBPROTOCOL)
            _check_owner(self, kernel_id)
            await super().get(kernel_id, *args, **kwargs)

    class NoListing(RequestHandler):
        def initialize(self, **kwargs: Any) -> None:
            pass

        def get(self, *args: Any, **kwargs: Any) -> None:
            raise HTTPError(404)

    replace: dict[type[Any], type[Any]] = {
        KernelHandler: OwnKernelHandler,
        VoilaShutdownKernelHandler: OwnShutdownHandler,
        VoilaKernelWebsocketHandler: OwnWebsocketHandler,
        VoilaContentsHandler: NoListing,
        TornadoVoilaHandler: PageHandler,
    }
    return [(h[0], replace.get(h[1], h[1]), *h[2:]) for h in handlers]
