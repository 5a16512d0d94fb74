"""The deployment files agree with the code: every setting the settings classes read is in
.env.example and reaches the containers that need it, compose passes nothing the code does not
read, every variable compose interpolates is documented, and the example's secrets are
placeholders that compose and the bot refuse.

The settings are found by importing every `*settings` module of kb, ingestion and app, so a
new settings class or field is checked without touching this file."""

import importlib
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
import yaml
from pydantic import AliasChoices, SecretStr, ValidationError
from pydantic_settings import BaseSettings

import app
import ingestion
import kb
from app.bot.settings import BotSettings, is_placeholder

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CLUSTER = ROOT / "docker-compose.cluster.yml"
COMPOSE_FILES = (COMPOSE, COMPOSE_CLUSTER)

# Variables of .env.example that our code does not read: Langfuse's, its databases', vLLM's
# (interpolated into the vllm command), and compose's own.
NON_APP_PREFIXES = ("LANGFUSE_INIT_", "POSTGRES_", "CLICKHOUSE_", "MINIO_", "VLLM_", "NEXTAUTH_")
NON_APP_NAMES = frozenset(
    {
        "SALT",  # Langfuse: hashing API keys
        "ENCRYPTION_KEY",  # Langfuse: encrypting secrets at rest
        "LANGFUSE_REDIS_AUTH",  # password of Langfuse's own Redis (not the bot's)
        "HF_TOKEN",  # vLLM: gated models on the Hugging Face hub
        "DOCS_DIR",  # host folder mounted at /docs for ingestion
        "WEBHOOK_DOMAIN",  # the HTTPS proxy's site address (cluster file)
        "PRELOAD_EMBEDDING_MODEL",  # build argument of the Dockerfile
        "COMPOSE_FILE",  # read by docker compose itself
    }
)
# Settings that do not belong in the containers: the in-process LLM (the stack runs vLLM) and
# the embedded store (the stack runs a Qdrant server).
NOT_PASSED = frozenset({"LLM_GGUF_PATH", "LLM_N_CTX", "LLM_N_THREADS", "QDRANT_PATH"})
README = ROOT / "README.md"
README_RU = ROOT / "README.ru.md"
SECRET_SUFFIXES = ("_KEY", "_SECRET", "_PASSWORD", "_TOKEN", "_AUTH")
APP_SERVICES = ("bot", "ingestion")


@dataclass(frozen=True)
class Setting:
    """One field of a settings class and the environment variables it is read from."""

    owner: type[BaseSettings]
    field: str
    names: tuple[str, ...]  # the first is the documented one
    secret: bool

    @property
    def name(self) -> str:
        """The variable .env.example documents."""
        return self.names[0]


def _settings_modules() -> Iterator[ModuleType]:
    def fail(name: str) -> None:
        raise ImportError(f"cannot import {name}")

    for package in (kb, ingestion, app):
        prefix = package.__name__ + "."
        for info in pkgutil.walk_packages(package.__path__, prefix, onerror=fail):
            if info.name.rsplit(".", 1)[-1].endswith("settings"):
                yield importlib.import_module(info.name)


