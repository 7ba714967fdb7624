"""Tenants' users, roles and the ``Principal`` every read and write in the workbench takes."""

from workbench.tenancy.audit import access_log, record_access
from workbench.tenancy.principal import ROLES, Principal, Role
from workbench.tenancy.throttle import LoginThrottled
from workbench.tenancy.users import User, UserStore, authenticate

__all__ = [
    "ROLES",
    "LoginThrottled",
    "Principal",
    "Role",
    "User",
    "UserStore",
    "access_log",
    "authenticate",
    "record_access",
]
