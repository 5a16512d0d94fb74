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
}


def t(key: str, user: User | None = None, **values: object) -> str:
    """A message in the user's language (English when there is no translation)."""
    table = _RU if user is not None and (user.language_code or "").startswith("ru") else _EN
    return (table.get(key) or _EN[key]).format(**values)
