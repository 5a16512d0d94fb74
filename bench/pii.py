"""Personal-data masking: recall per type on a labelled set (Russian and English, made from
templates, with valid and invalid check digits), false positives on ordinary knowledge-base
text (the Debian FAQ and handbook) and the added latency per question.

    python -m bench.pii [--regenerate] [--corpus DIR]

The set lives in bench/pii/labelled.jsonl (`--regenerate` writes it again from the templates,
seeded). An item is found when one masked value contains its value; an item with wrong check
digits must stay unmasked. Last line: {"items", "recall_by_type", "recall_min",
"false_positives_per_10k_tokens", "p95_ms", ...}.
"""

import argparse
import json
import random
import statistics
import sys
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning
from stdnum import luhn
from stdnum.ru import inn

from app.pii import Masker
from app.pii.checksums import account_matches_bik, ogrn_check_digit, ogrn_valid, snils_valid

LABELLED = Path(__file__).resolve().parent / "pii" / "labelled.jsonl"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "bench" / "debian-faq-en"
RU_CORPUS = Path(__file__).resolve().parent / "ru-manpages" / "corpus"
Item = dict[str, Any]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _wrong(rng: random.Random, number: str, valid: Callable[[str], bool]) -> str:
    """The number with its last digit changed so that the check fails."""
    while True:
        bad = number[:-1] + rng.choice("0123456789")
        if not valid(bad):
            return bad


def _inn(rng: random.Random) -> str:
    if rng.random() < 0.5:
        base = str(rng.randint(1, 9)) + _digits(rng, 8)
        return base + inn.calc_company_check_digit(base)
    base = str(rng.randint(1, 9)) + _digits(rng, 9)
    return base + inn.calc_personal_check_digits(base)


def _ogrn(rng: random.Random) -> str:
    base = rng.choice("15") + _digits(rng, 11) if rng.random() < 0.5 else "3" + _digits(rng, 13)
    return base + ogrn_check_digit(base)


def _snils(rng: random.Random) -> str:
    while True:
        body = _digits(rng, 9)
        total = sum(int(d) * (9 - i) for i, d in enumerate(body)) % 101
        number = body + f"{0 if total == 100 else total:02d}"
        if snils_valid(number):
            return f"{body[:3]}-{body[3:6]}-{body[6:]} {number[9:]}"


def _card(rng: random.Random) -> str:
    base = rng.choice(["4276", "5469", "2202", "4149", "5536"]) + _digits(rng, 11)
    number = base + luhn.calc_check_digit(base)
    return " ".join(number[i : i + 4] for i in range(0, 16, 4)) if rng.random() < 0.6 else number


def _account(rng: random.Random) -> tuple[str, str]:
    bik = "04" + _digits(rng, 4) + str(rng.randint(100, 999))
    head, tail = rng.choice(["40817810", "40702810"]), _digits(rng, 11)
    for key in "0123456789":
        account = head + key + tail
        if account_matches_bik(account, bik):
            return account, bik
    raise AssertionError("no key digit fits")


def _phone(rng: random.Random) -> str:
    code = rng.choice(["912", "903", "926", "985", "916", "495", "812"])
    a, b, c = _digits(rng, 3), _digits(rng, 2), _digits(rng, 2)
    a = str(rng.randint(2, 9)) + a[1:]
    return rng.choice(
        [
            f"+7 ({code}) {a}-{b}-{c}",
            f"8 {code} {a} {b} {c}",
            f"+7{code}{a}{b}{c}",
            f"8-{code}-{a}-{b}-{c}",
            f"+7 {code} {a}-{b}-{c}",
            f"8 ({code}) {a}-{b}-{c}",
        ]
    )


FIRST_RU = ["Иван", "Мария", "Алексей", "Ольга", "Дмитрий", "Анна", "Сергей", "Екатерина"]
LAST_RU = ["Петров", "Смирнова", "Кузнецов", "Волкова", "Соколов", "Морозова", "Попов"]
PATRONYMIC = {"m": ["Иванович", "Петрович", "Олегович"], "f": ["Сергеевна", "Алексеевна"]}
FEMALE = ("Мария", "Ольга", "Анна", "Екатерина")
LOGINS = ["ivan.petrov", "m.smirnova", "a_kuznetsov", "olga.v", "d.sokolov85", "anna-m"]
DOMAINS = ["example.ru", "corp.example.com", "mail.ru", "yandex.ru", "company.org"]

