"""The project's own exceptions. Only ``serve/`` turns them into exit codes and HTTP statuses."""


class CopilotError(Exception):
    """Base class; ``code`` is the stable machine-readable name used in API errors."""

    code = "copilot_error"


class InputError(CopilotError):
    """The caller's input is wrong: a bad file, an empty text, an unknown option value."""

    code = "bad_input"


class NotFoundError(CopilotError):
    """A named thing (call, adapter, account) does not exist."""

    code = "not_found"


class StateError(CopilotError):
    """The stored state does not allow the request (nothing ingested yet, no objections mined)."""

    code = "bad_state"


class ConfigError(CopilotError):
    """The configuration file or an override is invalid."""

    code = "bad_config"


class ModelMissingError(CopilotError):
    """A bundled model package is not installed."""

    code = "model_missing"
