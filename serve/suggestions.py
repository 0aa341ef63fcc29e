"""Every suggestion a rep is shown goes into the decision log, once, here.

Chat, objection handling, recommendations and quotes all call ``log_suggestion``
and hand the id back to the rep, who names it in ``POST /v1/feedback``. With an
experiment variant the suggestion is also that experiment's exposure.

A failed write to the log does not fail the rep's answer: the rep still gets it,
without a ``suggestion_id``, and the server log says why. An answer lost over a
bookkeeping error would cost more than one missing row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from copilot.errors import CopilotError
from copilot.keys import Principal

if TYPE_CHECKING:
    from serve.service import CopilotService

logger = logging.getLogger(__name__)


def log_suggestion(
    service: CopilotService,
    principal: Principal,
    kind: str,
    *,
    account_id: str | None,
    model: str,
    input_text: str,
    proposed: str,
    citations: Sequence[str] = (),
    experiment_id: str | None = None,
    variant: str | None = None,
    prompt_version: str | None = None,
) -> str | None:
    """The new suggestion's id, or None when it could not be logged (the reason is logged)."""
    if not proposed.strip():
        return None  # nothing was shown
    team = principal.team
    if account_id:
        # The account's own team, so a manager of that team sees the row even when an
        # admin or an all-teams manager asked.
        team = service.accounts.team_of(account_id) or team
    try:
        return service.decisions.record_suggestion(
            kind,
            rep_id=principal.name,
            team=team,
            account_id=account_id,
            model=model,
            input_text=input_text,
            proposed=proposed,
            citations=list(dict.fromkeys(citations)),
            experiment_id=experiment_id,
            variant=variant,
            prompt_version=prompt_version,
        )
    except (CopilotError, SQLAlchemyError):
        logger.exception("could not log a %s suggestion for %s", kind, principal.name)
        return None
