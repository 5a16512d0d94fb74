"""A card as the experts and the review chat see it (Telegram HTML): what was asked, what the
bot answered and from which documents, who asks, the trace, and what was done with it."""

import html

from app.bot.texts import text_in
from app.loop.cards import Card, CardKind, Status


def card_html(card: Card, title: str, language: str, trace_url: str | None) -> str:
    """The card's text in a language of the bot's texts (English when not one of them)."""
    lang = language if language in ("en", "ru") else "en"
    head = "card_escalation_head" if card.kind is CardKind.ESCALATION else "card_review_head"
    lines = [f"<b>{html.escape(text_in(lang, head, title=title))}</b> {card.tag}", ""]

    def field(key: str, value: str) -> None:
        lines.append(f"<b>{html.escape(text_in(lang, key))}:</b> {html.escape(value)}")

    field("card_question", card.question)
    if card.query and card.query != card.question:
        field("card_query", card.query)
    field("card_answer", card.answer or text_in(lang, "card_not_found"))
    if card.sources:
        lines.append(f"<b>{html.escape(text_in(lang, 'card_sources'))}:</b>")
        for n, source in enumerate(card.sources, 1):
            name = html.escape(f"{source.title} ({source.collection}/{source.doc_id})")
            link = f' <a href="{html.escape(source.url)}">↗</a>' if source.url else ""
            lines.append(f"{n}. {name}{link}")
    if card.comment:
        field("card_comment", card.comment)
    field("card_asker", card.asker.name)
    if trace_url:
        label = html.escape(text_in(lang, "card_trace"))
        lines.append(f'<b>{label}:</b> <a href="{html.escape(trace_url)}">{card.trace_id}</a>')
    if card.kind is CardKind.ESCALATION and card.status is Status.OPEN:
        lines += ["", f"<i>{html.escape(text_in(lang, 'card_reply_hint'))}</i>"]
    if card.kind is CardKind.ESCALATION and card.replies:
        lines += ["", html.escape(text_in(lang, "card_answered", name=card.replies[0].name))]
    lines += [html.escape(line) for line in card.notes]
    return "\n".join(lines)
