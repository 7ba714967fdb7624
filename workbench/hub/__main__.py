"""``python -m workbench.hub``: run the hub (the stack's ``hub`` component);
``python -m workbench.hub install``: install its proxy from npm (``make hub-deps``)."""

from __future__ import annotations

import os
import sys

from workbench.filemodes import restrict_umask


def main(argv: list[str] | None = None) -> int:
    """Run the hub as root, or refuse: without root it cannot give each user an account."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["install"]:
        from workbench.hub.runtime import install_proxy

        print(install_proxy())
        return 0
    if os.geteuid() != 0:
        print(
            "the hub needs root: it runs each user's notebook server as that user's own OS "
            "account, so that no kernel can read the lake or another tenant's data. Run "
            "'workbench up' as root, or use 'make lab' (one unscoped JupyterLab for the "
            "platform's own developers, never for tenants).",
            file=sys.stderr,
        )
        return 2
    restrict_umask()
    from jupyterhub.app import JupyterHub

    from workbench.config import load_config
    from workbench.hub.runtime import exposed_paths
    from workbench.hub.settings import hub_config, hub_dir

    config = load_config()
    exposed = exposed_paths(config)
    if exposed:
        print(
            f"the hub refuses to start: {', '.join(map(str, exposed))} can be read by other "
            "OS accounts, so a user's notebook kernel could read every tenant's data and the "
            f"secrets; chmod 700 {config.home} (and the lake's folder)",
            file=sys.stderr,
        )
        return 2
    hub_config_obj = hub_config(config)
    os.chdir(hub_dir(config))  # no stray jupyterhub_config.py is read from the caller's folder
    JupyterHub.instance(config=hub_config_obj)  # the singleton launch_instance runs
    JupyterHub.launch_instance(argv=[])
    return 0


if __name__ == "__main__":
    sys.exit(main())
