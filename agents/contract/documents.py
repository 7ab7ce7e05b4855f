"""The building blocks of the typed documents: frozen models, drafts, timestamps, and reading with named errors.

Every document that crosses between agent and coordinator is a pydantic model
derived from :class:`Document`: frozen (a document is built once, then only
read), forward compatible (fields a newer version added are kept, in
``model_extra``, and written back unchanged) and strict about what it knows (a
field of the wrong type is refused with a :class:`DocumentError` naming the
field). A job fills a :class:`Draft` while it runs; the document is made from
the draft when the job ends.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, PlainSerializer, ValidationError

from agents.contract.errors import DrillError

# Documents larger than this are refused before parsing: a record is a few KiB.
MAX_DOCUMENT_BYTES = 16 << 20


class DocumentError(DrillError):
    """A document that is not what its schema says; the message names the field and the problem."""

    code = "invalid_document"


class Document(BaseModel):
    """A frozen, forward-compatible document part: unknown fields are kept, known ones are checked."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, allow_inf_nan=False)


class Fields(BaseModel):
    """The fields of one kind of document, with no settings of their own: the document and its
    draft both derive from them, so the field list is written once."""


class Draft(BaseModel):
    """The mutable part of a document while a job fills it in; every assignment is checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, allow_inf_nan=False)


def format_time(moment: datetime) -> str:
    """``2026-11-30T02:50:23.249Z``: UTC, milliseconds (microseconds when they are not whole milliseconds)."""
    utc = moment.astimezone(UTC)
    spec = "milliseconds" if utc.microsecond % 1000 == 0 else "microseconds"
    return utc.isoformat(timespec=spec).replace("+00:00", "Z")


def utc_now() -> datetime:
    return datetime.now(UTC)


# A moment in time, always with its zone; written in the one form above.
Timestamp = Annotated[AwareDatetime, PlainSerializer(format_time, return_type=str, when_used="json")]

# A finite number of seconds (NaN and infinity are refused, as everywhere in documents).
Seconds = Annotated[float, PlainSerializer(lambda v: round(v, 6), return_type=float, when_used="json")]


def describe_validation(error: ValidationError, what: str) -> str:
    """One line naming each wrong field of ``what`` (first three), e.g. ``timings.started: Input should be …``."""
    parts = []
    for problem in error.errors()[:3]:
        location = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        parts.append(f"{location}: {problem['msg']}")
    more = error.error_count() - len(parts)
    return f"{what}: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, what: str) -> M:
    """``data`` as ``model``. Raises :class:`DocumentError` naming every wrong field."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise DocumentError(describe_validation(error, what)) from None
    except (RecursionError, ValueError, TypeError) as error:  # hostile nesting, or a validator's own refusal
        raise DocumentError(f"{what}: {error}") from None


def to_json_document(model: BaseModel) -> dict[str, Any]:
    """The JSON form of ``model``: fields by their wire names, extra fields kept, no NaN."""
    document = model.model_dump(mode="json", by_alias=True)
    _refuse_non_finite(document)
    return document


def _refuse_non_finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise DocumentError(f"a document may not hold {value!r}")
    if isinstance(value, dict):
        for item in value.values():
            _refuse_non_finite(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_non_finite(item)