def _settings_classes() -> list[type[BaseSettings]]:
    found: dict[str, type[BaseSettings]] = {}
    for module in _settings_modules():
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value.__module__ == module.__name__
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[key] for key in sorted(found)]


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def _settings_of(cls: type[BaseSettings]) -> list[Setting]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    settings = []
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, AliasChoices):
            names = tuple(choice for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names = (alias,)
        else:
            names = (f"{prefix}{field_name}",)
        secret = _is_secret(field.annotation)
        settings.append(Setting(cls, field_name, tuple(n.upper() for n in names), secret))
    return settings


SETTINGS_CLASSES = _settings_classes()
SETTINGS = [setting for cls in SETTINGS_CLASSES for setting in _settings_of(cls)]
SETTINGS_NAMES = frozenset(name for setting in SETTINGS for name in setting.names)

# "NAME=value" is set, "# NAME=value" shows a default; "#   NAME=value" (indented) is an example.
_ASSIGNMENT = re.compile(r"^(# ?)?([A-Z][A-Z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class EnvLine:
    """A `NAME=value` line of .env.example, set or shown commented out (examples excluded)."""

    name: str
    value: str
    active: bool


def _env_example() -> list[EnvLine]:
    lines = []
    for raw in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = _ASSIGNMENT.match(raw.rstrip())
        if match:
            value = match.group(3).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            lines.append(EnvLine(match.group(2), value, match.group(1) is None))
    return lines


ENV_LINES = _env_example()
DOCUMENTED = frozenset(line.name for line in ENV_LINES)


def _example_values(name: str) -> list[str]:
    return [line.value for line in ENV_LINES if line.name == name]


def _is_non_app(name: str) -> bool:
    return name in NON_APP_NAMES or name.startswith(NON_APP_PREFIXES)


def _compose_text(path: Path) -> str:
    """The file without its comment lines (they may mention variables as prose)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def _services(path: Path) -> dict[str, dict[str, Any]]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), f"{path.name} is not a mapping"
    return cast(dict[str, dict[str, Any]], loaded.get("services") or {})


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping (a list entry without "=" is a pass-through)."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (str(item).partition("=") for item in environment)
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {str(key): (None if value is None else str(value)) for key, value in environment.items()}


def _app_service_environments() -> Iterator[tuple[str, str, dict[str, str | None]]]:
    for path in COMPOSE_FILES:
        for name, service in _services(path).items():
            if name in APP_SERVICES:
                yield path.name, name, _environment(service)


_INTERPOLATION = re.compile(
    r"(?<!\$)\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _referenced(path: Path) -> dict[str, str]:
    """Variables a compose file interpolates, with what follows the name (":-x", ":?msg", "")."""
    found: dict[str, str] = {}
    for match in _INTERPOLATION.finditer(_compose_text(path)):
        name = match.group("braced") or match.group("bare")
        found.setdefault(name, match.group("rest") or "")
        if (match.group("rest") or "").startswith((":?", "?")):
            found[name] = match.group("rest")
    return found


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No settings variable in the environment and no .env in the working directory."""
    for name in SETTINGS_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _stack_defaults() -> dict[str, str]:
    """Values the stack gives a setting when .env does not: ${NAME:-value} in docker-compose.yml
    and ENV in the Dockerfile (the cluster file's own defaults are told in comments)."""
    defaults = {}
    for name, rest in _referenced(COMPOSE).items():
        if rest.startswith(":-"):
            defaults[name] = rest[2:]
    # A default compose gives under a setting's other name is that setting's default.
    for setting in SETTINGS:
        for alias in setting.names[1:]:
            if alias in defaults:
                defaults.setdefault(setting.name, defaults[alias])
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    for name in SETTINGS_NAMES:
        match = re.search(rf"\b{name}=(\S+)", dockerfile)
        if match:
            defaults[name] = match.group(1)
    return defaults


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?message}, and $$ for a dollar."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        rest = match.group("rest") or ""
        if env.get(name):
            return env[name]
        if rest.startswith((":-", "-")):
            return rest.split("-", 1)[1]
        return ""

    return _INTERPOLATION.sub(substitute, value).replace("$$", "$")


# ---------------------------------------------------------------------------------------------


def test_settings_classes_are_found() -> None:
    names = {cls.__name__ for cls in SETTINGS_CLASSES}
    expected = {
        "QdrantSettings",
        "EmbeddingSettings",
        "SearchSettings",
        "IngestionSettings",
        "LLMSettings",
        "LangfuseSettings",
        "ChainSettings",
        "BotSettings",
    }
    assert expected <= names, f"missing: {sorted(expected - names)}"
    assert {"TELEGRAM_API_URL", "BOT_TELEGRAM_API_URL", "LANGFUSE_HOST"} <= SETTINGS_NAMES


def test_every_setting_is_documented_in_env_example() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    missing = [s.name for s in SETTINGS if s.name not in DOCUMENTED]
    assert not missing, f".env.example lacks a NAME= line (or # NAME=default) for {missing}"
    unmentioned = [
        alias
        for s in SETTINGS
        for alias in s.names[1:]
        if not re.search(rf"\b{re.escape(alias)}\b", text)
    ]
    assert not unmentioned, f".env.example does not mention the alternative names {unmentioned}"


def test_env_example_has_no_variable_the_code_does_not_read() -> None:
    unknown = sorted(
        name for name in DOCUMENTED if name not in SETTINGS_NAMES and not _is_non_app(name)
    )
    assert not unknown, (
        f"{unknown} in .env.example are read by no settings class: a typo, a removed setting, "
        "or a non-app variable missing from NON_APP_* in this test"
    )
    clashing = sorted(name for name in SETTINGS_NAMES if _is_non_app(name))
    assert not clashing, f"settings {clashing} are listed as non-app variables"


def test_app_services_pass_only_what_the_settings_read() -> None:
    seen = set()
    for file_name, service, environment in _app_service_environments():
        seen.add((file_name, service))
        unknown = sorted(set(environment) - SETTINGS_NAMES)
        assert not unknown, f"{file_name}: service {service} passes {unknown}, read by no setting"
    assert {(COMPOSE.name, service) for service in APP_SERVICES} <= seen


@pytest.mark.parametrize(
    ("service", "modules"),
    [("bot", ("kb.", "ingestion.", "app.")), ("ingestion", ("kb.", "ingestion."))],
)
def test_app_services_pass_every_setting_they_use(service: str, modules: tuple[str, ...]) -> None:
    # Every name a setting is read under: an alias set in .env must not be lost either.
    environment = _environment(_services(COMPOSE)[service])
    missing = sorted(
        name
        for s in SETTINGS
        if s.owner.__module__.startswith(modules) and s.name not in NOT_PASSED
        for name in s.names
        if name not in environment
    )
    assert not missing, f"service {service} does not pass {missing} (set in .env, they'd be lost)"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)