RU = {
    "PHONE": [
        "Мой телефон {v}, перезвоните",
        "Позвоните мне по номеру {v} насчёт отпуска",
        "Как поменять номер {v} в профиле?",
        "тел. {v}",
    ],
    "EMAIL": [
        "Моя почта {v}, пришлите доступ",
        "Почему на {v} не приходят письма?",
        "Напишите на {v}",
    ],
    "CARD": [
        "Оплатил картой {v}, где чек?",
        "Номер карты {v} для зарплаты",
        "Привязать карту {v} к аккаунту",
    ],
    "INN": [
        "Мой ИНН {v}, как получить вычет?",
        "ИНН {v} указан в справке",
        "Проверьте ИНН организации: {v}",
    ],
    "SNILS": ["СНИЛС {v} для отдела кадров", "Мой СНИЛС: {v}", "Куда вписать СНИЛС {v}?"],
    "PASSPORT": [
        "Паспорт {v}, выдан ОВД",
        "паспорт серия и номер {v} для пропуска",
        "Данные паспорта: {v}",
    ],
    "OGRN": ["ОГРН {v} контрагента", "Укажите ОГРН {v} в договоре", "ОГРНИП {v}"],
    "ACCOUNT": [
        "Реквизиты: р/с {v}, БИК {bik}",
        "Счёт {v} БИК {bik} для перевода",
        "Перечислите на {v} (БИК {bik})",
    ],
    "PERSON": [
        "Меня зовут {v}, как оформить отпуск?",
        "Коллега {v} не может войти в VPN",
        "Кто заменяет {v} на время командировки?",
        "Передайте {v}, что отчёт готов",
    ],
}
EN = {
    "PHONE": [
        "My phone is {v}, call me back",
        "Call {v} about the leave request",
        "How do I change the number {v} in my profile?",
    ],
    "EMAIL": ["My e-mail is {v}, please send access", "Why does {v} get no mail?", "Write to {v}"],
    "CARD": [
        "I paid with card {v}, where is the receipt?",
        "Card number {v} for salary",
        "Link card {v} to my account",
    ],
    "INN": [
        "My INN is {v}, how do I get a tax refund?",
        "Taxpayer number (INN) {v}",
        "Check the company INN: {v}",
    ],
    "SNILS": ["SNILS {v} for HR", "My SNILS: {v}", "Where do I enter SNILS {v}?"],
    "PASSPORT": [
        "Passport {v}, issued in Moscow",
        "passport number {v} for the pass",
        "My passport: {v}",
    ],
    "OGRN": ["OGRN {v} of the supplier", "Put OGRN {v} into the contract", "OGRNIP {v}"],
    "ACCOUNT": [
        "Bank details: account {v}, BIK {bik}",
        "Account {v}, BIC {bik}",
        "Transfer to {v} (BIK {bik})",
    ],
}
# No context word at all: check digits (or the value's own shape) must do.
for _templates, _bare in ((RU, "Вот: {v}"), (EN, "See {v} above")):
    for _kind, _forms in _templates.items():
        if _kind not in ("PASSPORT", "ACCOUNT"):
            _forms.append(_bare)
CHECKED = {"CARD": luhn.is_valid, "INN": inn.is_valid, "OGRN": ogrn_valid, "SNILS": snils_valid}


