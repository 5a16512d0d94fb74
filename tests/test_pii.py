"""Personal-data masking: the recognizers (valid and invalid check digits, Russian and
English), mask/unmask, the log filter, the LLM wrapper of PII_MASK=traces+llm, the setting."""

import io
import logging
from collections.abc import Iterator, Sequence

import pytest
from stdnum import luhn

from app.llm.base import Completion, GenerationParams, Message, OnDelta, Usage
from app.pii import Masker
from app.pii.checksums import account_matches_bik, inn_valid, ogrn_valid, snils_valid
from app.pii.llm import MaskingLLM
from app.pii.logs import install
from app.settings import PiiSettings
from kb.errors import ConfigurationError
from kb.settings import load_settings

INN10, INN12 = "7707083893", "500100732259"
OGRN, OGRNIP = "1027700132195", "304500116000157"
SNILS = "112-233-445 95"
CARD = "4276 3800 1234 5679"  # Luhn-valid
MIR = "2200 1234 5678 9019"
BIK = "044525225"


def _with_key(head: str, tail: str, bik: str) -> str:
    """The 20-digit account head + key + tail whose key fits the BIK."""
    return next(
        head + key + tail for key in "0123456789" if account_matches_bik(head + key + tail, bik)
    )


ACCOUNT = _with_key("40702810", "38000000001", BIK)
BAD_ACCOUNT = ACCOUNT[:8] + str((int(ACCOUNT[8]) + 1) % 10) + ACCOUNT[9:]


@pytest.fixture(scope="module")
def masker() -> Masker:
    """One loaded masker for the module (natasha takes a moment to load)."""
    return Masker().load()


def labels(masker: Masker, text: str) -> dict[str, str]:
    """Masked value -> its label (PHONE, INN...), for the assertions."""
    _, mapping = masker.mask(text)
    return {value: placeholder[1:].rsplit("_", 1)[0] for placeholder, value in mapping.items()}


def test_check_digits() -> None:
    assert luhn.is_valid(CARD.replace(" ", ""))
    assert luhn.is_valid(MIR.replace(" ", ""))
    assert all(inn_valid(n) for n in (INN10, INN12))
    assert not any(inn_valid(n) for n in ("7707083894", "500100732258"))
    assert all(ogrn_valid(n) for n in (OGRN, OGRNIP))
    # An OGRNIP whose remainder mod 13 is 10-12 ends in its last digit (stdnum rejects it).
    body = next(b for b in (f"3045001160{n:04d}" for n in range(100)) if int(b) % 13 >= 10)
    assert ogrn_valid(body + str(int(body) % 13 % 10))
    assert snils_valid(SNILS)
    assert not snils_valid("112-233-445 96")
    assert account_matches_bik(ACCOUNT, BIK)
    assert not account_matches_bik(BAD_ACCOUNT, BIK)


@pytest.mark.parametrize(
    ("text", "value", "label"),
    [
        ("Мой телефон +7 (912) 345-67-89, перезвоните", "+7 (912) 345-67-89", "PHONE"),
        ("звоните 8 912 345 67 89 после обеда", "8 912 345 67 89", "PHONE"),
        ("Call me on +7 495 123-45-67 tomorrow", "+7 495 123-45-67", "PHONE"),
        ("Пишите на ivan.petrov@example.ru", "ivan.petrov@example.ru", "EMAIL"),
        ("My e-mail is j.smith@corp.example.com", "j.smith@corp.example.com", "EMAIL"),
        (f"Оплатил картой {CARD}", CARD, "CARD"),
        (f"Card {MIR.replace(' ', '')} for salary", MIR.replace(" ", ""), "CARD"),
        (f"Мой ИНН {INN12}, как получить вычет?", INN12, "INN"),
        (f"Check the company INN: {INN10}", INN10, "INN"),
        (f"СНИЛС {SNILS} для отдела кадров", SNILS, "SNILS"),
        (f"My SNILS is {SNILS.replace('-', '').replace(' ', '')}", "11223344595", "SNILS"),
        (f"ОГРН {OGRN} контрагента", OGRN, "OGRN"),
        (f"OGRNIP {OGRNIP}", OGRNIP, "OGRN"),
        ("Паспорт 45 06 123456, выдан ОВД", "45 06 123456", "PASSPORT"),
        ("passport number 4506 123456", "4506 123456", "PASSPORT"),
        (f"р/с {ACCOUNT}, БИК {BIK}", ACCOUNT, "ACCOUNT"),
        (f"Account {ACCOUNT}, BIC {BIK}", ACCOUNT, "ACCOUNT"),
        (
            "Меня зовут Иван Петрович Сидоров, как оформить отпуск?",
            "Иван Петрович Сидоров",
            "PERSON",
        ),
    ],
)
def test_found_with_its_label(masker: Masker, text: str, value: str, label: str) -> None:
    masked, mapping = masker.mask(text)
    assert labels(masker, text).get(value) == label, mapping
    assert value not in masked


@pytest.mark.parametrize(
    "text",
    [
        "Мой ИНН 7707083894, как получить вычет?",
        "Check the company INN: 500100732258",
        "СНИЛС 112-233-445 96 для отдела кадров",
        "ОГРН 1027700132196 контрагента",
        "OGRNIP 304500116000158",
        "Оплатил картой 4276 3800 1234 5678",
        f"р/с {BAD_ACCOUNT}, БИК {BIK}",
        "заказ 4506 123456 отправлен",  # a passport-shaped number without the word
    ],
)
def test_wrong_check_digits_or_no_context_are_left(masker: Masker, text: str) -> None:
    assert masker.mask(text) == (text, {})


