# ruff: noqa: RUF001 - Russian word patterns: the Cyrillic letters are meant.
"""Guards of the semantic tier: the known false hits of semantic caches.

Embeddings put "How do I enable the VPN?" and "How do I disable the VPN?" next to each other
(cosine 0.95 with multilingual-e5), and so "25 days" and "30 days", "March" and "May", "Outlook
on Android" and "Outlook on iPhone". Two questions close in meaning are taken for the same
question only when they also agree on what such a change would alter: the numbers and dates
they mention, the direction of the action (a table of opposites, and negation), and the names
in them. Every rule errs towards a miss: a miss costs one LLM run, a false hit a wrong answer.
"""

import re
import unicodedata
from dataclasses import dataclass

# Words of one script; digits with their decimal part; file-like and versioned tokens.
_TOKEN = re.compile(r"[^\W_]+(?:[.\-/+#][^\W_]+)*[+#]*")
_CYRILLIC = re.compile("[\u0400-\u04ff]")
_LATIN = re.compile("[A-Za-z]")
_DIGIT = re.compile(r"\d")

_NUMBER_WORDS = {
    **dict.fromkeys(("one", "once", "first", "single"), "1"),
    **dict.fromkeys(("two", "twice", "second", "double", "couple"), "2"),
    **dict.fromkeys(("three", "third", "triple"), "3"),
    **dict.fromkeys(("four", "fourth", "quarter"), "4"),
    **dict.fromkeys(("five", "fifth"), "5"),
    **dict.fromkeys(("six", "sixth"), "6"),
    **dict.fromkeys(("seven", "seventh"), "7"),
    **dict.fromkeys(("eight", "eighth"), "8"),
    **dict.fromkeys(("nine", "ninth"), "9"),
    **dict.fromkeys(("ten", "tenth"), "10"),
    **dict.fromkeys(("eleven", "twelve", "twenty", "thirty", "hundred", "thousand"), "n"),
}
_RU_NUMBER = (
    (r"(один|одн[аоуиы]\w*|перв\w*|единожды)", "1"),
    (r"(два|две|двух\w*|двум\w*|втор(ой|ая|ое|ого|ую|ом|ые|ых)|дважды|пар[ауы])", "2"),
    (r"(три|трех\w*|трёх\w*|трем|третье?\w*|трижды)", "3"),
    (r"(четыр\w*|четверт\w*)", "4"),
    (r"(пят(ь|и|ый|ая|ое|ого|ью)|пятер\w*)", "5"),
    (r"(шест(ь|и|ой|ая|ое|ого|ью))", "6"),
    (r"(сем(ь|и|ью)|седьм\w*)", "7"),
    (r"(восем\w*|восьм\w*)", "8"),
    (r"(девят\w*)", "9"),
    (r"(десят(ь|и|ый|ая|ое|ью))", "10"),
)