def test_compose_variables_are_documented(path: Path) -> None:
    referenced = _referenced(path)
    assert referenced, f"{path.name} interpolates nothing"
    # A setting's other name counts as documented where its line mentions it ("also read as").
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    aliases = {alias for s in SETTINGS for alias in s.names[1:] if re.search(rf"\b{alias}\b", text)}
    missing = sorted(set(referenced) - DOCUMENTED - aliases)
    assert not missing, f"{path.name} uses {missing}, not in .env.example"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)
def test_required_compose_variables_have_no_value_in_example(path: Path) -> None:
    required = [name for name, rest in _referenced(path).items() if rest.startswith((":?", "?"))]
    assert required
    filled = {
        name: values
        for name in required
        if (values := [v for v in _example_values(name) if v and not is_placeholder(v)])
    }
    assert not filled, f"required variables with a real-looking value in .env.example: {filled}"


def test_env_example_secrets_are_empty_or_placeholders() -> None:
    secrets = {s.name for s in SETTINGS if s.secret} | {
        line.name for line in ENV_LINES if line.name.endswith(SECRET_SUFFIXES)
    }
    secrets |= {"SALT", "ENCRYPTION_KEY", "BOT_TOKEN", "BOT_WEBHOOK_SECRET"}
    leaked = {
        line.name: line.value
        for line in ENV_LINES
        if line.name in secrets and line.value and not is_placeholder(line.value)
    }
    assert not leaked, f"secrets with a value in .env.example: {sorted(leaked)}"
    for name in ("BOT_TOKEN", "QDRANT_API_KEY", "LANGFUSE_INIT_PROJECT_SECRET_KEY"):
        assert any(line.active for line in ENV_LINES if line.name == name), f"{name} not listed"


