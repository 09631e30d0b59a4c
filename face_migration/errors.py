"""Errors the pack raises for users. Each message names the file or input, what was expected and the fix."""


class FaceMigrationError(Exception):
    """Base class: anything the user can act on."""


class ModelFileError(FaceMigrationError):
    """A model file is missing, truncated, of the wrong kind or does not match the expected layout."""


class IncompatibleModelError(FaceMigrationError):
    """Two models (or a model and an identity) that do not fit together."""


class IdentityFileError(ModelFileError):
    """A saved face identity file (.safetensors in models/pulid_identities) is unreadable, corrupt or too large."""