# Opposites: (class, side) by word pattern; a question's set of (class, side) must match.
# Patterns match whole tokens (lower case), Russian ones by stem.
_OPPOSITES: tuple[tuple[str, str, str], ...] = (
    ("toggle", "+", r"enabl\w*|activat\w*|включ\w*|актив\w*"),
    ("toggle", "-", r"disabl\w*|deactivat\w*|выключ\w*|отключ\w*|деактив\w*"),
    (
        "add",
        "+",
        r"add\w*|install\w*|creat\w*|subscrib\w*|join\w*|connect\w*|mount\w*|attach\w*"
        r"|grant\w*|insert\w*|добав\w*|установ\w*|устанав\w*|созда\w*|подключ\w*|подпис\w*|присоедин\w*",
    ),
    (
        "add",
        "-",
        r"remov\w*|uninstall\w*|delet\w*|purg\w*|unsubscrib\w*|leav\w*|disconnect\w*"
        r"|unmount\w*|detach\w*|revok\w*|eras\w*|drop\w*|удал\w*|убра\w*|убер\w*|снес\w*|снос\w*"
        r"|отпис\w*|стер\w*|стира\w*|отозва\w*",
    ),
    (
        "open",
        "+",
        r"open\w*|unlock\w*|start\w*|begin\w*|launch\w*|resum\w*|откр\w*|запуск\w*"
        r"|запуст\w*|начать|начин\w*|разблок\w*|возобнов\w*",
    ),
    (
        "open",
        "-",
        r"clos\w*|lock\w*|stop\w*|end|ends|ending|finish\w*|paus\w*|cancel\w*|закр\w*"
        r"|останов\w*|заверш\w*|заблок\w*|блокир\w*|отмен\w*|прекрат\w*|прекращ\w*|приостанов\w*",
    ),
    (
        "more",
        "+",
        r"increas\w*|rais\w*|more|extend\w*|upgrad\w*|maxim\w*|max|most|longer|higher"
        r"|bigger|larger|увелич\w*|повыс\w*|повыш\w*|больше|макс\w*|продл\w*|дольше|выше",
    ),
    (
        "more",
        "-",
        r"decreas\w*|reduc\w*|lower\w*|less|fewer|shorten\w*|downgrad\w*|minim\w*|min"
        r"|least|shorter|smaller|уменьш\w*|сниз\w*|сниж\w*|сократ\w*|сокращ\w*|меньше|мин\w*|ниже",
    ),
    (
        "time",
        "-",
        r"before|earlier|prior|previous\w*|last|old|older|past|раньше|перед|прошл\w*"
        r"|предыдущ\w*|стар\w*|вчера",
    ),
    (
        "time",
        "+",
        r"after|later|next|new|newer|upcoming|future|после|позже|следующ\w*|нов\w*"
        r"|будущ\w*|завтра",
    ),
    ("allow", "+", r"allow\w*|permit\w*|approv\w*|accept\w*|разреш\w*|можно|одобр\w*|прин[ия]\w*"),
    (
        "allow",
        "-",
        r"den[yi]\w*|forbid\w*|prohibit\w*|reject\w*|refus\w*|ban|banned|запрет\w*"
        r"|запрещ\w*|нельзя|отказ\w*|отклон\w*",
    ),
    (
        "transfer",
        "+",
        r"upload\w*|send\w*|export\w*|outgoing|outbound|выгруз\w*|отправ\w*"
        r"|экспорт\w*|исходящ\w*",
    ),
    (
        "transfer",
        "-",
        r"download\w*|receiv\w*|import\w*|incoming|inbound|скача\w*|скачив\w*"
        r"|импорт\w*|входящ\w*",
    ),
    ("session", "+", r"login|log-in|signin|sign-in|войти|вход\w*|залогин\w*|авториз\w*"),
    ("session", "-", r"logout|log-out|signout|sign-out|выйти|выход\w*|разлогин\w*"),
    ("crypt", "+", r"encrypt\w*|зашифр\w*|шифрова\w*"),
    ("crypt", "-", r"decrypt\w*|расшифр\w*"),
    ("show", "+", r"show\w*|display\w*|unhid\w*|показ\w*|отобра\w*"),
    ("show", "-", r"hid(e|es|ing|den)|скры\w*|спрят\w*"),
    ("scope", "+", r"public|external\w*|publicly|публичн\w*|внешн\w*|общедоступ\w*"),
    ("scope", "-", r"private\w*|internal\w*|privately|приватн\w*|внутрен\w*|закрыт\w*"),
    ("pay", "+", r"paid|pay|payed|оплачива\w*|оплачен\w*|платн\w*"),
    ("pay", "-", r"unpaid|free|неоплачива\w*|бесплатн\w*"),
    ("who", "+", r"employee\w*|staff|сотрудник\w*|штатн\w*"),
    (
        "who",
        "-",
        r"contractor\w*|freelanc\w*|intern|interns|подрядчик\w*|внештатн\w*|стажер\w*"
        r"|стажёр\w*",
    ),
    (
        "neg",
        "!",
        r"not|no|never|none|nothing|without|cannot|can't|won't|doesn't|don't|isn't"
        r"|aren't|didn't|wasn't|shouldn't|couldn't|не|нет|ни|никогда|без|ничего|невозможно",
    ),
    # Units of time: "per day" and "per month" are different questions.
    ("unit", "minute", r"minut\w*|минут\w*"),
    ("unit", "hour", r"hour\w*|hourly|час|часа|часов|часы|ежечасн\w*"),
    ("unit", "day", r"day|days|daily|день|дня|дней|дни|сутк\w*|ежедневн\w*"),
    ("unit", "week", r"week|weeks|weekly|недел\w*|еженедельн\w*"),
    ("unit", "month", r"month|months|monthly|месяц\w*|ежемесячн\w*"),
    ("unit", "year", r"year|years|annual\w*|yearly|год|года|году|годы|лет|годов|ежегодн\w*"),
)
_MONTHS = (
    r"jan|january|январ\w*",
    r"feb|february|феврал\w*",
    r"mar|march|март\w*",
    r"apr|april|апрел\w*",
    r"may|ма[йяею]",
    r"jun|june|июн\w*",
    r"jul|july|июл\w*",
    r"aug|august|август\w*",
    r"sep|sept|september|сентябр\w*",
    r"oct|october|октябр\w*",
    r"nov|november|ноябр\w*",
    r"dec|december|декабр\w*",
)
_WEEKDAYS = (
    r"monday|понедельник\w*",
    r"tuesday|вторник\w*",
    r"wednesday|сред[аыуе]",
    r"thursday|четверг\w*",
    r"friday|пятниц\w*",
    r"saturday|суббот\w*",
    r"sunday|воскресень\w*",
    r"today|tonight|сегодня",
    r"weekend\w*|выходн\w*",
    r"holiday\w*|праздни\w*",
)