@pytest.mark.usefixtures("clean_env")
def test_bot_refuses_the_example_secrets() -> None:
    for token in _example_values("BOT_TOKEN") or [""]:
        bot = BotSettings(token=SecretStr(token))
        with pytest.raises(ValueError, match="BOT_TOKEN"):
            bot.require_token()
    for secret in _example_values("BOT_WEBHOOK_SECRET") or [""]:
        with pytest.raises(ValidationError, match="BOT_WEBHOOK_SECRET"):
            BotSettings(
                webhook_url="https://kb.example.com/telegram",
                webhook_secret=SecretStr(secret),
            )


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda cls: cls.__name__)
def test_env_example_as_env_is_valid(
    cls: type[BaseSettings], clean_env: pytest.MonkeyPatch
) -> None:
    Path(".env").write_text(ENV_EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    cls()


def test_defaults_shown_in_env_example_are_the_real_ones(clean_env: pytest.MonkeyPatch) -> None:
    stack = _stack_defaults()
    by_name = {s.name: s for s in SETTINGS}
    wrong = {}
    for line in ENV_LINES:
        setting = by_name.get(line.name)
        if setting is None or not line.value:
            continue
        if line.name in stack:
            if line.value != stack[line.name]:
                wrong[line.name] = f"{line.value!r}, the stack's default is {stack[line.name]!r}"
            continue
        with clean_env.context() as env:
            env.setenv(line.name, line.value)
            parsed = getattr(setting.owner(), setting.field)
        default = setting.owner.model_fields[setting.field].get_default(call_default_factory=True)
        if parsed != default:
            wrong[line.name] = f"{line.value!r}, the code's default is {default!r}"
    assert not wrong, f".env.example shows wrong defaults: {wrong}"


@pytest.mark.parametrize("files", [(COMPOSE,), COMPOSE_FILES], ids=["single", "cluster"])
def test_values_compose_gives_the_bot_are_valid(
    files: tuple[Path, ...], clean_env: pytest.MonkeyPatch
) -> None:
    # .env.example with its secrets filled in, as an installer would.
    env = {line.name: line.value for line in ENV_LINES if line.active}
    for path in files:
        for name, rest in _referenced(path).items():
            if rest.startswith((":?", "?")) and not env.get(name):
                env[name] = f"filled-{name.lower()}-0123456789"
    environment: dict[str, str | None] = {}
    for path in files:
        environment.update(_environment(_services(path)["bot"]))
    for name, value in environment.items():
        if value is not None:
            clean_env.setenv(name, _interpolate(value, env))
    for cls in SETTINGS_CLASSES:
        cls()
    assert BotSettings().redis_url, "the stack keeps the bot's state in Redis"


def test_langfuse_takes_no_sign_ups() -> None:
    """Traces hold every employee's questions: support staff are invited, nobody signs up (a
    sign-up would join the organisation and read them all)."""
    web = _environment(_services(COMPOSE)["langfuse-web"])
    assert web.get("AUTH_DISABLE_SIGNUP") == "true"
    assert "LANGFUSE_DEFAULT_ORG_ROLE" not in web, "no role is handed to whoever signs in"


# ---------------------------------------------------------------------- configuration agrees


def _readme_table_rows(path: Path) -> dict[str, str]:
    """Each `NAME` in the first column of a README table, with its whole row."""
    rows: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", first):
                rows.setdefault(name, line)
    return rows


def _filled_env() -> dict[str, str]:
    """.env.example with every required variable given a value, as an installer fills it."""
    env = {line.name: line.value for line in ENV_LINES if line.active}
    for path in COMPOSE_FILES:
        for name, rest in _referenced(path).items():
            if rest.startswith((":?", "?")) and not env.get(name):
                env[name] = f"filled-{name.lower()}-0123456789"
    return env


def test_documented_settings_reach_a_container() -> None:
    """A setting .env.example or README's tables document is passed to a container (or is
    one the stack does not use, NOT_PASSED)."""
    passed: set[str] = set()
    for _, _, environment in _app_service_environments():
        passed |= set(environment)
    documented = (DOCUMENTED | set(_readme_table_rows(README))) & SETTINGS_NAMES
    lost = sorted(documented - passed - NOT_PASSED)
    assert not lost, f"{lost} are documented but never reach the bot or ingestion"


@pytest.mark.parametrize(
    "setting",
    [s for s in SETTINGS if len(s.names) > 1],
    ids=lambda s: "/".join(s.names),
)
@pytest.mark.parametrize("files", [(COMPOSE,), COMPOSE_FILES], ids=["single", "cluster"])
def test_any_name_of_a_setting_set_in_env_wins_in_the_container(
    setting: Setting, files: tuple[Path, ...], clean_env: pytest.MonkeyPatch
) -> None:
    """Set under any of its names in .env, a setting arrives with that value: a default compose
    gives under another name must not win over it."""
    service = "bot" if setting.owner.__module__.startswith("app.") else "ingestion"
    for name in setting.names:
        env = _filled_env()
        value = "/custom/" + name.lower()
        env[name] = value
        environment: dict[str, str | None] = {}
        for path in files:
            environment.update(_environment(_services(path).get(service, {})))
        with clean_env.context() as patched:
            for key, raw in environment.items():
                # A bare name passes the .env value through; ${...} is interpolated from it.
                given = env.get(key, "") if raw is None else _interpolate(raw, env)
                if given:
                    patched.setenv(key, given)
            got = getattr(setting.owner(), setting.field)
        assert str(got) == value, f"{name}={value} in .env reaches {service} as {got!r}"


def test_readme_says_which_settings_the_stack_requires() -> None:
    """A setting compose fills from a required variable (":?") is not "unset" or optional in
    the stack: its README row says it is required there."""
    rows = _readme_table_rows(README)
    environment = _environment(_services(COMPOSE)["bot"])
    required = {
        key
        for key, raw in environment.items()
        if raw and re.search(r"\$\{[A-Z_0-9]+:\?", raw) and key in rows
    }
    assert {"LANGFUSE_PUBLIC_KEY", "LLM_API_KEY", "BOT_TOKEN"} <= required
    vague = sorted(name for name in required if "required" not in rows[name].lower())
    assert not vague, f"README's rows for {vague} do not say the stack requires them"


def _generated_lengths(path: Path) -> set[int]:
    return {int(n) for n in re.findall(r"openssl rand -hex (\d+)", path.read_text("utf-8"))}


def test_secrets_are_generated_with_one_length() -> None:
    files = [README, ENV_EXAMPLE, *COMPOSE_FILES] + ([README_RU] if README_RU.exists() else [])
    lengths = {path.name: _generated_lengths(path) for path in files}
    assert set().union(*lengths.values()) == {32}, f"openssl rand -hex lengths: {lengths}"


def test_first_start_fills_every_required_variable() -> None:
    """README's first start names every variable compose refuses to start without."""
    text = README.read_text(encoding="utf-8")
    start = text.index("### First start")
    first_start = text[start : text.index("\n### ", start + 1)]
    required = {name for name, rest in _referenced(COMPOSE).items() if rest.startswith((":?", "?"))}
    missing = sorted(name for name in required if not re.search(rf"\b{name}\b", first_start))
    assert not missing, f"README's first start does not say to fill {missing}"


# ---------------------------------------------------------------------- safe by default

_PINNED = re.compile(r"(@sha256:[0-9a-f]{64}$)|(:v?\d+\.\d+\.\d+(\.\d+)?$)|(:RELEASE\.[\dT:-]+Z$)")
# PostgreSQL's releases have two numbers (17.11): the second is the patch release.
_PINNED_TWO_PART = re.compile(r"^postgres:\d+\.\d+$")


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)
def test_every_image_is_pinned_to_a_version(path: Path) -> None:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    images = {
        name: str(service["image"])
        for name, service in loaded["services"].items()
        if "image" in service and "build" not in service  # ours is built from the Dockerfile
    }
    images |= {
        key: str(value["image"])
        for key, value in loaded.items()
        if key.startswith("x-") and isinstance(value, dict) and "image" in value
    }
    assert images
    floating = {
        name: image
        for name, image in images.items()
        if not (_PINNED.search(image) or _PINNED_TWO_PART.match(image))
    }
    assert not floating, f"images without an exact version (an upgrade by surprise): {floating}"


