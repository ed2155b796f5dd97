"""What the domain refuses. Each refusal is a kind of :class:`DomainError`; the HTTP edge maps
the kind to a status code (``http_edge.web``), the domain never names one."""

from __future__ import annotations


class DomainError(Exception):
    """A refusal whose ``message`` is meant for the caller (it never holds a secret)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    """The request names or holds something the domain cannot accept."""


class PermissionMissing(DomainError):
    """The caller lacks an ACL (or system-admin rights) the action needs."""


class NotPermitted(DomainError):
    """The caller may not act on this particular thing (a group, a row)."""


class NotFound(DomainError):
    """The thing does not exist, or is not visible to the caller."""
