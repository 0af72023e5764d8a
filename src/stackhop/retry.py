"""What a failed cloud call means: retry it or not, and whether its outcome is known.

The engine (:mod:`stackhop.engine`) asks :func:`classify` about every
exception an API call raises, and waits as :class:`RetryPolicy` says before
the next attempt: that is how *writes* are retried, each after a lookup on the
destination when its outcome is unknown (a lost response must not become a
second object).

*Reads* are retried below the engine, for every caller at once:
:func:`retry_reads` makes a connection's keystoneauth session repeat its safe
requests (``GET``, ``HEAD``, ``OPTIONS``, and the token request) on a
transient failure, with tenacity's full-jitter exponential wait, honouring
``Retry-After``. A listing, a lookup or a token then survives a busy API
without every caller handling it.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
import tenacity
from keystoneauth1 import exceptions as ksa_exceptions
from openstack import exceptions as sdk_exceptions

from stackhop.errors import TransientError

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Failure:
    """What an exception from a cloud call means for retrying it."""

    transient: bool
    #: The request certainly changed nothing (429, never connected): no lookup needed.
    outcome_known: bool
    retry_after: float | None = None


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _http_failure(status: int | None, response: Any) -> Failure:
    headers = getattr(response, "headers", None) or {}
    retry_after = _parse_retry_after(headers.get("Retry-After"))
    return Failure(
        transient=status in RETRYABLE_STATUS,
        outcome_known=status == 429 or (status is not None and status < 500),
        retry_after=retry_after,
    )


def classify(exc: BaseException) -> Failure:
    """Whether ``exc`` is worth retrying, and whether the call may have had an effect.

    Understands stackhop's TransientError, openstacksdk's HttpException (by
    status code), keystoneauth1's HTTP and connection errors, requests'
    connection errors and Python's ConnectionError / TimeoutError.
    """
    if isinstance(exc, TransientError):
        return Failure(transient=True, outcome_known=False, retry_after=exc.retry_after)
    if isinstance(exc, sdk_exceptions.HttpException):
        return _http_failure(exc.status_code, exc.response)
    if isinstance(exc, ksa_exceptions.HttpError):
        return _http_failure(exc.http_status, exc.response)
    if isinstance(exc, ksa_exceptions.ConnectTimeout):
        return Failure(transient=True, outcome_known=True)  # never connected
    if isinstance(
        exc,
        ksa_exceptions.RetriableConnectionFailure
        | ksa_exceptions.ConnectionError
        | requests.ConnectionError
        | requests.Timeout
        | ConnectionError
        | TimeoutError,
    ):
        return Failure(transient=True, outcome_known=False)
    return Failure(transient=False, outcome_known=True)


def error_text(exc: BaseException) -> str:
    """One line naming the failure: the exception's class and message, and for an HTTP
    error the service's own words (openstacksdk keeps only the status in ``message``; a
    Neutron 409 says *which* address is in use in ``details``)."""
    name = type(exc).__name__
    message = str(getattr(exc, "message", None) or str(exc) or name)
    details = getattr(exc, "details", None)
    if isinstance(details, str) and details.strip() and details.strip() not in message:
        message = f"{message}: {details.strip()}"
    message = " ".join(message.split())  # one line, whatever the service sent
    return message if message.startswith(f"{name}:") else f"{name}: {message}"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient failure."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    #: A server's Retry-After beyond this is capped (a broken header must not stall a run).
    max_retry_after: float = 600.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        The server's Retry-After when it gave one, else "full jitter":
        uniform between 0 and ``base_delay * 2**(attempt-1)``, capped.
        """
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


#: Requests that change nothing on the server: repeated freely by :func:`retry_reads`.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: How reads are retried (attempts in all; the waits grow from ``base_delay``).
READ_POLICY = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=30.0)


def _safe(url: str, method: str) -> bool:
    if method.upper() in SAFE_METHODS:
        return True
    # Asking for a token creates nothing an operator sees: a repeat is harmless.
    return method.upper() == "POST" and str(url).rstrip("/").endswith("/auth/tokens")


def _retryable_response(response: Any) -> bool:
    return getattr(response, "status_code", None) in RETRYABLE_STATUS


class _ReadWait(tenacity.wait.wait_base):
    """The server's ``Retry-After`` when it sent one, else full jitter (capped)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.jitter = tenacity.wait_random_exponential(
            multiplier=policy.base_delay, max=policy.max_delay
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        retry_after: float | None = None
        error = outcome.exception() if outcome is not None and outcome.failed else None
        if error is not None:
            retry_after = classify(error).retry_after
        elif outcome is not None:
            response = outcome.result()
            retry_after = _parse_retry_after(getattr(response, "headers", {}).get("Retry-After"))
        if retry_after is not None:
            return min(retry_after, self.policy.max_retry_after)
        return float(self.jitter(retry_state))


def retry_reads(session: Any, policy: RetryPolicy = READ_POLICY) -> None:
    """Make the keystoneauth ``session`` retry its safe requests on transient failures.

    Writes pass through unchanged: the engine retries them, after looking on
    the destination when a lost answer leaves their outcome unknown.
    """
    request = session.request
    if getattr(request, "stackhop_retries_reads", False):
        return
    retrying = tenacity.Retrying(
        retry=(
            tenacity.retry_if_exception(lambda exc: classify(exc).transient)
            | tenacity.retry_if_result(_retryable_response)
        ),
        wait=_ReadWait(policy),
        stop=tenacity.stop_after_attempt(policy.max_attempts),
        # Out of attempts: the last answer (an error response) or exception, as without retries.
        retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
        reraise=True,
    )

    def retried(url: str, method: str, *args: Any, **kwargs: Any) -> Any:
        if not _safe(url, method):
            return request(url, method, *args, **kwargs)
        return retrying(request, url, method, *args, **kwargs)

    retried.stackhop_retries_reads = True  # type: ignore[attr-defined]
    session.request = retried
