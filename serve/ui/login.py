"""Who may open the manager UI: a manager or admin API key, checked by gradio's login page.

The username is the key's name (as ``copilot keys list`` shows it; a key made
without ``--name`` is named by its id) and the password is the key itself. The
name is checked so that the session's user, which the workshop records as a
prompt version's author, is the verified owner of the key.

Gradio keeps a session in memory from login until logout or restart: revoking a
key ends its API access at once, but a UI session opened with it lasts until the
manager logs out (``/ui/logout``) or the server restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from serve.service import CopilotService

logger = logging.getLogger(__name__)

UI_ROLE = "manager"
LOGIN_MESSAGE = (
    "Sign in with a manager or admin API key. "
    "Username: the key's name, as 'copilot keys list' shows it "
    "(a key created without --name is named by its id). "
    "Password: the key itself (cpk_...). Rep keys cannot open this UI; "
    "an admin creates a key with 'copilot keys create --role manager --name YOUR-NAME'."
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
        if (username or "").strip() != principal.name:
            logger.info("UI login refused: key %s is not named '%s'", principal.key_id, username)
            return False
        logger.info("UI login: %s (%s key %s)", principal.name, principal.role, principal.key_id)
        return True

    return check