def _value(kind: str, rng: random.Random) -> tuple[str, dict[str, str]]:
    extra: dict[str, str] = {}
    if kind == "PHONE":
        value = _phone(rng)
    elif kind == "EMAIL":
        value = f"{rng.choice(LOGINS)}@{rng.choice(DOMAINS)}"
    elif kind == "CARD":
        value = _card(rng)
    elif kind == "INN":
        value = _inn(rng)
    elif kind == "SNILS":
        value = _snils(rng)
    elif kind == "PASSPORT":
        value = rng.choice(["{a} {b} {c}", "{a}{b} {c}", "{a}{b} № {c}"]).format(
            a=_digits(rng, 2), b=_digits(rng, 2), c=_digits(rng, 6)
        )
    elif kind == "OGRN":
        value = _ogrn(rng)
    elif kind == "ACCOUNT":
        value, extra["bik"] = _account(rng)
    else:
        first, last = rng.choice(FIRST_RU), rng.choice(LAST_RU)
        sex = "f" if first in FEMALE else "m"
        if sex == "f" and not last.endswith("а"):
            last += "а"
        elif sex == "m" and last.endswith("а"):
            last = last[:-1]
        patronymic = rng.choice(PATRONYMIC[sex])
        value = rng.choice([f"{first} {last}", f"{last} {first} {patronymic}"])
    return value, extra


def _invalid(kind: str, value: str, extra: dict[str, str], rng: random.Random) -> str:
    """The value with check digits that do not fit."""
    if kind == "ACCOUNT":
        key = (int(value[8]) + rng.randint(1, 9)) % 10
        return value[:8] + str(key) + value[9:]
    digits_only = "".join(c for c in value if c.isdigit())
    bad = _wrong(rng, digits_only, CHECKED[kind])
    out, i = [], 0
    for ch in value:  # keep the separators of the original
        out.append(bad[i] if ch.isdigit() else ch)
        i += ch.isdigit()
    return "".join(out)


