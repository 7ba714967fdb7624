"""The embedded-stack supervisor behind ``workbench up | down | status | logs``."""

from workbench.stack.base import Component, Port, UpOptions, http_health, tcp_health
from workbench.stack.components import register
from workbench.stack.supervisor import ComponentStatus, down, status, up

__all__ = [
    "Component",
    "ComponentStatus",
    "Port",
    "UpOptions",
    "down",
    "http_health",
    "register",
    "status",
    "tcp_health",
    "up",
]
