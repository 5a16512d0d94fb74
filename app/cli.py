"""`python -m app`: run the Telegram bot (default), ask the chain a question, manage prompts."""

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from app import logsafe
from app.chain.types import ChainRequest, ChainResult, ResultKind
from app.errors import AppError
from app.factory import build_services
from app.loop import cli as loop_cli
from app.prompts import load_prompt_files
from app.prompts_push import push_prompts
from app.settings import LangfuseSettings, Settings
from app.tracing import Tracer
from ingestion.cli import collection_arg
from kb.errors import KBError
from kb.settings import load_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app", description="Answers from the knowledge base."
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("bot", help="run the Telegram bot (the default)")
    ask = commands.add_parser("ask", help="run the answer chain once on a question")
    ask.add_argument("question", metavar="QUESTION")
    ask.add_argument("--collection", required=True, action="append", type=collection_arg)
    ask.add_argument("--clarification", help="the option picked after a clarifying question")
    ask.add_argument("--user", default="cli", help="user id for the trace (default: cli)")
    ask.add_argument("--json", action="store_true", help="print the result object last, as JSON")
    smoke = commands.add_parser("smoke", help="check that the embedded engines run on this CPU")
    smoke.add_argument(
        "--only", choices=["embedders", "llm"], help="check one engine (default: all)"
    )
    prompts = commands.add_parser("prompts", help="check prompt files, or push them to Langfuse")
    actions = prompts.add_subparsers(dest="action", required=True)
    actions.add_parser("check", help="parse and render every prompt file")
    push = actions.add_parser("push", help="upload the prompt files as new Langfuse versions")
    push.add_argument("--label", help="label for the new versions (default: LANGFUSE_PROMPT_LABEL)")
    push.add_argument("--force", action="store_true", help="push even when unchanged")
    from app.ab.cli import add_report_parser

    add_report_parser(actions)
    from app.eval.command import add_parser as add_eval

    add_eval(commands)
    loop_cli.add_parser(commands)
    from app.ops.commands import add_parsers as add_ops

    add_ops(commands)
    return parser


def _print_result(result: ChainResult, streamed: bool) -> None:
    if result.kind is ResultKind.ANSWER:
        if not streamed:
            print(result.text)
        print()
    elif result.kind is ResultKind.CLARIFY:
        print(result.text)
        for option in result.options:
            print(f"  - {option}")
        print('(ask again with --clarification "OPTION")')
    else:
        print(result.text)
    if result.sources:
        print("Sources:")
        for source in result.sources:
            where = source.url or f"{source.collection}/{source.doc_id}"
            print(f"  [{source.n}] {source.title} ({where})")


async def _ask(args: argparse.Namespace) -> int:
    services = await build_services(Settings.load())
    streamed = False

    async def show(delta: str) -> None:
        nonlocal streamed
        streamed = True
        sys.stdout.write(delta)
        sys.stdout.flush()

    try:
        request = ChainRequest(
            message=args.question,
            collections=args.collection,
            user_id=args.user,
            session_id=f"cli-{args.user}",
            clarification=args.clarification,
            on_delta=None if args.json else show,
        )
        result = await services.chain.run(request)
    finally:
        await services.aclose()
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        _print_result(result, streamed)
    if result.kind is ResultKind.ERROR:
        print(f"error: {result.error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def refuse_placeholder_secrets(settings: Settings) -> None:
    """ValueError naming the first secret that is set to an example value ("change-me")."""
    from app.bot.settings import is_placeholder

    secrets = {
        "QDRANT_API_KEY": settings.qdrant.api_key,
        "LLM_API_KEY": settings.llm.api_key,
        "LLM_FALLBACK_API_KEY": settings.llm.fallback_api_key,
        "LANGFUSE_SECRET_KEY": settings.langfuse.secret_key,
    }
    for name, secret in secrets.items():
        if secret is not None and is_placeholder(secret.get_secret_value()):
            raise ValueError(f"{name} is a placeholder: set the real secret or leave it unset")


async def _bot(args: argparse.Namespace) -> int:
    from app.bot.app import run_bot
    from app.bot.settings import BotSettings

    settings = Settings.load()
    bot_settings = load_settings(BotSettings)
    try:
        bot_settings.require_token()
        refuse_placeholder_secrets(settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    await run_bot(settings, bot_settings)
    return EXIT_OK


async def _smoke(args: argparse.Namespace) -> int:
    from app.smoke import smoke

    parts = [args.only] if args.only else ["embedders", "llm"]
    result = await smoke(Settings.load(), parts)
    for name, outcome in result.items():
        print(f"ok {name}: {outcome}")
    print(json.dumps(result, ensure_ascii=False))
    return EXIT_OK


async def _prompts(args: argparse.Namespace) -> int:
    settings = load_settings(LangfuseSettings)
    if args.action == "report":
        from app.ab.cli import run_report

        return await run_report(args, settings)
    files = load_prompt_files(Settings.load().chain.prompts_dir)
    if args.action == "check":
        for name, prompt in files.items():
            print(f"ok {name} ({prompt.version}): {len(prompt.messages)} messages")
        return EXIT_OK
    tracer = Tracer.from_settings(settings)
    if tracer.langfuse is None:
        print("error: set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY to push", file=sys.stderr)
        return EXIT_USAGE
    try:
        label = args.label or settings.prompt_label
        for line in await asyncio.to_thread(
            push_prompts, tracer.langfuse, files, label, args.force
        ):
            print(line)
    finally:
        tracer.shutdown()
    return EXIT_OK


async def _gaps(args: argparse.Namespace) -> int:
    from app.loop import cli as loop_cli

    return await loop_cli.run(args, Settings.load())


async def _forget_user(args: argparse.Namespace) -> int:
    from app.ops.commands import run_forget

    return await run_forget(args)


async def _retention(args: argparse.Namespace) -> int:
    from app.ops.commands import run_retention

    return await run_retention(args)


async def _eval(args: argparse.Namespace) -> int:
    from app.eval.command import run_eval

    return await run_eval(args)


def _log_format() -> str:
    """LOG_FORMAT (text when unset or invalid: the bot's own start then names the problem)."""
    from app.ops.settings import OpsSettings

    try:
        return load_settings(OpsSettings).log_format
    except KBError:
        return "text"


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; 0 on success, 1 when the chain failed, 2 on usage or setup errors."""
    args = _parser().parse_args(argv)
    name = args.command or "bot"
    # The bot is a service: its log says what it does; one-shot commands only warn.
    level = logging.INFO if name == "bot" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Bot tokens and URL passwords by their shape now; the bot adds its configured secrets.
    logsafe.install()
    if _log_format() == "json":
        logsafe.use_json()
    command = {
        "ask": _ask,
        "prompts": _prompts,
        "bot": _bot,
        "smoke": _smoke,
        "eval": _eval,
        "gaps": _gaps,
        "forget-user": _forget_user,
        "retention": _retention,
    }[name]
    try:
        return asyncio.run(command(args))
    except (KBError, AppError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    return EXIT_USAGE
