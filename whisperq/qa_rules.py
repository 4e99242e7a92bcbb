"""Call categories a QA team writes: a TOML file of named rules, checked when it is loaded.

::

    [[rule]]
    name = "cancellation"
    phrases = ["cancel my", "close my account"]    # said (any of them)
    speaker = "customer"

    [[rule]]
    name = "no recording notice"
    absent = ["this call may be recorded"]         # not said (none of them)
    speaker = "agent"
    within_first_seconds = 20

    [[rule]]
    name = "long hold"
    non_talk_over = 60

    [[rule]]
    name = "agent talks over"
    interruptions_over = 5
    speaker = "agent"

    [[rule]]
    name = "escalation"
    any = [
        { phrases = ["supervisor", "manager"] },
        { not = { talk_share_over = 0.2, speaker = "agent" } },
    ]

A rule (or any table inside ``all``/``any``/``not``) holds conditions, all of which must
hold: phrases said or ``absent`` (by ``speaker``, inside ``within_first_seconds`` /
``within_last_seconds``), and the call's measures (``non_talk_over``,
``longest_silence_over``, ``duration_over``/``_under``, and per ``speaker`` or for the
whole call ``interruptions_over``, ``talk_share_over``/``_under``,
``words_per_minute_over``/``_under``). A rule that is wrong fails here, with its name and
what is wrong, before anything runs (``RulesError``, exit 2).
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisperq.errors import UsageError

PHRASE_KEYS = ("phrases", "absent")
WINDOW_KEYS = ("within_first_seconds", "within_last_seconds")
# measure -> (what it reads, comparison): the call's measures
MEASURES: Mapping[str, tuple[str, str]] = {
    "non_talk_over": ("non_talk_time", ">"),
    "longest_silence_over": ("longest_silence", ">"),
    "duration_over": ("duration", ">"),
    "duration_under": ("duration", "<"),
    "interruptions_over": ("interruptions", ">"),
    "talk_share_over": ("talk_share", ">"),
    "talk_share_under": ("talk_share", "<"),
    "words_per_minute_over": ("words_per_minute", ">"),
    "words_per_minute_under": ("words_per_minute", "<"),
}
PER_SPEAKER = frozenset({"interruptions", "talk_share", "words_per_minute"})
COMBINATORS = ("all", "any", "not")
KNOWN = frozenset({"name", "speaker", *PHRASE_KEYS, *WINDOW_KEYS, *MEASURES, *COMBINATORS})
MAX_PHRASE_WORDS = 12


class RulesError(UsageError):
    """A rules file that cannot be used; the message names the rule and what is wrong."""


@dataclass(frozen=True)
class Condition:
    """One table of a rule: every part of it must hold. ``children`` with ``combine``
    (all/any/not) nest further tables."""

    speaker: str | None = None
    phrases: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    within_first: float | None = None
    within_last: float | None = None
    measures: tuple[tuple[str, float], ...] = ()  # (MEASURES key, threshold)
    all_of: tuple[Condition, ...] = ()
    any_of: tuple[Condition, ...] = ()
    none_of: tuple[Condition, ...] = ()  # `not`


@dataclass(frozen=True)
class Rule:
    name: str
    condition: Condition = field(default_factory=Condition)


def load_rules(path: Path) -> list[Rule]:
    """The rules of a TOML file; RulesError on anything wrong (no partial set)."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise RulesError(f"cannot read the rules file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise RulesError(f"{path} is not valid TOML: {error}") from None
    return parse_rules(document, str(path))


def parse_rules(document: Mapping[str, Any], source: str = "rules") -> list[Rule]:
    extra = sorted(set(document) - {"rule"})
    if extra:
        raise RulesError(f"{source}: only [[rule]] tables are allowed, found {extra}")
    tables = document.get("rule")
    if not isinstance(tables, list) or not tables:
        raise RulesError(f"{source}: no [[rule]] tables")
    rules: list[Rule] = []
    seen: set[str] = set()
    for number, table in enumerate(tables, 1):
        name = table.get("name") if isinstance(table, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise RulesError(f'{source}: rule {number} has no name (name = "...")')
        if name in seen:
            raise RulesError(f"{source}: two rules are named {name!r}")
        seen.add(name)
        rules.append(Rule(name, _condition(table, f"rule {name!r}", top=True)))
    return rules


def _condition(table: Any, where: str, top: bool = False) -> Condition:
    if not isinstance(table, dict):
        raise RulesError(f"{where}: expected a table, got {table!r}")
    unknown = sorted(set(table) - KNOWN - ({"name"} if top else set()))
    if "name" in table and not top:
        unknown.append("name")
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(KNOWN - {"name"}), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RulesError(f"{where}: unknown key {key!r}{hint}")
    body = {key: value for key, value in table.items() if key != "name"}
    if not body:
        raise RulesError(f"{where}: no condition")
    speaker = body.get("speaker")
    if speaker is not None and (not isinstance(speaker, str) or not speaker):
        raise RulesError(f'{where}: speaker must be a label such as "agent"')
    phrases = {key: _phrases(body.get(key), f"{where}, {key}") for key in PHRASE_KEYS}
    windows = {key: _seconds(body.get(key), f"{where}, {key}") for key in WINDOW_KEYS}
    if any(value is not None for value in windows.values()) and not any(phrases.values()):
        raise RulesError(f"{where}: within_first/last_seconds needs phrases or absent")
    measures = []
    for key in MEASURES:
        if key in body:
            measures.append((key, _threshold(key, body[key], f"{where}, {key}")))
    per_speaker = any(MEASURES[key][0] in PER_SPEAKER for key, _ in measures)
    if speaker is not None and not (any(phrases.values()) or per_speaker):
        raise RulesError(f"{where}: speaker applies to phrases, absent or a per-speaker measure")
    nested = {key: body.get(key) for key in COMBINATORS}
    for key in ("all", "any"):
        if nested[key] is not None and (not isinstance(nested[key], list) or not nested[key]):
            raise RulesError(f"{where}: {key} must be a list of tables")
    return Condition(
        speaker=speaker,
        phrases=phrases["phrases"],
        absent=phrases["absent"],
        within_first=windows["within_first_seconds"],
        within_last=windows["within_last_seconds"],
        measures=tuple(measures),
        all_of=tuple(
            _condition(t, f"{where}, all[{i}]") for i, t in enumerate(nested["all"] or [])
        ),
        any_of=tuple(
            _condition(t, f"{where}, any[{i}]") for i, t in enumerate(nested["any"] or [])
        ),
        none_of=(_condition(nested["not"], f"{where}, not"),) if nested["not"] else (),
    )


def _phrases(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RulesError(f'{where}: a list of phrases, e.g. ["cancel my"]')
    found = []
    for phrase in value:
        if not isinstance(phrase, str) or not phrase.split():
            raise RulesError(f"{where}: {phrase!r} is not a phrase")
        if len(phrase.split()) > MAX_PHRASE_WORDS:
            raise RulesError(f"{where}: {phrase!r} is longer than {MAX_PHRASE_WORDS} words")
        found.append(phrase)
    return tuple(found)


def _seconds(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise RulesError(f"{where}: a number of seconds above 0, got {value!r}")
    return float(value)


def _threshold(key: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RulesError(f"{where}: a number (0 or more), got {value!r}")
    if MEASURES[key][0] == "talk_share" and value > 1:
        raise RulesError(f"{where}: a share between 0 and 1 (0.4 = 40%), got {value!r}")
    return float(value)


def rule_names(rules: Sequence[Rule]) -> list[str]:
    return [rule.name for rule in rules]
