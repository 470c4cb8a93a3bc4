"""Download errors: the kinds the UI acts on, and huggingface_hub / httpx failures turned into words."""

from __future__ import annotations

from enum import Enum

from app.core.errors import HarmonicaError
from app.core.plain_errors import connection_problem, http_status_words, plain_text


class ErrorKind(str, Enum):
    OFFLINE = "offline"
    NOT_FOUND = "not_found"
    AUTH = "auth"
    SERVER = "server"
    NETWORK = "network"
    DISK_SPACE = "disk_space"
    CHECKSUM = "checksum"
    LOCAL_IO = "local_io"
    BUSY = "busy"


class DownloadError(HarmonicaError):
    """A download failed; `message` is written for the user, `kind` lets the UI choose actions."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def can_retry(self) -> bool:
        """Whether offering "Try again" makes sense (a checksum failure means: download again)."""
        return self.kind in (ErrorKind.SERVER, ErrorKind.NETWORK, ErrorKind.CHECKSUM, ErrorKind.BUSY)


class _Stopped(Exception):
    """Raised inside the transfer when pause or cancel was requested."""


class _RetryableStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _classify(exc: BaseException, endpoint: str, what: str) -> DownloadError:
    """Turn a huggingface_hub / httpx exception into a message a user can act on."""
    import httpx2
    from huggingface_hub import errors

    if isinstance(exc, DownloadError):
        return exc
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return DownloadError(ErrorKind.OFFLINE, "Downloads are off: HF_HUB_OFFLINE is set.")
    if isinstance(exc, errors.GatedRepoError):
        return DownloadError(ErrorKind.AUTH, f"{what} is gated: accept its terms on the Hub and set HF_TOKEN.")
    if isinstance(
        exc,
        (
            errors.RepositoryNotFoundError,
            errors.RevisionNotFoundError,
            errors.EntryNotFoundError,
            errors.RemoteEntryNotFoundError,
        ),
    ):
        return DownloadError(
            ErrorKind.NOT_FOUND,
            f"{what} was not found on {endpoint} (HTTP 404). Check the model name, or HF_ENDPOINT if you use a mirror.",
        )
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            return DownloadError(
                ErrorKind.AUTH,
                f"{endpoint} refused access to {what}: {http_status_words(status)} (HTTP {status}). "
                "If the model needs a Hugging Face login, set HF_TOKEN and try again.",
            )
        if status == 404:
            return DownloadError(ErrorKind.NOT_FOUND, f"{what} was not found on {endpoint} (HTTP 404).")
        return DownloadError(ErrorKind.SERVER, _server_trouble(endpoint, what, status))
    if isinstance(exc, _RetryableStatus):
        return DownloadError(ErrorKind.SERVER, _server_trouble(endpoint, what, exc.status))
    if isinstance(exc, (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError, OSError)):
        return DownloadError(
            ErrorKind.NETWORK,
            f"Could not reach {endpoint} for {what}: {connection_problem(exc)}. Check that this computer is "
            "online; the bytes already downloaded are kept, so Resume continues from there.",
        )
    return DownloadError(ErrorKind.NETWORK, f"Download of {what} failed: {plain_text(exc)}")


def _server_trouble(endpoint: str, what: str, status: int) -> str:
    return (
        f"{endpoint} could not send {what}: {http_status_words(status)} (HTTP {status}). "
        "This is on the server's side; try again later."
    )


def _interruption(exc: BaseException, read_timeout: float) -> str:
    """What went wrong with a transfer that will be retried, in the user's words."""
    import httpx2

    if isinstance(exc, _RetryableStatus):
        words = http_status_words(exc.status)
        return f"{words[0].upper()}{words[1:]} (HTTP {exc.status})"
    if isinstance(exc, httpx2.ConnectTimeout):
        return "The server did not answer"
    if isinstance(exc, (httpx2.ReadTimeout, TimeoutError)):
        return f"The server stopped sending data for {read_timeout:g} s"
    if isinstance(exc, httpx2.ConnectError):
        words = connection_problem(exc)
        return f"Could not connect: {words}"
    return "The connection was interrupted"


def _retryable(exc: BaseException) -> bool:
    import httpx2
    from huggingface_hub import errors

    if isinstance(exc, (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError, _RetryableStatus)):
        return True
    if isinstance(exc, errors.HfHubHTTPError) and not isinstance(
        exc,
        (
            errors.RepositoryNotFoundError,
            errors.RevisionNotFoundError,
            errors.EntryNotFoundError,
            errors.GatedRepoError,
        ),
    ):
        status = exc.response.status_code if exc.response is not None else 0
        return status in (408, 429) or status >= 500
    return False
