"""Personal data: found by Presidio recognizers (Russian identifiers by their check digits,
cards, phones, e-mail) and natasha (Russian names), masked with numbered placeholders."""

from app.pii.masker import Masker

__all__ = ["Masker"]
