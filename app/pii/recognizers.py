"""Presidio recognizers for one language: Russian identifiers validated by their check digits,
cards (Presidio's, Luhn), phones (libphonenumber), e-mail (offline), and the context words
that raise a match without check digits (passport, account without BIK) over the threshold."""

import re
from collections.abc import Callable
from typing import Any

from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    PhoneRecognizer,
)

from app.pii import checksums

# Entity type -> the label of its placeholder ([PHONE_1]).
LABELS = {
    "PHONE_NUMBER": "PHONE",
    "EMAIL_ADDRESS": "EMAIL",
    "CREDIT_CARD": "CARD",
    "RU_INN": "INN",
    "RU_SNILS": "SNILS",
    "RU_OGRN": "OGRN",
    "RU_PASSPORT": "PASSPORT",
    "RU_BANK_ACCOUNT": "ACCOUNT",
    "PERSON": "PERSON",
}

# Words near a number that say it is not a phone (an INN after "ИНН" is no phone number).
_NOT_PHONE = re.compile(
    r"(инн|inn|снилс|snils|огрн|ogrn|сч[её]т|р/с|account|паспорт|passport|карт|card|бик|bic)"
    r"[^\d\n]{0,12}$",
    re.IGNORECASE,
)
# Presidio's card patterns (checked by Luhn), plus Mir cards (2200-2204).
CARD_PATTERNS = [
    *CreditCardRecognizer.PATTERNS,
    Pattern("Mir card", r"\b220[0-4][- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b", 0.3),
]
_RUN_UP = "01234567890123456789"
_RUN_DOWN = "98765432109876543210"
_BIK = re.compile(r"(?<!\d)04\d{7}(?!\d)")


class _ChecksumRecognizer(PatternRecognizer):
    """A pattern whose match counts only when `check` accepts its digits (score 1.0 then)."""

    check: Callable[[str], bool]

    def validate_result(self, pattern_text: str) -> bool:
        """True when the check digits are right; False removes the match. Numbers of one or
        two digits (1000000000000) or a straight run (9876543210) pass some checks but are
        constants and examples, not anyone's number."""
        value = checksums.digits(pattern_text)
        if len(set(value)) <= 2 or value in _RUN_UP or value in _RUN_DOWN:
            return False
        return type(self).check(pattern_text)


class InnRecognizer(_ChecksumRecognizer):
    """INN: 10 digits (organisation) or 12 (person)."""

    check = staticmethod(checksums.inn_valid)


class SnilsRecognizer(_ChecksumRecognizer):
    """SNILS: 123-456-789 01 or 11 digits in a row."""

    check = staticmethod(checksums.snils_valid)


class OgrnRecognizer(_ChecksumRecognizer):
    """OGRN (13 digits) and OGRNIP (15 digits)."""

    check = staticmethod(checksums.ogrn_valid)


class BankAccountRecognizer(PatternRecognizer):
    """A 20-digit account: sure when its key fits a BIK in the same text, dropped when it fits
    none of them, and kept on context words alone when the text names no BIK."""

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        """The pattern's matches, scored against the BIKs found in the text."""
        results: list[RecognizerResult] = super().analyze(
            text, entities, nlp_artifacts, regex_flags
        )
        biks = _BIK.findall(text)
        if not biks:
            return results
        kept = []
        for result in results:
            account = text[result.start : result.end]
            if any(checksums.account_matches_bik(account, bik) for bik in biks):
                result.score = EntityRecognizer.MAX_SCORE
                kept.append(result)
        return kept


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail pattern without its tldextract check, which would download the
    public-suffix list: a top-level label of letters is enough here."""

    def validate_result(self, pattern_text: str) -> bool:
        """The domain ends in a label of 2+ letters (or an IDN's xn--)."""
        tld = pattern_text.rsplit(".", 1)[-1]
        return (tld.isalpha() and len(tld) >= 2) or tld.startswith("xn--")


class RuPhoneRecognizer(PhoneRecognizer):
    """libphonenumber's matcher for Russia (+7, 8, and any +country number), minus numbers
    that a word before them calls something else (INN, account, card...)."""

    SCORE = 0.6

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Valid phone numbers not introduced as another identifier."""
        # PhoneRecognizer declares NlpArtifacts but never needs one.
        results: list[RecognizerResult] = super().analyze(
            text,
            entities,
            nlp_artifacts,  # type: ignore[arg-type]
        )
        return [r for r in results if not _NOT_PHONE.search(text[max(0, r.start - 24) : r.start])]


_CONTEXT = {
    "phone": ["телефон", "тел", "моб", "сотов", "звон", "номер", "phone", "tel", "mobile", "call"],
    "email": ["почт", "mail", "e-mail", "email"],
    "card": ["карт", "card", "visa", "mastercard", "мир"],
    "inn": ["инн", "inn", "taxpayer"],
    "snils": ["снилс", "snils", "insurance"],
    "ogrn": ["огрн", "ogrn", "огрнип", "ogrnip"],
    "passport": ["паспорт", "серия", "passport", "series"],
    "account": ["счет", "счёт", "р/с", "расчетн", "расчётн", "account", "бик", "bik", "bic"],
}


def build_recognizers(language: str) -> list[EntityRecognizer]:
    """Every pattern recognizer of this package for one language code."""
    digit_patterns: dict[str, list[Pattern]] = {
        "inn": [Pattern("INN", r"(?<![\d-])(?:\d{10}|\d{12})(?![\d-])", 0.5)],
        "snils": [
            Pattern("SNILS", r"(?<![\d-])\d{3}-\d{3}-\d{3}[ -]\d{2}(?![\d-])", 0.5),
            Pattern("SNILS digits", r"(?<![\d-])\d{11}(?![\d-])", 0.5),
        ],
        "ogrn": [Pattern("OGRN", r"(?<![\d-])(?:\d{13}|\d{15})(?![\d-])", 0.5)],
        "passport": [
            Pattern("passport", r"(?<![\d-])\d{2} ?\d{2} ?(?:№ ?|N ?)?\d{6}(?![\d-])", 0.3)
        ],
        "account": [
            Pattern(
                "account", r"(?<![\d-])\d{5}[ .]?\d{3}[ .]?\d[ .]?\d{4}[ .]?\d{7}(?![\d-])", 0.3
            )
        ],
    }
    common: dict[str, Any] = {"supported_language": language}
    return [
        InnRecognizer("RU_INN", patterns=digit_patterns["inn"], context=_CONTEXT["inn"], **common),
        SnilsRecognizer(
            "RU_SNILS", patterns=digit_patterns["snils"], context=_CONTEXT["snils"], **common
        ),
        OgrnRecognizer(
            "RU_OGRN", patterns=digit_patterns["ogrn"], context=_CONTEXT["ogrn"], **common
        ),
        PatternRecognizer(
            "RU_PASSPORT",
            patterns=digit_patterns["passport"],
            context=_CONTEXT["passport"],
            **common,
        ),
        BankAccountRecognizer(
            "RU_BANK_ACCOUNT",
            patterns=digit_patterns["account"],
            context=_CONTEXT["account"],
            **common,
        ),
        CreditCardRecognizer(patterns=CARD_PATTERNS, context=_CONTEXT["card"], **common),
        OfflineEmailRecognizer(context=_CONTEXT["email"], **common),
        RuPhoneRecognizer(context=_CONTEXT["phone"], supported_regions=("RU",), **common),
    ]
