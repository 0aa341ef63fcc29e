"""Who may open the manager UI: a manager or admin API key, checked by gradio's login page.

The key must see every team (an admin, or a manager created without ``--team``): the
tabs show every team's calls, training runs and experiments.

The username is the key's name (as ``copilot keys list`` shows it; a key made
without ``--name`` is named by its id) and the password is the key itself. The
name is checked so that the session's user, which the workshop records as a
prompt version's author, is the verified owner of the key.

Gradio keeps a session in memory from login until logout or restart, as a map from
the session's cookie to the user name. ``end_sessions_of_revoked_keys`` puts a map
there that checks, on every look-up, that a live manager or admin key still has
that name, so revoking a key (or demoting its holder to a new rep key) closes its
UI session at the next request, as it closes its API access.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.routing import Mount

from serve.service import CopilotService

logger = logging.getLogger(__name__)

UI_ROLE = "manager"
LOGIN_MESSAGE = (
    "Sign in with a manager or admin API key. "
    "Username: the key's name, as 'copilot keys list' shows it "
    "(a key created without --name is named by its id). "
    "Password: the key itself (cpk_...). Rep keys and manager keys limited to one team "
    "cannot open this UI (it shows every team's calls); an admin creates a key with "
    "'copilot keys create --role manager --name YOUR-NAME'."
)


def manager_login(service: CopilotService) -> Callable[[str, str], bool]:
    """gradio's ``auth`` callable: True for a manager or admin key under its own name."""

    def check(username: str, password: str) -> bool:
        principal = service.keys.authenticate((password or "").strip())
        if principal is None:
            logger.info("UI login refused for '%s': unknown or revoked key", username)
            return False
        if not principal.at_least(UI_ROLE):
            logger.info("UI login refused: key %s is a %s key", principal.key_id, principal.role)
            return False
        if not principal.all_teams:
            # The UI's tabs show every team's calls, runs and experiments.
            logger.info(
                "UI login refused: key %s is limited to team %s", principal.key_id, principal.team
            )
            return False
        if (username or "").strip() != principal.name:
            logger.info("UI login refused: key %s is not named '%s'", principal.key_id, username)
            return False
        logger.info("UI login: %s (%s key %s)", principal.name, principal.role, principal.key_id)
        return True

    return check


class _LiveSessions(dict):
    """gradio's session map (cookie token -> user name) whose look-ups re-check the key."""

    def __init__(self, service: CopilotService):
        super().__init__()
        self._service = service

    def get(self, token: Any, default: Any = None) -> Any:
        name = super().get(token, default)
        if name is None or name is default:
            return name
        principal = self._service.keys.active(name)
        if principal is None or not principal.at_least(UI_ROLE) or not principal.all_teams:
            logger.info(
                "UI session of '%s' ended: no live manager or admin key has that name", name
            )
            self.pop(token, None)
            return default
        return name


def end_sessions_of_revoked_keys(app: FastAPI, path: str, service: CopilotService) -> None:
    """Make the UI mounted at ``path`` drop a session once its key is revoked."""
    mounted = next(r.app for r in app.routes if isinstance(r, Mount) and r.path == path)
    sessions = _LiveSessions(service)
    sessions.update(mounted.tokens)
    # gradio reads the map as ``app.tokens`` (routes.App); its own login writes to it.
    mounted.tokens = sessions
