"""Where alarm webhooks may point: public addresses, or those an operator allowed.

A webhook is a request the workbench makes on a tenant's behalf, so a tenant could aim
it at the workbench's own network (a metadata service, an admin port). Targets that
resolve to loopback, link-local, private or otherwise non-public addresses are refused
unless ``WORKBENCH_WEBHOOK_ALLOW`` names the host or its network.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from workbench.exceptions import InvalidInput

__all__ = ["WebhookRefused", "check_target"]


class WebhookRefused(InvalidInput):
    """A webhook URL points at an address webhooks may not reach (loopback, link-local,
    private, reserved) and ``WORKBENCH_WEBHOOK_ALLOW`` does not list it."""


def check_target(url: str, allow: str) -> None:
    """Refuse ``url`` unless every address its host resolves to is public, or the host or
    the address is in ``allow`` (names and networks, comma-separated).

    >>> check_target("http://127.0.0.1:9/hook", "")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.alarms.targets.WebhookRefused: webhook http://127.0.0.1:9/hook: 127.0.0.1 is ...
    >>> check_target("http://127.0.0.1:9/hook", "127.0.0.1")
    >>> check_target("http://10.1.2.3/hook", "10.0.0.0/8")
    """
    host = urlsplit(url).hostname or ""
    entries = [e.strip() for e in allow.split(",") if e.strip()]
    if host.lower() in {e.lower() for e in entries}:
        return
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError as exc:
            raise WebhookRefused(
                f"webhook {url}: cannot resolve {host} ({exc})", hint="check the URL"
            ) from None
        addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    for address in sorted(addresses, key=str):
        if any(address in n for n in networks):
            continue
        if address.is_global and not address.is_multicast:
            continue
        kind = next(
            (
                k
                for k, flag in (
                    ("loopback", address.is_loopback),
                    ("link-local", address.is_link_local),
                    ("private", address.is_private),
                )
                if flag
            ),
            "not a public address",
        )
        raise WebhookRefused(
            f"webhook {url}: {address} is {kind}",
            hint="webhooks reach public addresses only; list it in WORKBENCH_WEBHOOK_ALLOW "
            "for an on-premises receiver",
        )
