"""One router per handler module; app.bot.app includes them in order, the catch-all last."""
