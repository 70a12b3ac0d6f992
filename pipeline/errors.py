"""User-facing errors: the CLI prints their message as one line and exits with their code."""


class RecflowError(Exception):
    """A problem the user can fix (bad input, bad config); never shown with a traceback."""

    exit_code = 1


class ConfigError(RecflowError):
    """params.yaml is missing, malformed or out of range."""

    exit_code = 2


class DataError(RecflowError):
    """An input batch is unusable (validation failed, file unreadable, empty)."""

    exit_code = 1


class GateRefused(RecflowError):
    """The challenger did not beat the champion; nothing was promoted."""

    exit_code = 0


class ChampionPointerError(RecflowError):
    """``models/registry/champion.json`` is unreadable or names a version that is not there."""

    exit_code = 1



class RefitFailed(RecflowError):
    """The gate passed but the refit for serving failed or was refused; nothing changed."""

    exit_code = 1
