"""JupyterHub for analysts: the workbench's login, one OS account and server per user.

The hub (``python -m workbench.hub``, the stack's ``hub`` component) runs as root and
spawns each user's JupyterLab as that user's own unprivileged OS account
(:mod:`workbench.hub.accounts`), which cannot read the lake, ``$WORKBENCH_HOME`` or
other users' homes; a kernel reaches data through the doors, which accept the hub's
per-user API token in place of a password (:func:`verify_hub_token`).
"""

from workbench.hub.accounts import os_user_name
from workbench.hub.api import HubClient, verify_hub_token

__all__ = ["HubClient", "os_user_name", "verify_hub_token"]