# Published on every interface on purpose: the HTTPS proxy Telegram's webhook calls reach.
PUBLIC_PORTS = {("webhook-proxy", "80:80"), ("webhook-proxy", "443:443")}


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)
def test_published_ports_are_bound_to_localhost(path: Path) -> None:
    exposed = [
        (name, str(port))
        for name, service in _services(path).items()
        for port in service.get("ports") or []
        if not str(port).startswith("127.0.0.1:") and (name, str(port)) not in PUBLIC_PORTS
    ]
    assert not exposed, f"{path.name} publishes {exposed} on every interface"
    assert "127.0.0.1:3000:3000" in _services(COMPOSE)["langfuse-web"]["ports"]


def test_vllm_requires_a_key_and_sends_no_usage_statistics() -> None:
    services = _services(COMPOSE)
    vllm = _environment(services["vllm"])
    assert (vllm.get("VLLM_API_KEY") or "").startswith("${LLM_API_KEY:?")
    assert vllm.get("VLLM_NO_USAGE_STATS") == "1"
    assert vllm.get("DO_NOT_TRACK") == "1"
    # The bot sends the very key vLLM requires.
    assert (_environment(services["bot"]).get("LLM_API_KEY") or "").startswith("${LLM_API_KEY:?")


def test_the_bots_redis_has_a_password_the_bot_and_its_health_check_use() -> None:
    services = _services(COMPOSE)
    redis = services["redis"]
    command = " ".join(str(part) for part in redis["command"])
    assert "--requirepass ${BOT_REDIS_PASSWORD:?" in command
    assert (_environment(redis).get("REDISCLI_AUTH") or "").startswith("${BOT_REDIS_PASSWORD:?")
    bot = _environment(services["bot"])
    assert (bot.get("BOT_REDIS_PASSWORD") or "").startswith("${BOT_REDIS_PASSWORD:?")
    langfuse_redis = services["langfuse-redis"]
    assert "--requirepass ${LANGFUSE_REDIS_AUTH:?" in str(langfuse_redis["command"])
    assert "REDISCLI_AUTH" in _environment(langfuse_redis)


