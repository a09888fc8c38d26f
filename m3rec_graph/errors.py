"""Typed errors a caller can catch. Bad model answers never raise: they degrade."""


class M3RecError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidRequestError(M3RecError, ValueError):
    """The recommendation request is malformed (the CLI exits with code 2)."""


class ConfigurationError(M3RecError, ValueError):
    """A routing preset, model override or setting is not valid (CLI exit code 2)."""


class LocalServerError(M3RecError, RuntimeError):
    """The local model server could not be installed, started or reached."""


class ProviderAuthError(M3RecError, RuntimeError):
    """The model provider rejected the credentials; retrying cannot help."""


class DatasetError(M3RecError, ValueError):
    """A dataset directory is missing a file or has a malformed row (the message names both)."""


class ProviderRequestError(ConfigurationError):
    """The model provider refused a request as invalid (400, or 404 for the model).

    Every call would be refused alike (a parameter the model rejects, a model that
    is gone), so it is a configuration error (CLI exit code 2), never a degradation.
    """