def generate(seed: int = 14, per_language: int = 16, invalid: int = 12) -> list[Item]:
    """The labelled set: valid items per type and language, invalid ones per checked type."""
    rng = random.Random(seed)
    items: list[Item] = []
    for language, templates in (("ru", RU), ("en", EN)):
        for kind, forms in templates.items():
            count = per_language * (2 if kind == "PERSON" else 1)
            for n in range(count):
                value, extra = _value(kind, rng)
                text = forms[n % len(forms)].format(v=value, **extra)
                items.append(
                    {"lang": language, "type": kind, "value": value, "text": text, "valid": True}
                )
            if kind in CHECKED or kind == "ACCOUNT":
                for n in range(invalid // 2):
                    value, extra = _value(kind, rng)
                    bad = _invalid(kind, value, extra, rng)
                    text = forms[n % len(forms)].format(v=bad, **extra)
                    items.append(
                        {"lang": language, "type": kind, "value": bad, "text": text, "valid": False}
                    )
    return items


def corpus_texts(root: Path) -> Iterator[tuple[str, str]]:
    """(file, plain text) of every Markdown and HTML file of the corpus."""
    for path in sorted((root / "corpus").rglob("*")):
        if path.suffix == ".md":
            yield path.name, path.read_text(encoding="utf-8")
        elif path.suffix in (".html", ".htm"):
            html = path.read_text(encoding="utf-8", errors="replace")
            with warnings.catch_warnings():  # XHTML files parsed as HTML: the text is the same
                warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
                yield path.name, BeautifulSoup(html, "lxml").get_text("\n")


def russian_texts(root: Path) -> Iterator[tuple[str, str]]:
    """(file, text) of the Russian man pages shipped with the benchmarks."""
    for path in sorted(root.glob("*.txt")):
        yield path.name, path.read_text(encoding="utf-8", errors="replace")


def corpus_hits(
    masker: Masker, texts: Iterator[tuple[str, str]]
) -> tuple[int, dict[str, list[str]]]:
    """Tokens read, and the values masked per label (each printed to stderr for review)."""
    tokens, hits = 0, defaultdict[str, list[str]](list)
    for name, text in texts:
        tokens += len(text.split())
        for placeholder, value in masker.mask(text)[1].items():
            hits[placeholder[1:].rsplit("_", 1)[0]].append(value)
            print("corpus hit:", name, placeholder, repr(value), file=sys.stderr)
    return tokens, hits


def _found(masker: Masker, item: Item) -> tuple[bool, bool]:
    """(masked, masked under its own label) for one item."""
    _, mapping = masker.mask(item["text"])
    hits = [p for p, v in mapping.items() if item["value"] in v]
    return bool(hits), any(p.startswith(f"[{item['type']}_") for p in hits)


def run(labelled: list[Item], corpus: Path) -> dict[str, Any]:
    """Every figure of the benchmark."""
    t0 = time.perf_counter()
    masker = Masker().load()
    load_s = time.perf_counter() - t0
    found, labelled_right, total = Counter[str](), Counter[str](), Counter[str]()
    invalid_flagged: list[Item] = []
    for item in labelled:
        hit, right = _found(masker, item)
        if item["valid"]:
            total[item["type"]] += 1
            found[item["type"]] += hit
            labelled_right[item["type"]] += right
            if not hit:
                print("missed:", item["type"], item["text"], file=sys.stderr)
        elif hit:
            invalid_flagged.append(item)
            print("invalid flagged:", item["type"], item["text"], file=sys.stderr)
    recall = {k: round(found[k] / total[k], 3) for k in sorted(total)}

    tokens, false_positives = corpus_hits(masker, corpus_texts(corpus))
    # The documents name real e-mail addresses (lists, authors, examples): masking those is
    # right, they are counted apart. Anything else found in them is a false positive.
    emails = len(false_positives.pop("EMAIL", []))
    fp_count = sum(len(v) for v in false_positives.values())
    # Russian reference text (man pages): reported by type; its names are mostly real ones
    # (authors, translators), so they are not counted as errors here (see the README).
    ru_tokens, ru_hits = corpus_hits(masker, russian_texts(RU_CORPUS))

    questions = [item["text"] for item in labelled]
    queries = corpus / "queries.jsonl"
    if queries.exists():
        questions += [json.loads(line)["query"] for line in queries.read_text().splitlines()]
    latencies = []
    fresh = Masker(masker._analyzer)  # the same models, an empty cache: every text is new
    for question in questions:
        start = time.perf_counter()
        fresh.mask(question)
        latencies.append((time.perf_counter() - start) * 1000)
    # A prompt's worth of retrieved Russian text (6,000 characters, never seen before): what
    # traces cost the exporter thread per generation, and traces+llm the request at worst.
    windows = [text[:6000] for _, text in russian_texts(RU_CORPUS) if len(text) >= 6000]
    context_ms = []
    for window in windows[::4]:
        fresh = Masker(masker._analyzer)
        start = time.perf_counter()
        fresh.mask(window)
        context_ms.append((time.perf_counter() - start) * 1000)
    return {
        "items": len(labelled),
        "valid_items": sum(total.values()),
        "invalid_items": len(labelled) - sum(total.values()),
        "invalid_flagged": len(invalid_flagged),
        "recall_by_type": recall,
        "recall_min": min(recall.values()),
        "label_accuracy": round(sum(labelled_right.values()) / sum(total.values()), 3),
        "corpus_tokens": tokens,
        "corpus_emails": emails,
        "false_positives": {k: len(v) for k, v in sorted(false_positives.items())},
        "false_positives_per_10k_tokens": round(fp_count * 10_000 / max(tokens, 1), 3),
        "ru_corpus_tokens": ru_tokens,
        "ru_corpus_hits": {k: len(v) for k, v in sorted(ru_hits.items())},
        "questions": len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(statistics.quantiles(latencies, n=20)[-1], 2),
        "context_6000_chars_p50_ms": round(statistics.median(context_ms), 1),
        "context_6000_chars_p95_ms": round(statistics.quantiles(context_ms, n=20)[-1], 1),
        "load_s": round(load_s, 2),
    }


def main() -> None:
    """Run the benchmark; the last line printed is its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regenerate", action="store_true", help="rewrite the labelled set")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()
    if args.regenerate or not LABELLED.exists():
        LABELLED.parent.mkdir(parents=True, exist_ok=True)
        with LABELLED.open("w", encoding="utf-8") as out:
            for item in generate():
                out.write(json.dumps(item, ensure_ascii=False) + "\n")
    labelled = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]
    print(json.dumps(run(labelled, args.corpus), ensure_ascii=False))


if __name__ == "__main__":
    main()
