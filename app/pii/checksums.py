"""Check digits of Russian identifiers: INN and cards (Luhn) from python-stdnum; OGRN, SNILS
and the bank-account key (which needs the bank's BIK) from their published rules."""

from stdnum import luhn
from stdnum.ru import inn

__all__ = [
    "account_matches_bik",
    "digits",
    "inn_valid",
    "luhn_valid",
    "ogrn_check_digit",
    "ogrn_valid",
    "snils_valid",
]

# The weights of the account key: 7, 1, 3 repeated over BIK's last 3 digits + 20 of the account.
_ACCOUNT_WEIGHTS = ((7, 1, 3) * 8)[:23]


def digits(text: str) -> str:
    """Only the digits of a match (separators dropped)."""
    return "".join(ch for ch in text if ch.isdigit())


def inn_valid(number: str) -> bool:
    """A 10-digit (organisation) or 12-digit (person) INN with correct check digits."""
    return bool(inn.is_valid(digits(number)))


def ogrn_check_digit(body: str) -> str:
    """The check digit after 12 digits (OGRN: mod 11) or 14 (OGRNIP: mod 13), its last digit.
    (python-stdnum 2.2 leaves out the last step for OGRNIP and rejects remainders 10-12.)"""
    return str(int(body) % (11 if len(body) == 12 else 13) % 10)


def ogrn_valid(number: str) -> bool:
    """A 13-digit OGRN (first digit 1, 5) or 15-digit OGRNIP (3) with its check digit."""
    value = digits(number)
    if not ((len(value) == 13 and value[0] in "15") or (len(value) == 15 and value[0] == "3")):
        return False
    return ogrn_check_digit(value[:-1]) == value[-1]


def luhn_valid(number: str) -> bool:
    """A card number passing Luhn."""
    value = digits(number)
    return 12 <= len(value) <= 19 and bool(luhn.is_valid(value))


def snils_valid(number: str) -> bool:
    """SNILS: 9 digits and a 2-digit control sum (sum of digit * (9 - position), mod 101)."""
    value = digits(number)
    if len(value) != 11:
        return False
    total = sum(int(d) * (9 - i) for i, d in enumerate(value[:9]))
    control = total % 101
    if control == 100:
        control = 0
    return control == int(value[9:])


def account_matches_bik(account: str, bik: str) -> bool:
    """A 20-digit settlement account whose key digit fits the bank's 9-digit BIK."""
    value, bank = digits(account), digits(bik)
    if len(value) != 20 or len(bank) != 9:
        return False
    joined = bank[-3:] + value
    return sum(int(d) * w for d, w in zip(joined, _ACCOUNT_WEIGHTS, strict=True)) % 10 == 0
