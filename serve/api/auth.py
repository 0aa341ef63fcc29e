"""Who is calling: ``Authorization: Bearer KEY`` checked on every /v1 route.

Routes take ``Caller`` (any valid key) or ``require(role)`` (that role or
above). A missing or unknown key is a 401, a role too low or another team's
data a 403; both in the API's one error shape. ``/health`` and ``/docs`` stay
open so load balancers and readers of the API need no key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from copilot.keys import Principal, Role
from serve.api.errors import ApiError

logger = logging.getLogger(__name__)

CREATE_KEY_HINT = (
    "send 'Authorization: Bearer KEY' with a key from `copilot keys create --role rep --team T`"
)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(request: Request) -> Principal:
    """The caller, or a 401 that says how to get a key."""
    token = _bearer(request)
    if token is None:
        raise ApiError(401, "unauthorized", f"no API key; {CREATE_KEY_HINT}")
    principal = request.app.state.service.keys.authenticate(token)
    if principal is None:
        raise ApiError(401, "unauthorized", f"the API key is unknown or revoked; {CREATE_KEY_HINT}")
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


def require(role: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets ``role`` and the roles above it through, and refuses the rest."""

    def check(principal: Caller) -> Principal:
        if not principal.at_least(role):
            logger.info("refused %s key %s: needs %s", principal.role, principal.key_id, role)
            raise ApiError(
                403, "forbidden", f"this needs a {role} key; a {principal.role} key cannot do it"
            )
        return principal

    return check


Manager = Annotated[Principal, Depends(require("manager"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def check_account(principal: Principal, service, account_id: str | None) -> None:
    """403 unless ``principal`` may see ``account_id``'s data (None: no account named).

    A caller limited to a team gets the same 403 for an account of another team and for
    an account that does not exist, so a key cannot probe which accounts exist.
    """
    if not may_see_account(principal, service, account_id):
        raise ApiError(
            403,
            "forbidden",
            f"account '{account_id}' is not among the accounts of team '{principal.team}'; "
            "ask a manager of its team, or use a key of that team",
        )


def may_see_account(principal: Principal, service, account_id: str | None) -> bool:
    """Whether ``principal`` may see data of ``account_id`` (the rule of ``check_account``)."""
    if account_id is None or principal.all_teams:
        return True
    return service.accounts.team_of(account_id) == principal.team


def check_team(principal: Principal, team: str | None, what: str) -> None:
    """403 unless ``principal`` may see data of ``team`` (``what`` names it in the message)."""
    if not principal.sees_team(team):
        raise ApiError(
            403,
            "forbidden",
            f"{what} belongs to another team; your key is for team '{principal.team}'",
        )
