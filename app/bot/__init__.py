"""The Telegram bot: employees ask, content owners upload (aiogram 3)."""