def test_inn_is_not_taken_for_a_phone(masker: Masker) -> None:
    found = labels(masker, f"ИНН {INN10}, телефон 8 912 345-67-89")
    assert found == {INN10: "INN", "8 912 345-67-89": "PHONE"}


def test_knowledge_base_text_is_left(masker: Masker) -> None:
    text = (
        "Debian 12.5 was released on 2024-02-10. Install linux-image-6.1.0-18-amd64 "
        "(6.1.76-1), about 1.2 GB; listen on port 8080 of 192.168.0.1, PID 123456789.\n"
        "Версия 2.36-9+deb12u4 пакета libc6, размер 13 456 789 байт, сборка 20240210."
    )
    assert masker.mask(text) == (text, {})


def test_email_needs_no_network(masker: Masker, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("tldextract was asked")

    monkeypatch.setattr("tldextract.extract", no_download)
    assert labels(masker, "write to anna@example.org") == {"anna@example.org": "EMAIL"}


def test_mask_unmask_round_trip(masker: Masker) -> None:
    text = (
        "Иван Петров: +7 912 345-67-89, ivan@example.ru; повторю +7 912 345-67-89, "
        f"а ИНН {INN12}.\nВторой телефон 8 (903) 111-22-33."
    )
    masked, mapping = masker.mask(text)
    assert masked == (
        "[PERSON_1]: [PHONE_1], [EMAIL_1]; повторю [PHONE_1], а ИНН [INN_1].\n"
        "Второй телефон [PHONE_2]."
    )
    assert Masker.unmask(masked, mapping) == text
    # A later message of the same call reuses the placeholders and goes on numbering.
    again, extended = masker.mask("и +7 912 345-67-89, и 8 (916) 000-11-22", mapping)
    assert again == "и [PHONE_1], и [PHONE_3]"
    assert extended["[PHONE_3]"] == "8 (916) 000-11-22"
    assert Masker.unmask("[PHONE_9] [EMAIL_1]", mapping) == "[PHONE_9] ivan@example.ru"


def test_redact_data_walks_json(masker: Masker) -> None:
    data = {"message": "мой номер 8 912 345-67-89", "n": 3, "turns": ["a", "ivan@example.ru"]}
    assert masker.redact_data(data) == {
        "message": "мой номер [PHONE_1]",
        "n": 3,
        "turns": ["a", "[EMAIL_1]"],
    }


@pytest.fixture
def log_stream() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger with one stream handler of its own."""
    stream = io.StringIO()
    logger = logging.getLogger("test_pii.logs")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_log_records_are_masked(
    masker: Masker, log_stream: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = log_stream
    installed = install(masker, logger)
    assert install(masker, logger) is installed  # once per handler
    logger.warning("question from %s: %s", "u-1", "мой телефон +7 912 345-67-89")
    try:
        raise ValueError("card 4276 3800 1234 5679 refused")
    except ValueError:
        logger.exception("failed")
    out = stream.getvalue()
    assert "question from u-1: мой телефон [PHONE_1]" in out
    assert "card [CARD_1] refused" in out
    assert "345-67-89" not in out
    assert "5679" not in out


class ChunkyLLM:
    """Replies with a fixed text streamed in 3-character pieces; records what it was sent."""

    model = "chunky"
    parallel = True

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.sent: list[Message] = []

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        regex: str | None = None,
        params: GenerationParams = GenerationParams(),
        on_delta: OnDelta | None = None,
    ) -> Completion:
        self.sent = list(messages)
        if on_delta is not None:
            for i in range(0, len(self.reply), 3):
                await on_delta(self.reply[i : i + 3])
        return Completion(self.reply, self.model, Usage(1, 1), 0.0, "stop")

    async def aclose(self) -> None:
        """Nothing to close."""


async def test_llm_sees_placeholders_user_sees_values(masker: Masker) -> None:
    inner = ChunkyLLM("Позвоните на [PHONE_1] или напишите [EMAIL_1].")
    llm = MaskingLLM(inner, masker)
    pieces: list[str] = []

    async def on_delta(piece: str) -> None:
        pieces.append(piece)

    completion = await llm.complete(
        [
            Message("system", "Отвечай по документам."),
            Message("user", "Мой телефон +7 912 345-67-89, почта ivan@example.ru"),
        ],
        on_delta=on_delta,
    )
    sent = " ".join(m.content for m in inner.sent)
    assert "345-67-89" not in sent
    assert "ivan@example.ru" not in sent
    assert "[PHONE_1]" in sent
    assert "[EMAIL_1]" in sent
    expected = "Позвоните на +7 912 345-67-89 или напишите ivan@example.ru."
    assert completion.text == expected
    assert "".join(pieces) == expected
    assert not any("[PHO" in piece for piece in pieces)


def test_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PII_MASK", raising=False)
    default = load_settings(PiiSettings)
    assert (default.mask, default.traces, default.llm) == ("traces", True, False)
    monkeypatch.setenv("PII_MASK", "traces+llm")
    assert load_settings(PiiSettings).llm
    monkeypatch.setenv("PII_MASK", "off")
    assert not load_settings(PiiSettings).traces
    monkeypatch.setenv("PII_MASK", "everything")
    with pytest.raises(ConfigurationError, match="PII_MASK"):
        load_settings(PiiSettings)
