"""The JupyterHub configuration of the workbench's hub, built from :class:`Config`."""

from __future__ import annotations

import sys
from pathlib import Path

from traitlets.config import Config as HubConfig

from workbench.config import Config
from workbench.filemodes import private_dir
from workbench.hub.api import service_token
from workbench.hub.runtime import proxy_bin, server_python
from workbench.secretfiles import load_secret, secret_path

__all__ = ["SERVER_CHECK_S", "SERVICE", "dashboards_url", "hub_config", "hub_dir"]

SERVER_CHECK_S = 10
"""Seconds between the hub's checks of each running server (is it alive, is its user
still active in a notebook role)."""

SERVICE = "workbench"
"""The hub service the workbench reads the hub as (``workbench status``)."""


def dashboards_url(config: Config) -> str:
    """The dashboards' home page (the Panel server), where a viewer is sent instead."""
    return f"http://{config.host}:{config.panel_port}/"


def hub_dir(config: Config) -> Path:
    """``$WORKBENCH_HOME/hub``: the hub's database, cookie secret and proxy pid file."""
    return private_dir(config.home / "hub")


def hub_config(config: Config) -> HubConfig:
    """JupyterHub's settings: ports, the workbench login and spawner, the proxy, the idle
    culler and the cap on servers."""
    state = hub_dir(config)
    c = HubConfig()
    c.JupyterHub.ip = config.host
    c.JupyterHub.port = config.hub_port
    c.JupyterHub.hub_ip = config.host
    c.JupyterHub.hub_port = config.hub_api_port
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "cookie_secret")
    c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
    c.JupyterHub.template_paths = [str(Path(__file__).parent / "templates")]
    c.JupyterHub.template_vars = {"dashboards_url": dashboards_url(config)}
    c.JupyterHub.authenticator_class = "workbench.hub.authenticator.WorkbenchAuthenticator"
    c.JupyterHub.spawner_class = "workbench.hub.spawner.WorkbenchSpawner"
    # a restarted hub finds the servers still running: analysts' kernels survive it
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.active_server_limit = config.hub_max_servers
    c.Authenticator.enable_auth_state = False
    c.Authenticator.allow_all = True  # who may log in is the user store's call

    proxy_token = load_secret(
        secret_path(config, "hub-proxy-token"),
        what="hub proxy token",
        lost_hint="restart the hub; a new one is made",
    ).hex()
    c.ConfigurableHTTPProxy.command = [str(proxy_bin())]
    c.ConfigurableHTTPProxy.api_url = f"http://{config.host}:{config.hub_proxy_api_port}"
    c.ConfigurableHTTPProxy.auth_token = proxy_token
    c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")

    python = server_python(config)
    c.Spawner.cmd = [python, "-m", "jupyterhub.singleuser"]
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = 60
    c.Spawner.http_timeout = 60
    # each poll also asks the user store: a disabled user's server stops within this
    c.Spawner.poll_interval = SERVER_CHECK_S
    idle = int(config.hub_idle_timeout)
    c.Spawner.args = [
        f"--MappingKernelManager.cull_idle_timeout={idle}",
        f"--MappingKernelManager.cull_interval={max(1, int(config.hub_cull_every))}",
        "--MappingKernelManager.cull_connected=True",
    ]
    c.JupyterHub.services = [
        {"name": SERVICE, "api_token": service_token(config)},
        {
            "name": "idle-culler",
            "command": [
                sys.executable, "-m", "jupyterhub_idle_culler",
                f"--timeout={idle}",
                f"--cull-every={max(1, int(config.hub_cull_every))}",
            ],
        },
    ]  # fmt: skip
    c.JupyterHub.load_roles = [
        {
            "name": "workbench-status",
            "scopes": ["list:users", "read:users", "read:servers", "admin:servers"],
            "services": [SERVICE],
        },
        {
            "name": "idle-culler",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        },
    ]
    return c
