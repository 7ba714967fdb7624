"""The gateway's hand-written OpenAPI 3.1 document (served at ``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI"]


def _problem(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    if retry_after:
        response["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before retrying",
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    return response


_READING = {"oneOf": [{"type": "number"}, {"type": "boolean"}]}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Smart-building workbench gateway",
        "version": "1.0.0",
        "description": (
            "Devices post telemetry with a per-device SAS token. A batch is all-or-nothing: "
            "202 means the broker acknowledged every event. Retrying with the same seq "
            "never creates a duplicate."
        ),
    },
    "servers": [{"url": "http://127.0.0.1:8080"}],
    "paths": {
        "/v1/telemetry": {
            "post": {
                "operationId": "postTelemetry",
                "summary": "Send one event or a batch of events",
                "security": [{"sas": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/Event"},
                                    {"$ref": "#/components/schemas/Batch"},
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "202": {
                        "description": "accepted: the broker acknowledged every event",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Accepted"}
                            }
                        },
                    },
                    "400": _problem("the body is not JSON or not an event / batch"),
                    "401": _problem(
                        "missing, malformed, badly signed or expired SAS token, or one living "
                        "longer than WORKBENCH_SAS_MAX_TTL"
                    ),
                    "403": _problem(
                        "unknown, disabled or de-provisioned device, or a body naming another "
                        "device"
                    ),
                    "408": _problem(
                        "the body did not arrive within WORKBENCH_GATEWAY_READ_TIMEOUT; the "
                        "connection is closed"
                    ),
                    "413": _problem("body or batch too large"),
                    "415": _problem("Content-Type is not application/json"),
                    "422": _problem("an event's ts, seq or readings are invalid"),
                    "429": _problem("too many events awaiting the broker", retry_after=True),
                    "503": _problem(
                        "the broker is unavailable (nothing stored), or this worker already "
                        "serves WORKBENCH_GATEWAY_MAX_CONNECTIONS connections",
                        retry_after=True,
                    ),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness and registry state",
                "responses": {
                    "200": {
                        "description": "serving",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                        },
                    },
                    "503": {
                        "description": "registry not loaded yet",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                        },
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "sas": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": (
                    "SharedAccessSignature sr=<device_id>&se=<unix_expiry>&sig=<url-encoded "
                    'base64 HMAC-SHA256(device key, "<device_id>\\n<unix_expiry>")>'
                ),
            }
        },
        "schemas": {
            "Event": {
                "type": "object",
                "required": ["ts", "seq", "readings"],
                "additionalProperties": False,
                "properties": {
                    "ts": {
                        "type": "string",
                        "format": "date-time",
                        "description": "RFC 3339 with offset; at most 1 h ahead of the gateway",
                    },
                    "seq": {"type": "integer", "minimum": 0, "maximum": 9223372036854775807},
                    "readings": {
                        "type": "object",
                        "minProperties": 1,
                        "maxProperties": 32,
                        "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
                        "properties": {
                            "temperature": {"type": "number", "description": "°C"},
                            "humidity": {"type": "number", "description": "%RH"},
                            "light": {"type": "number", "description": "lux"},
                            "smoke": {"type": "boolean"},
                            "intrusion": {"type": "boolean"},
                        },
                        "additionalProperties": _READING,
                    },
                    "device_id": {
                        "type": "string",
                        "description": "optional; must equal the token's device",
                    },
                },
            },
            "Batch": {
                "type": "object",
                "required": ["events"],
                "additionalProperties": False,
                "properties": {
                    "events": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 5000,
                        "items": {"$ref": "#/components/schemas/Event"},
                    }
                },
            },
            "Accepted": {
                "type": "object",
                "required": ["accepted"],
                "properties": {"accepted": {"type": "integer", "minimum": 1}},
            },
            "Problem": {
                "type": "object",
                "required": ["type", "title", "status", "reason", "detail"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "reason": {"type": "string"},
                    "detail": {"type": "string"},
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "index": {"type": "integer"},
                                "field": {"type": "string"},
                                "detail": {"type": "string"},
                            },
                        },
                    },
                },
            },
            "Health": {
                "type": "object",
                "required": ["status", "devices"],
                "properties": {
                    "status": {"type": "string", "enum": ["ok", "starting"]},
                    "registry_version": {"type": ["integer", "null"]},
                    "devices": {"type": "integer"},
                    "broker": {"type": "string"},
                    "inflight": {"type": "integer"},
                },
            },
        },
    },
}
