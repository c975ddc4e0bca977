"""The fault vocabulary shared by every fake provider server.

A fault is a name plus an optional argument. The same names work on every
vendor; each server translates a name into that vendor's real status code,
headers and error body (see the ``error_response`` method of each server).
Faults reach a server three ways, all parsed here:

* ``server.push(fault, times=n)`` from the test process,
* ``POST /__fake__/script`` with ``{"faults": [...]}`` from another process,
* a ``[[fault:NAME]]`` / ``[[fault:NAME:ARG]]`` directive in the prompt.
"""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass
from typing import Any, Union

# Faults answered with an HTTP error status before any body is sent.
HTTP_ERROR_FAULTS = (
    "auth",            # 401
    "forbidden",       # 403
    "not_found",       # 404 unknown model
    "invalid",         # 400
    "context_length",  # the vendor's real context-window error
    "content_filter",  # the vendor's real moderation / content-filter error
    "quota",           # out of credits / quota
    "rate_limit",      # 429 + Retry-After: <seconds>
    "rate_limit_date",  # 429 + Retry-After: <HTTP-date>
    "rate_limit_ms",   # 429 + retry-after-ms: <milliseconds>
    "server",          # 500
    "overloaded",      # Anthropic 529, everyone else 503
)

# Faults that change timing or break the body instead of the status.
TIMING_FAULTS = ("slow", "slow_stream", "hang")
BODY_FAULTS = ("drop", "malformed", "stream_error")
# Faults that change what a successful answer says or how it is framed.
ANSWER_FAULTS = (
    "refusal",    # the model declines (OpenAI message/delta.refusal, Anthropic stop_reason refusal)
    "json_body",  # a stream request answered with one JSON body, as some gateways do;
                  # ARG: an HTTP error fault whose body comes back in that 200
)

FAULT_NAMES = HTTP_ERROR_FAULTS + TIMING_FAULTS + BODY_FAULTS + ANSWER_FAULTS

# Defaults for the argument, per fault, when none is given.  Seconds for the
# timing faults and rate limits, milliseconds for rate_limit_ms, and for the
# body faults the number of content chunks sent before the fault strikes.
DEFAULT_ARGS: dict[str, float] = {
    "rate_limit": 1,
    "rate_limit_date": 1,
    "rate_limit_ms": 1000,
    "slow": 1.0,
    "slow_stream": 0.5,
    "drop": 1,
    "malformed": 1,
    "stream_error": 1,
}


@dataclass(frozen=True)
class Fault:
    """One scripted failure. ``arg`` is kept as given (str, int or float)."""

    name: str
    arg: Any = None

    def __post_init__(self) -> None:
        if self.name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {self.name!r}; known: {', '.join(FAULT_NAMES)}")

    def number(self, default: float | None = None) -> float:
        """The argument as a float, falling back to the fault's default."""
        if self.arg is None or self.arg == "":
            if default is not None:
                return float(default)
            return float(DEFAULT_ARGS.get(self.name, 0))
        return float(self.arg)

    def count(self) -> int:
        """The argument as a non-negative int (chunk index for body faults)."""
        return max(0, int(self.number()))

    @property
    def is_http_error(self) -> bool:
        return self.name in HTTP_ERROR_FAULTS

    def spec(self) -> str:
        """The ``NAME`` / ``NAME:ARG`` text form, as used in directives."""
        return self.name if self.arg is None else f"{self.name}:{self.arg}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arg": self.arg}


FaultLike = Union[Fault, str, dict]


def parse_fault(value: FaultLike) -> Fault:
    """Accept a Fault, ``"name"``, ``"name:arg"`` or ``{"name":..., "arg":...}``."""
    if isinstance(value, Fault):
        return value
    if isinstance(value, str):
        name, _, arg = value.strip().partition(":")
        return Fault(name.strip(), arg.strip() if arg else None)
    if isinstance(value, dict):
        return Fault(str(value["name"]), value.get("arg"))
    raise TypeError(f"cannot make a Fault from {value!r}")


def retry_after_headers(fault: Fault) -> dict[str, str]:
    """The standard retry hint each rate-limit fault carries.

    Only one hint per fault, so a test can tell which one the client obeyed:
    the OpenAI and Anthropic SDKs prefer ``retry-after-ms`` over
    ``Retry-After``, and ``Retry-After`` may be delta-seconds or an HTTP-date
    (RFC 9110 section 10.2.3).
    """
    if fault.name == "rate_limit":
        return {"Retry-After": _fmt_number(fault.number())}
    if fault.name == "rate_limit_date":
        # HTTP-dates have one-second resolution; round up so the date is at
        # least ARG seconds away when it is written.
        when = math.ceil(time.time() + fault.number())
        return {"Retry-After": email.utils.formatdate(when, usegmt=True)}
    if fault.name == "rate_limit_ms":
        return {"retry-after-ms": _fmt_number(fault.number())}
    return {}


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