def test_the_bot_starts_once_vllm_has_loaded_its_model() -> None:
    services = _services(COMPOSE)
    assert services["bot"]["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert "/health" in " ".join(services["vllm"]["healthcheck"]["test"])


def test_cluster_clients_reach_qdrant_through_a_health_checked_balancer() -> None:
    cluster = _services(COMPOSE_CLUSTER)
    nodes = sorted(
        name
        for name, service in {**_services(COMPOSE), **cluster}.items()
        if name.startswith("qdrant") and name != "qdrant-lb"
    )
    assert len(nodes) == 3
    balancer = cluster["qdrant-lb"]
    script = " ".join(str(part) for part in balancer["command"])
    assert all(f"{node}:6333" in script for node in nodes), "every node is behind the balancer"
    assert "health_uri /readyz" in script
    assert "healthcheck" in balancer
    for service in ("bot", "ingestion"):
        url = _environment(cluster[service]).get("QDRANT_URL") or ""
        assert url.endswith("-http://qdrant-lb:6333}"), f"{service} talks to {url}"
        assert cluster[service]["depends_on"]["qdrant-lb"]["condition"] == "service_healthy"


def _shell_commands(path: Path) -> list[str]:
    """The commands of a README's bash code blocks, continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            command = line.split(" #", 1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(" ".join(command.split()))
    return commands


def test_the_russian_readme_has_the_same_commands() -> None:
    english = _shell_commands(README)
    assert len(english) > 20
    russian = set(_shell_commands(README_RU))
    missing = [command for command in english if command not in russian]
    assert not missing, f"README.ru.md lacks {len(missing)} commands of README.md: {missing[:5]}"
