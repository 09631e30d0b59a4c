"""Errors the pack raises for users. Each message names the file or input, what was expected and the fix."""


class FaceMigrationError(Exception):
    """Base class: anything the user can act on."""


class ModelFileError(FaceMigrationError):
    """A model file is missing, truncated, of the wrong kind or does not match the expected layout."""


class IncompatibleModelError(FaceMigrationError):
    """Two models (or a model and an identity) that do not fit together."""


class UnsupportedModelError(IncompatibleModelError):
    """A diffusion model outside the FLUX.1 family (FLUX.2, other architectures), which PuLID-FLUX does not fit."""


class IdentityFileError(ModelFileError):
    """A saved face identity file (.safetensors in models/pulid_identities) is unreadable, corrupt or too large."""


class NoFaceError(FaceMigrationError):
    """A reference photo in which no face was found."""


class ApiRequestError(FaceMigrationError):
    """A request to the self-hosted face-migration route that is refused; `status` is the HTTP status the
    route answers with (the hosted API's statuses), the message is the {"message": ...} it sends to anyone,
    so it never holds a server path or file name; `detail` is for the server's log only (paths, files, the
    cause)."""
    status = 400

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


class ApiTokenError(ApiRequestError):
    """A missing or wrong Bearer token."""
    status = 401


class ApiNotConfiguredError(ApiRequestError):
    """ComfyUI listens beyond this machine and no API token is set: the route refuses every request."""
    status = 403


class ApiTokenFileError(ApiNotConfiguredError):
    """The API token file exists but cannot be read as text (not UTF-8, a folder, no permission): the route
    refuses every request until its owner fixes it."""


class ApiImageTooLargeError(ApiRequestError):
    """An uploaded image over the byte or pixel limit (refused before it is decoded)."""
    status = 413


class ApiNoFaceError(ApiRequestError):
    """The uploaded image holds no face the pipeline can use."""
    status = 422


class ApiUnavailableError(ApiRequestError):
    """The server cannot take the request now: the queue is full or the prompt was cancelled; `retryable`
    tells clients whether the same request may succeed later."""
    status = 503
    retryable = True


class ApiSetupError(ApiUnavailableError):
    """The server lacks what the request's model needs (model files, a usable template): sending the
    request again does not help until its owner installs or fixes them."""
    retryable = False


class ApiTemplateError(ApiSetupError):
    """An API workflow template that cannot be used (bad JSON, unknown or misplaced placeholder)."""


class InvalidInputError(FaceMigrationError):
    """A node input holds a value the node cannot use (wrong shape, empty, NaN or infinite)."""


class BatchMismatchError(FaceMigrationError):
    """Per-image values (identities, masks) whose count does not fit the batch being sampled."""


class ApiPromptFailedError(ApiRequestError):
    """The request's prompt ran and failed (a node raised, or the template returned no image)."""
    status = 500
