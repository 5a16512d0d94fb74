"""The bot's texts: every key in every language, with the same placeholders; no silent
fallback to English."""

from collections.abc import Mapping
from string import Formatter

import pytest
from aiogram.types import User

from app.bot import texts
from app.bot.texts import TABLES, language_of, t, text_in


def placeholders(text: str) -> set[str]:
    """The names a format string fills in."""
    return {name for _, name, _, _ in Formatter().parse(text) if name is not None}


def problems(tables: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Keys missing in a language, and placeholders that differ from English."""
    found = []
    keys = set().union(*(table.keys() for table in tables.values()))
    for key in sorted(keys):
        missing = [language for language, table in tables.items() if key not in table]
        if missing:
            found.append(f"{key}: missing in {', '.join(missing)}")
            continue
        names = {language: placeholders(table[key]) for language, table in tables.items()}
        if len({frozenset(n) for n in names.values()}) > 1:
            found.append(f"{key}: placeholders differ: {names}")
    return found


def test_every_key_has_every_language_with_the_same_placeholders() -> None:
    assert set(TABLES) == {"en", "ru"}
    assert problems(TABLES) == []


def test_the_check_catches_a_missing_language_and_a_placeholder_that_differs() -> None:
    broken = {
        "en": {"a": "A", "b": "{count} files", "c": "C"},
        "ru": {"a": "А", "b": "{n} файлов"},  # noqa: RUF001 - Cyrillic on purpose
    }
    assert problems(broken) == [
        "b: placeholders differ: {'en': {'count'}, 'ru': {'n'}}",
        "c: missing in ru",
    ]


def user(language_code: str | None) -> User:
    """A Telegram user with a language."""
    return User(id=1, is_bot=False, first_name="U", language_code=language_code)


def test_the_language_follows_telegram() -> None:
    assert language_of(user("ru")) == "ru"
    assert language_of(user("ru-RU")) == "ru"
    assert language_of(user("en")) == "en"
    assert language_of(user("de")) == "en"
    assert language_of(user(None)) == "en"
    assert language_of(None) == "en"
    assert t("cancelled", user("ru")) == text_in("ru", "cancelled")
    assert t("chosen", user("en"), title="HR") == "Now searching: HR. /collection to switch."


def test_a_missing_key_raises_instead_of_falling_back(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyError):
        t("no-such-key", user("en"))
    monkeypatch.setitem(TABLES, "ru", {k: v for k, v in texts.TABLES["ru"].items() if k != "yes"})
    with pytest.raises(KeyError):
        t("yes", user("ru"))
    assert t("yes", user("en")) == "Delete"
