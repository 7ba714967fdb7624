"""How one setting is read from the environment: the :class:`Setting` record each
:class:`~workbench.config.Config` field carries, and the parser of each kind.

A parser turns the raw text into the field's value or raises a :class:`ConfigError`
that names the variable, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from workbench.exceptions import ConfigError

__all__ = ["PARSERS", "Setting", "as_env", "settings_table"]


@dataclasses.dataclass(frozen=True)
class Setting:
    """How one config field is read from the environment."""

    env: str
    default: str
    help: str
    kind: str = "str"  # a key of PARSERS


def _invalid(setting: Setting, raw: str, expected: str) -> ConfigError:
    return ConfigError(
        f"invalid {setting.env}={raw!r}: expected {expected}",
        hint=f"fix or unset {setting.env} (default {setting.default!r})",
    )


def _parse_str(setting: Setting, raw: str) -> str:
    return raw


def _parse_path(setting: Setting, raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _parse_dir(setting: Setting, raw: str) -> str:
    return str(Path(raw).expanduser().resolve())


def _number(
    kind: Callable[[str], Any], ok: Callable[[Any], bool], malformed: str, out_of_range: str
) -> Callable[[Setting, str], Any]:
    """A parser of numbers ``kind(raw)`` that ``ok`` accepts; the two texts say what was
    expected when ``raw`` is not a number, and when it is one out of range."""

    def parse(setting: Setting, raw: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise _invalid(setting, raw, malformed) from None
        if not ok(value):
            raise _invalid(setting, raw, out_of_range)
        return value

    return parse


_parse_int = _number(int, lambda v: v >= 1, "a whole number", "a number of at least 1")
_parse_count = _number(int, lambda v: v >= 0, "a whole number", "a number of at least 0")
_parse_port = _number(
    int, lambda v: 1 <= v <= 65535, "a TCP port number 1-65535", "a TCP port number 1-65535"
)
_parse_float = _number(
    float, lambda v: v > 0, "a number of seconds", "a positive number of seconds"
)


def _parse_servers(setting: Setting, raw: str) -> str:
    for server in raw.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            raise _invalid(setting, raw, "a comma-separated list of host:port")
    return raw


def _parse_loglevel(setting: Setting, raw: str) -> str:
    if raw.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise _invalid(setting, raw, "one of DEBUG, INFO, WARNING, ERROR")
    return raw.upper()


def _parse_kafka_client(setting: Setting, raw: str) -> str:
    if raw not in {"librdkafka", "kafka-python"}:
        raise _invalid(setting, raw, "librdkafka or kafka-python")
    return raw


def _parse_broker(setting: Setting, raw: str) -> str:
    if raw not in {"kafka", "tansu"}:
        raise _invalid(setting, raw, "kafka or tansu")
    return raw


def _parse_engine(setting: Setting, raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"duckdb", "spark"}:
        raise _invalid(setting, raw, "duckdb (embedded) or spark")
    return value


# local, local[N], local[*], local[N,F]; spark://h:p[,h:p]; yarn; k8s://…
_SPARK_MASTER = re.compile(
    r"local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?|spark://[\w.-]+:\d+(,[\w.-]+:\d+)*|yarn|k8s://\S+"
)
# Spark Connect: sc://host[:port][/;key=value;…] (token, use_ssl, user_agent)
_SPARK_CONNECT = re.compile(r"sc://[\w.-]+(:\d+)?(/(;(token|use_ssl|user_agent)=[^;\s]+)*)?")


def _parse_spark_master(setting: Setting, raw: str) -> str:
    value = raw.strip()
    if value.startswith("sc://"):
        if not _SPARK_CONNECT.fullmatch(value):
            raise _invalid(
                setting,
                re.sub(r"(;token=)[^;]*", r"\1…", raw),
                "a Spark Connect URL sc://host:port[/;token=…;use_ssl=true]",
            )
        return value
    if not _SPARK_MASTER.fullmatch(value):
        raise _invalid(
            setting, raw, "local[N], local[*], spark://host:port, yarn, k8s://… or sc://host:port"
        )
    return value


def _choice(*allowed: str) -> Callable[[Setting, str], str]:
    """A parser accepting one of ``allowed`` (any case; empty for "not set")."""

    def parse(setting: Setting, raw: str) -> str:
        value = raw.strip().upper()
        if value and value not in allowed:
            raise _invalid(setting, raw, " or ".join(allowed))
        return value

    return parse


def _parse_heap(setting: Setting, raw: str) -> str:
    value = raw.strip().lower()
    digits, unit = value[:-1], value[-1:]
    if not (digits.isascii() and digits.isdigit() and unit in ("m", "g") and int(digits) > 0):
        raise _invalid(setting, raw, "a JVM heap size such as 512m or 1g")
    return value


def _parse_memsize(setting: Setting, raw: str) -> str:
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]i?B)\s*", raw, flags=re.IGNORECASE | re.ASCII)
    if m is None or int(m.group(1)) == 0:
        raise _invalid(setting, raw, "a size such as 512MB or 2GB")
    return f"{m.group(1)}{m.group(2).upper().replace('IB', 'iB')}"


def _parse_bool(setting: Setting, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise _invalid(setting, raw, "1 or 0 (true/false)")


PARSERS: dict[str, Callable[[Setting, str], Any]] = {
    "str": _parse_str,
    "path": _parse_path,
    "dir": _parse_dir,
    "int": _parse_int,
    "count": _parse_count,
    "port": _parse_port,
    "float": _parse_float,
    "servers": _parse_servers,
    "loglevel": _parse_loglevel,
    "bool": _parse_bool,
    "kafkaclient": _parse_kafka_client,
    "broker": _parse_broker,
    "engine": _parse_engine,
    "sparkmaster": _parse_spark_master,
    "heap": _parse_heap,
    "securityprotocol": _choice("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"),
    "saslmechanism": _choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
    "memsize": _parse_memsize,
}


def as_env(settings: Any) -> dict[str, str]:
    """A settings dataclass instance as the environment variables that make it again."""
    out: dict[str, str] = {}
    for field in dataclasses.fields(settings):
        setting: Setting = field.metadata["setting"]
        out[setting.env] = str(getattr(settings, field.name))
    return out


def settings_table(settings_class: Any, env: Mapping[str, str]) -> str:
    """A settings dataclass's fields as ``--help`` epilog lines: variable, current value
    in ``env``, default, meaning."""
    lines = ["environment (current value, default in brackets):"]
    for field in dataclasses.fields(settings_class):
        s: Setting = field.metadata["setting"]
        current = env.get(s.env)
        shown = f"{current}  [{s.default}]" if current else f"[{s.default}]"
        lines.append(f"  {s.env:<28} {shown}\n  {'':<28} {s.help}")
    return "\n".join(lines)
