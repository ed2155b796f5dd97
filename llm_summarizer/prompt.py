"""The summarizer's prompt, from a request's comments, classifications and redshift.

Inputs arrive as SkyPortal's CSV strings or as skyhook's typed JSON records. Unlike SkyPortal's
summarizer: the prompt is never discarded when a redshift exists (the line
is appended), comments keep their order (newest first, each with its date) instead of going
through a ``set``, and nothing in the model's answer is filtered out afterwards.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_COMMENTS = 200
MAX_COMMENT_CHARS = 4000
MAX_PROMPT_CHARS = 60_000


class InputsError(ValueError):
    """The request's inputs cannot be read (answered with a 400)."""


class NothingToSummarize(ValueError):
    """No comments and no classifications: there is nothing to summarize."""


@dataclass(frozen=True)
class Comment:
    text: str
    created_at: datetime | None
    bot: bool


@dataclass(frozen=True)
class Classification:
    name: str
    probability: float | None


@dataclass(frozen=True)
class Redshift:
    value: float
    error: float | None


@dataclass(frozen=True)
class SourceFacts:
    source_id: str
    comments: list[Comment]
    classifications: list[Classification]
    redshift: Redshift | None


def _records(value: Any, name: str) -> list[dict[str, Any]]:
    """CSV text (SkyPortal) or a list of JSON objects (skyhook's typed inputs)."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        if not all(isinstance(item, dict) for item in value):
            raise InputsError(f"inputs.{name} must be CSV text or a list of objects")
        return value
    if not isinstance(value, str):
        raise InputsError(f"inputs.{name} must be CSV text or a list of objects")
    try:
        return list(csv.DictReader(io.StringIO(value)))
    except csv.Error as exc:
        raise InputsError(f"inputs.{name} is not valid CSV: {exc}") from None


def _number(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _time(value: Any) -> datetime | None:
    """ISO 8601; SkyPortal's naive ``YYYY-MM-DD HH:MM:SS.ffffff`` is UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in {"true", "1"})


def parse_comments(value: Any) -> list[Comment]:
    """Comments newest first (undated ones last, in their given order); exact repeats of the
    same text at the same time are dropped."""
    found: dict[tuple[str, datetime | None], Comment] = {}
    for record in _records(value, "comments"):
        text = " ".join(str(record.get("text") or "").split())
        if not text:
            continue
        comment = Comment(text, _time(record.get("created_at")), _flag(record.get("bot")))
        found.setdefault((text, comment.created_at), comment)
    dated = [c for c in found.values() if c.created_at is not None]
    undated = [c for c in found.values() if c.created_at is None]
    dated.sort(key=lambda c: c.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return dated + undated


def parse_classifications(value: Any) -> list[Classification]:
    found: dict[tuple[str, float | None], Classification] = {}
    for record in _records(value, "classifications"):
        name = str(record.get("classification") or "").strip()
        if name:
            item = Classification(name, _number(record.get("probability")))
            found.setdefault((item.name, item.probability), item)
    return list(found.values())


def parse_redshift(value: Any) -> Redshift | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = _number(value)
        return Redshift(number, None) if number is not None else None
    records = _records(value, "redshift")
    if not records:
        return None
    number = _number(records[0].get("redshift"))
    if number is None:
        return None
    return Redshift(number, _number(records[0].get("redshift_error")))


def read_facts(payload: dict[str, Any]) -> SourceFacts:
    inputs = payload.get("inputs")
    if not isinstance(inputs, dict):
        raise InputsError("inputs must be an object")
    source_id = payload.get("resource_id")
    return SourceFacts(
        source_id=str(source_id) if source_id is not None else "unknown",
        comments=parse_comments(inputs.get("comments")),
        classifications=parse_classifications(inputs.get("classifications")),
        redshift=parse_redshift(inputs.get("redshift")),
    )


def _comment_line(comment: Comment) -> str:
    when = comment.created_at.strftime("%Y-%m-%d %H:%M UTC") if comment.created_at else "undated"
    text = comment.text
    if len(text) > MAX_COMMENT_CHARS:
        text = text[:MAX_COMMENT_CHARS] + " […]"
    return f"  - [{when}]{' (bot)' if comment.bot else ''} {text}"


def _classification_line(item: Classification) -> str:
    if item.probability is None:
        return f"  - {item.name}"
    return f"  - {item.name} (probability {item.probability:.2f})"


def build_prompt(instructions: str, facts: SourceFacts) -> str:
    """The user message: the instructions, then the facts between triple quotes."""
    if not facts.comments and not facts.classifications:
        raise NothingToSummarize("No comments or classifications to summarize")
    lines = [instructions.strip(), "'''", f"Source ID: {facts.source_id}"]
    if facts.redshift is not None:
        z = facts.redshift
        error = f" ± {z.error:.4f}" if z.error is not None else ""
        lines.append(f"Redshift: {z.value:.4f}{error}")
    if facts.classifications:
        lines.append("Classifications:")
        lines.extend(_classification_line(c) for c in facts.classifications)
    if facts.comments:
        lines.append("Comments (newest first):")
        used = sum(len(line) + 1 for line in lines)
        shown = 0
        for comment in facts.comments[:MAX_COMMENTS]:
            line = _comment_line(comment)
            if used + len(line) > MAX_PROMPT_CHARS:
                break
            lines.append(line)
            used += len(line) + 1
            shown += 1
        if shown < len(facts.comments):
            lines.append(f"  ({len(facts.comments) - shown} older comments not shown)")
    lines.append("'''")
    return "\n".join(lines)