def _table() -> list[tuple[re.Pattern[str], str]]:
    rules = [(re.compile(f"(?:{p})"), f"{c}{s}") for c, s, p in _OPPOSITES]
    rules += [(re.compile(f"(?:{p})"), f"month{i}") for i, p in enumerate(_MONTHS, 1)]
    rules += [(re.compile(f"(?:{p})"), f"day{i}") for i, p in enumerate(_WEEKDAYS, 1)]
    return rules


_RULES = _table()
_RU_NUMBERS = [(re.compile(p), n) for p, n in _RU_NUMBER]
# Capitalised first words that are not names (questions start with these).
_STARTER_WORDS = (
    "how what why when where who whom whose which is are am was were do does did can could "
    "should would will shall may might must i my we our you your it in on at for to from with "
    "please hi hello hey there the a an if after before since tell show explain any anyone has "
    "have had where's what's how's who's i'm i've let help need want ok okay and or but so also"
)
_STARTERS = frozenset(_STARTER_WORDS.split())


@dataclass(frozen=True, slots=True)
class Signature:
    """What a question must share with another to be the same question."""

    numbers: frozenset[str]
    markers: frozenset[str]
    names: frozenset[str]
    # Every word, lower case: a name of one question must occur in the other, in any case.
    words: frozenset[str]


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).replace("ё", "е").replace("Ё", "Е")


def signature(text: str) -> Signature:
    """The numbers, dates, direction words and names of a question."""
    tokens = _TOKEN.findall(_fold(text).replace("\u2019", "'"))
    cyrillic = sum(1 for t in tokens if _CYRILLIC.search(t))
    russian = cyrillic * 2 >= len(tokens) if tokens else False
    numbers: set[str] = set()
    markers: set[str] = set()
    names: set[str] = set()
    for index, token in enumerate(tokens):
        low = token.lower()
        if _DIGIT.search(token):
            value = re.sub(r"[,]", ".", low).lstrip("0") or "0"
            (numbers if re.fullmatch(r"[\d.]+", value) else names).add(value)
            continue
        word = _NUMBER_WORDS.get(low) or next((n for p, n in _RU_NUMBERS if p.fullmatch(low)), None)
        if word is not None:
            numbers.add(word)
            continue
        for pattern, marker in _RULES:
            if pattern.fullmatch(low):
                markers.add(marker)
        if _is_name(token, index, russian):
            names.add(low)
    words = frozenset(t.lower() for t in tokens)
    return Signature(frozenset(numbers), frozenset(markers), frozenset(names), words)


def _is_name(token: str, index: int, russian: bool) -> bool:
    """A product, person, place or file: capitalised past the first word, an acronym, a
    Latin word in a Russian question, or a path-like token."""
    if any(c in token for c in "./+#") or (len(token) > 1 and token.isupper()):
        return True
    if russian and _LATIN.search(token):
        return True
    if not token[:1].isupper():
        return False
    # The first word is capitalised anyway ("Configure ...", "Debian: ..."): not a name by its
    # case alone; the other question's name check still finds it there (mismatch).
    return index > 0 and token.lower() not in _STARTERS


def mismatch(a: Signature, b: Signature) -> str | None:
    """Why two questions are not the same question (None: nothing tells them apart)."""
    if a.numbers != b.numbers:
        return "numbers"
    units_a = {m for m in a.markers if m.startswith("unit")}
    units_b = {m for m in b.markers if m.startswith("unit")}
    if a.markers - units_a != b.markers - units_b:
        return "opposites"
    # "days" and "days a year" may be one question; "a month" and "a year" are two.
    if units_a - units_b and units_b - units_a:
        return "units"
    if not (a.names <= b.words and b.names <= a.words):
        return "names"
    return None
