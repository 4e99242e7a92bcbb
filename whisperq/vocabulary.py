"""The redaction vocabulary: entity types, the ``pci``/``pii`` groups, user pattern names.

A leaf module (standard library only, no whisperq imports): job options and settings
validate against it, and the redaction rules (``whisperq.redaction``) detect these types.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

CARD_NUMBER: Final = "CARD_NUMBER"
CVV: Final = "CVV"
EXPIRY: Final = "EXPIRY"
SSN: Final = "SSN"
NATIONAL_ID: Final = "NATIONAL_ID"
PHONE: Final = "PHONE"
EMAIL: Final = "EMAIL"
DATE_OF_BIRTH: Final = "DATE_OF_BIRTH"
IBAN: Final = "IBAN"
BANK_ACCOUNT: Final = "BANK_ACCOUNT"
SORT_CODE: Final = "SORT_CODE"
REFERENCE: Final = "REFERENCE"  # a cue only: order and ticket numbers are kept

PCI_TYPES: Final = frozenset({CARD_NUMBER, CVV, EXPIRY})
PII_TYPES: Final = PCI_TYPES | {
    SSN,
    NATIONAL_ID,
    PHONE,
    EMAIL,
    DATE_OF_BIRTH,
    IBAN,
    BANK_ACCOUNT,
    SORT_CODE,
}
GROUPS: Final[Mapping[str, frozenset[str]]] = {"pci": PCI_TYPES, "pii": PII_TYPES}

# When two detectors claim a token, the earlier type here wins.
PRIORITY: Final = (
    CARD_NUMBER,
    CVV,
    EXPIRY,
    SSN,
    NATIONAL_ID,
    IBAN,
    SORT_CODE,
    BANK_ACCOUNT,
    PHONE,
    DATE_OF_BIRTH,
    EMAIL,
)

_USER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")


def compile_user_patterns(
    patterns: Mapping[str, re.Pattern[str] | str],
) -> dict[str, re.Pattern[str]]:
    """Validate user patterns: names become upper-case tags (letters, digits, ``_``, at
    most 40, not a built-in type); regexes must compile. Raises ValueError."""
    compiled: dict[str, re.Pattern[str]] = {}
    for name, pattern in patterns.items():
        if not _USER_NAME.fullmatch(name):
            raise ValueError(f"user pattern name {name!r}: letters, digits and _ only")
        tag = name.upper()
        if tag in PII_TYPES:
            raise ValueError(f"user pattern name {name!r} is a built-in type")
        try:
            compiled[tag] = re.compile(pattern) if isinstance(pattern, str) else pattern
        except re.error as error:
            raise ValueError(f"user pattern {name!r}: {error}") from error
    return compiled


def expand_groups(groups: Iterable[str]) -> frozenset[str]:
    """``pci``/``pii`` and single type names (any case) to entity types."""
    types: set[str] = set()
    for group in groups:
        name = group.strip()
        if name.lower() in GROUPS:
            types |= GROUPS[name.lower()]
        elif name.upper() in PII_TYPES:
            types.add(name.upper())
        else:
            raise ValueError(f"unknown redaction group {group!r}: pci, pii or a type name")
    return frozenset(types)
