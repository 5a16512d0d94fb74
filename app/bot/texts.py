"""What the bot says, in English and Russian (by the user's Telegram language)."""

from aiogram.types import User

_EN = {
    "start": (
        "Hi! I answer questions from the company knowledge base, with the documents I used.\n"
        "Just write your question. Rate answers with 👍/👎 so we can improve them."
    ),
    "choose": "Which knowledge base should I search?",
    "all": "I search all knowledge bases you can read.",
    "chosen": "Now searching: {title}. /collection to switch.",
    "no_access": ("You have no access to any knowledge base yet. Ask an administrator to add you."),
    "help": (
        "Ask a question in plain words; I answer from the knowledge base and list the sources.\n"
        "/collection: choose the knowledge base\n"
        "/docs: documents of a knowledge base you own\n"
        "/delete DOCUMENT: remove a document (owners)\n"
        "/gaps: questions I could not answer in your knowledge bases (owners)\n"
        "Owners: send files (PDF, DOCX, HTML, Markdown, text) to add or update documents."
    ),
    "rate_limited": "You are asking very fast. Please wait {seconds} s and ask again.",
    "thanks": "Thanks for the feedback!",
    "ask_comment": "Sorry it did not help. What was wrong? Reply in one line, or /skip.",
    "comment_saved": "Thank you, your comment goes to the team that maintains the answers.",
    "skipped": "OK.",
    "option_gone": "That question has expired; please ask again.",
    "not_owner": (
        "Sorry, only the owners of a knowledge base can add documents. Your file was not stored."
    ),
    "upload_where": "Which knowledge base should {count} file(s) go to?",
    "too_large": (
        "{name} is {size} MB; Telegram lets bots download files up to {limit} MB. Split it, "
        "or ask an administrator to add it from the command line or to run a self-hosted "
        "Bot API server (TELEGRAM_API_URL) that allows larger files."
    ),
    "ingesting": "Adding {count} file(s) to {title}…",
    "unsupported": "{name}: unsupported type (send PDF, DOCX, HTML, Markdown or text).",
    "original_too_large": (
        "✗ {name}: not added: uploaded originals are kept, up to {limit} MB each. Ask an "
        "administrator to add it from the command line."
    ),
    "originals_full": (
        "✗ {name}: not added: the storage of uploaded originals is full ({limit} MB). Ask an "
        "administrator to free space or raise ORIGINALS_MAX_TOTAL_MB."
    ),
    "docs_none": "{title} has no documents yet.",
    "docs_which": "Documents of which knowledge base?",
    "delete_usage": "Usage: /delete DOCUMENT_ID (see /docs).",
    "delete_confirm": "Delete {doc} from {title}?",
    "delete_missing": "{doc} is not in {title}.",
    "deleted": "Deleted {doc} from {title} ({chunks} chunks).",
    "cancelled": "Cancelled.",
    "error": "Sorry, something went wrong on my side. Please try again in a minute.",
    "yes": "Delete",
    "no": "Cancel",
    # Conversation (handlers/start.py, ask.py, feedback.py).
    "help_conversation": (
        "/new: start a new conversation (I forget the previous questions; the knowledge base "
        "stays)\n"
        "Rate an answer with the 👍/👎 buttons or a 👍/👎 reaction. In groups, mention me or "
        "reply to my message; in a topic I answer in that topic.\n"
        "While I write an answer you can stop it with the stop button."
    ),
    "new_conversation": "New conversation: ask your question. The knowledge base stays the same.",
    "comment_placeholder": "What was wrong?",
    "stopped": "Stopped.",
    # A cached answer's button (handlers/ask.py): the question again, past the cache.
    "fresh_answer": "🔄 Fresh answer",
    # The command menu (setMyCommands), one description per command.
    "cmd_start": "what I can do",
    "cmd_new": "start a new conversation",
    "cmd_collection": "choose the knowledge base",
    "cmd_docs": "documents of a knowledge base you own",
    "cmd_help": "how to use me",
    "cmd_gaps": "unanswered questions (owners)",
    # Owners and sources (handlers/owners.py, sources.py).
    "owners_private": (
        "Documents are added and listed in a private chat with me: @{bot}. Nothing was stored here."
    ),
    "upload_language": (
        "{title}: the knowledge base was built for the language {stored}, but the collections "
        "file says {configured}. Ask an administrator to set language: {stored} for {name} in "
        "the collections file (or to rebuild the knowledge base in {configured})."
    ),
    "upload_not_added": "✗ {name}: not added",
    "upload_failed": "✗ {doc}: not added: {reason}",
    "upload_done": "✓ {doc}: {status} ({chunks} chunks)",
    "status_added": "added",
    "status_replaced": "replaced",
    "status_unchanged": "unchanged",
    "upload_nothing": "No files are waiting any more; please send them again.",
    "docs_count": "{title}: {count} document(s)",
    "docs_line": "• {doc} ({title}, {chunks} chunks)",
    "docs_synced": "  ↳ from {source}, last synced {when} UTC",
    "source_unavailable": "This source is not available to you here.",
    # Knowledge gaps (handlers/gaps.py).
    "gaps_off": "Gap reports are not available in this installation.",
    "gaps_none": "No unanswered questions in your knowledge bases in the last {days} days.",
    "gaps_head": "Unanswered questions of the last {days} days, most frequent first:",
    "gap_button": "Answer {n}",
    "digest_head": "This week's unanswered questions in your knowledge bases, most frequent "
    "first. Answer one and the bot answers it from then on:",
    "gap_write": (
        "Write the answer to «{question}» as a reply to this message. It becomes a document "
        "of {title}, and I answer from it next time."
    ),
    "gap_placeholder": "The answer",
    "gap_saved": "Saved to {title} as {doc}. I answer this question from it from now on.",
    "gap_failed": "Sorry, the answer could not be saved to {title}. Please try again later.",
    # The knowledge loop's cards (app/loop/escalation.py, review.py, handlers/loop.py).
    "expert_button": "Ask an expert",
    "expert_offer": "Still need an answer? An expert can write one for you.",
    "expert_sent": "Sent to the experts of {title}. Their answer will come here.",
    "expert_unreachable": "Sorry, the experts could not be reached. Please try again later.",
    "expert_not_yours": "Only the person who asked can send this to an expert.",
    "expert_already_sent": "This question is already with the experts.",
    "expert_answer_head": "Answer from an expert ({name}) to «{question}»:",
    "expert_delivered": (
        "Delivered. Save your answer to the knowledge base, so I answer it myself next time?"
    ),
    "expert_undelivered": "Sorry, the answer could not be delivered: {reason}",
    "expert_already": (
        "This question was already answered by {name}. You can still add your answer to the "
        "knowledge base."
    ),
    "expert_only": "Only the experts of {title} can answer this question.",
    "expert_save_button": "Save to knowledge base",
    "expert_reminder": "⏰ Still waiting for an answer: «{question}»",
    "card_gone": "This card is no longer kept.",
    "card_escalation_head": "❓ A question for the experts of {title}",
    "card_review_head": "👎 An answer was rated down ({title})",
    "card_question": "Question",
    "card_query": "Search query",
    "card_answer": "Bot's answer",
    "card_not_found": "— (nothing found)",
    "card_sources": "Sources",
    "card_asker": "Asked by",
    "card_comment": "Comment",
    "card_trace": "Trace",
    "card_reply_hint": "Reply to this message with the answer: it goes to the person who asked.",
    "card_answered": "✅ Answered by {name}.",
    "card_anonymous": "employee {id}",
    "review_gold_button": "Add to golden set",
    "review_escalate_button": "Escalate to owners",
    "review_done_button": "Done",
    "review_gold_ask": (
        "Reply to this message with the correct answer: the facts a good answer contains, one "
        "per line."
    ),
    "review_gold_saved": "Added to the golden set as {id}.",
    "review_gold_already": "Already in the golden set as {id}.",
    "review_gold_status": "⭐ In the golden set as {id}.",
    "review_escalated": "↗ Sent to the experts of {title}.",
    "review_no_experts": "No experts are set for these knowledge bases.",
    "review_done": "✅ Closed by {name}.",
    "review_only": "Only the review chat handles review cards.",
}
_RU = {
    "start": (
        "Здравствуйте! Я отвечаю на вопросы по базе знаний компании и показываю источники.\n"
        "Просто напишите вопрос. Оценивайте ответы 👍/👎, чтобы мы могли их улучшить."
    ),
    "choose": "В какой базе знаний искать?",
    "all": "Я ищу во всех базах знаний, доступных вам.",
    "chosen": "Теперь ищу в: {title}. /collection — сменить.",
    "no_access": "У вас пока нет доступа ни к одной базе знаний. Обратитесь к администратору.",
    "rate_limited": "Вы спрашиваете очень часто. Подождите {seconds} с и спросите снова.",
    "thanks": "Спасибо за оценку!",
    "ask_comment": "Жаль, что не помогло. Что было не так? Ответьте одной строкой или /skip.",
    "comment_saved": "Спасибо, ваш комментарий получит команда, которая улучшает ответы.",
    "not_owner": (
        "Извините, добавлять документы могут только владельцы базы знаний. Файл не сохранён."
    ),
    "too_large": (
        "{name}: {size} МБ; Telegram позволяет ботам скачивать файлы до {limit} МБ. Разделите "
        "файл или попросите администратора добавить его из командной строки либо подключить "
        "собственный сервер Bot API (TELEGRAM_API_URL)."
    ),
    "error": "Извините, у меня что-то пошло не так. Попробуйте через минуту.",
    "help": (
        "Задайте вопрос своими словами — я отвечу по базе знаний и укажу источники.\n"
        "/collection — выбрать базу знаний\n"
        "/docs — документы базы знаний, которой вы владеете\n"
        "/delete ДОКУМЕНТ — удалить документ (для владельцев)\n"
        "/gaps — вопросы, на которые я не смог ответить по вашим базам (для владельцев)\n"
        "Владельцы баз знаний могут прислать файлы (PDF, DOCX, HTML, Markdown, текст), "
        "чтобы добавить или обновить документы."
    ),
    "skipped": "Хорошо.",
    "option_gone": "Этот вопрос устарел, задайте его, пожалуйста, ещё раз.",
    "upload_where": "В какую базу знаний добавить файлы ({count})?",
    "ingesting": "Добавляю файлы ({count}) в базу «{title}»…",
    "unsupported": (
        "{name}: этот формат не поддерживается (пришлите PDF, DOCX, HTML, Markdown или текст)."
    ),
    "original_too_large": (
        "✗ {name}: не добавлен: загруженные оригиналы хранятся, но не больше {limit} МБ "
        "каждый. Попросите администратора добавить файл из командной строки."
    ),
    "originals_full": (
        "✗ {name}: не добавлен: хранилище загруженных оригиналов заполнено ({limit} МБ). "
        "Попросите администратора освободить место или увеличить ORIGINALS_MAX_TOTAL_MB."
    ),
    "docs_none": "В базе «{title}» пока нет документов.",
    "docs_which": "Документы какой базы знаний показать?",
    "delete_usage": "Использование: /delete ID_ДОКУМЕНТА (список — в /docs).",
    "delete_confirm": "Удалить {doc} из базы «{title}»?",
    "delete_missing": "В базе «{title}» нет документа {doc}.",
    "deleted": "Документ {doc} удалён из базы «{title}» (фрагментов: {chunks}).",
    "cancelled": "Отменено.",
    "yes": "Удалить",
    "no": "Отмена",
    "cmd_start": "что я умею",
    "cmd_new": "начать новый разговор",
    "cmd_collection": "выбрать базу знаний",
    "cmd_docs": "документы ваших баз знаний",
    "cmd_help": "как мной пользоваться",
    "cmd_gaps": "вопросы без ответа (владельцам)",
    "help_conversation": (
        "/new — начать новый разговор (я забуду прежние вопросы, база знаний останется)\n"
        "Оценивайте ответы кнопками 👍/👎 или реакцией 👍/👎. В группах упомяните меня или "
        "ответьте на моё сообщение; в теме форума я отвечаю в этой же теме.\n"
        "Пока я пишу ответ, его можно остановить кнопкой «стоп»."
    ),
    "new_conversation": "Новый разговор: задайте вопрос. База знаний осталась прежней.",
    "comment_placeholder": "Что было не так?",
    "stopped": "Остановлено.",
    "fresh_answer": "🔄 Новый ответ",
    "owners_private": (
        "Документы добавляются и просматриваются в личном чате со мной: @{bot}. Здесь ничего "
        "не сохранено."
    ),
    "upload_language": (
        "{title}: база знаний построена для языка {stored}, а в файле коллекций указан "
        "{configured}. Попросите администратора указать language: {stored} для {name} в файле "
        "коллекций (или пересоздать базу знаний на языке {configured})."
    ),
    "upload_not_added": "✗ {name}: не добавлен",
    "upload_failed": "✗ {doc}: не добавлен: {reason}",
    "upload_done": "✓ {doc}: {status} (фрагментов: {chunks})",
    "status_added": "добавлен",
    "status_replaced": "заменён",
    "status_unchanged": "без изменений",
    "upload_nothing": "Файлов в очереди больше нет; пришлите их, пожалуйста, ещё раз.",
    "docs_count": "{title}: документов — {count}",
    "docs_line": "• {doc} ({title}, фрагментов: {chunks})",
    "docs_synced": "  ↳ источник: {source}, последняя синхронизация {when} UTC",
    "source_unavailable": "Этот источник здесь вам недоступен.",
    "gaps_off": "Отчёты о пробелах в этой установке недоступны.",
    "gaps_none": "За последние {days} дн. в ваших базах знаний нет вопросов без ответа.",
    "gaps_head": "Вопросы без ответа за последние {days} дн., самые частые первыми:",
    "gap_button": "Ответить {n}",
    "digest_head": "Вопросы без ответа в ваших базах знаний за неделю, самые частые первыми. "
    "Ответьте — и бот будет отвечать на них сам:",
    "gap_write": (
        "Напишите ответ на вопрос «{question}» ответом на это сообщение. Он станет документом "
        "базы «{title}», и в следующий раз я отвечу по нему."
    ),
    "gap_placeholder": "Ответ",
    "gap_saved": "Сохранено в «{title}» как {doc}. Теперь я отвечаю на этот вопрос по нему.",
    "gap_failed": "Извините, ответ не удалось сохранить в «{title}». Попробуйте позже.",
    "expert_button": "Спросить эксперта",
    "expert_offer": "Ответ всё ещё нужен? Его может написать эксперт.",
    "expert_sent": "Отправлено экспертам базы «{title}». Их ответ придёт сюда.",
    "expert_unreachable": "Извините, до экспертов не удалось достучаться. Попробуйте позже.",
    "expert_not_yours": "Отправить эксперту может только тот, кто задал вопрос.",
    "expert_already_sent": "Этот вопрос уже у экспертов.",
    "expert_answer_head": "Ответ эксперта ({name}) на вопрос «{question}»:",
    "expert_delivered": (
        "Доставлено. Сохранить ваш ответ в базу знаний, чтобы в следующий раз я ответил сам?"
    ),
    "expert_undelivered": "Извините, ответ не удалось доставить: {reason}",
    "expert_already": (
        "На этот вопрос уже ответил(а) {name}. Ваш ответ всё равно можно добавить в базу знаний."
    ),
    "expert_only": "Отвечать на этот вопрос могут только эксперты базы «{title}».",
    "expert_save_button": "Сохранить в базу знаний",
    "expert_reminder": "⏰ Вопрос всё ещё ждёт ответа: «{question}»",
    "card_gone": "Эта карточка больше не хранится.",
    "card_escalation_head": "❓ Вопрос экспертам базы «{title}»",
    "card_review_head": "👎 Ответ оценён плохо ({title})",
    "card_question": "Вопрос",
    "card_query": "Поисковый запрос",
    "card_answer": "Ответ бота",
    "card_not_found": "— (ничего не найдено)",
    "card_sources": "Источники",
    "card_asker": "Спрашивает",
    "card_comment": "Комментарий",
    "card_trace": "Трасса",
    "card_reply_hint": "Ответьте на это сообщение: ответ получит тот, кто спрашивал.",
    "card_answered": "✅ Ответил(а) {name}.",
    "card_anonymous": "сотрудник {id}",
    "review_gold_button": "В эталонный набор",
    "review_escalate_button": "Передать владельцам",
    "review_done_button": "Готово",
    "review_gold_ask": (
        "Ответьте на это сообщение правильным ответом: факты, которые должен содержать хороший "
        "ответ, по одному в строке."
    ),
    "review_gold_saved": "Добавлено в эталонный набор как {id}.",
    "review_gold_already": "Уже в эталонном наборе как {id}.",
    "review_gold_status": "⭐ В эталонном наборе как {id}.",
    "review_escalated": "↗ Отправлено экспертам базы «{title}».",
    "review_no_experts": "Для этих баз знаний эксперты не заданы.",
    "review_done": "✅ Закрыл(а) {name}.",
    "review_only": "Карточки разбирает только чат поддержки.",
}


# Every key exists in every language (tests/test_texts.py): no silent fallback to English.
TABLES: dict[str, dict[str, str]] = {"en": _EN, "ru": _RU}


def language_of(user: User | None) -> str:
    """The interface language for a Telegram user: Russian for a Russian Telegram."""
    return "ru" if user is not None and (user.language_code or "").startswith("ru") else "en"


def text_in(language: str, key: str, **values: object) -> str:
    """A message in a language of TABLES; KeyError when the key is missing in it."""
    return TABLES[language][key].format(**values)


def t(key: str, user: User | None = None, **values: object) -> str:
    """A message in the user's language; KeyError when the key is missing in it."""
    return text_in(language_of(user), key, **values)
