"""`python -m app eval --prompt-label`, as support staff run it (its own process, the samples
ingested by the CLI, a served model faked over HTTP): the variant file is what the answer step
sends, the summary and the Langfuse experiment say which variant ran, an eval without the
option runs the defaults, and a label no prompt has stops the run."""

import json
import subprocess
from pathlib import Path

from tests.fakes.langfuse_server import SECRET_KEY, FakeLangfuse, unique_public_key
from tests.fakes.llm import step_of
from tests.fakes.openai_server import FakeLLMServer
from tests.test_ab import MARKER, variant_dir
from tests.test_eval_chain import read_reply
from tests.test_eval_cli import (
    GOLDEN,
    _eval,
    environment,  # noqa: F401 - a module fixture, used by name
)

pytest_plugins = ["tests.fakes.openai_server", "tests.fakes.langfuse_server"]


def _answer_systems(server: FakeLLMServer, since: int) -> list[str]:
    """The system messages of the answer step's requests after the first `since` requests."""
    requests = server.chat_requests[since:]
    return [r.system for r in requests if step_of(r.regex) == "answer"]


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr[-2000:]
    summary: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def test_eval_prompt_label_runs_the_variant(
    environment: dict[str, str],  # noqa: F811 - the fixture imported above
    fake_llm_server: FakeLLMServer,
    langfuse_server: FakeLangfuse,
    tmp_path: Path,
) -> None:
    fake_llm_server.responder = lambda r: read_reply(step_of(r.regex), r.system, r.user, r.regex)
    folder = variant_dir(tmp_path)
    env = environment | {
        "LLM_BASE_URL": fake_llm_server.base_url,
        "LLM_MODEL": "served",
        "CHAIN_PROMPTS_DIR": str(folder),
        # Users would be split; an eval serves one variant to every item all the same.
        "PROMPT_VARIANTS": "answer=production:50,prod-b:50",
    }
    args = ("--golden", str(GOLDEN), "--limit", "3", "--json")

    summary = _summary(_eval(env, *args))
    assert summary["prompt_label"] == "production"
    systems = _answer_systems(fake_llm_server, 0)
    assert systems
    assert not any(MARKER in s for s in systems)

    before = len(fake_llm_server.chat_requests)
    keys = {
        "LANGFUSE_PUBLIC_KEY": unique_public_key(),
        "LANGFUSE_SECRET_KEY": SECRET_KEY,
        "LANGFUSE_BASE_URL": langfuse_server.base_url,
    }
    summary = _summary(_eval(env | keys, *args, "--prompt-label", "prod-b"))
    assert summary["prompt_label"] == "prod-b"
    variants = str(summary["prompt_variants"]).split(",")
    assert "answer=prod-b" in variants
    assert "clarify=production" in variants  # no clarify.prod-b: its default ran
    systems = _answer_systems(fake_llm_server, before)
    assert systems
    assert all(MARKER in s for s in systems)
    [experiment] = langfuse_server.experiments()
    assert experiment["metadata"]["prompt_label"] == "prod-b"
    assert "answer=prod-b" in experiment["metadata"]["prompt_variants"]
    assert " prod-b " in experiment["name"]
    assert {s["name"] for s in experiment["scores"]} >= {"outcome_accuracy", "fact_recall"}

    # The same variant file named for one prompt; a label no prompt has is an error.
    summary = _summary(_eval(env, *args, "--prompt-label", "answer=prod-b"))
    assert "answer=prod-b" in str(summary["prompt_variants"]).split(",")
    done = _eval(env, *args, "--prompt-label", "prod-c")
    assert done.returncode == 2
    assert "no prompt has the variant 'prod-c'" in done.stderr
    assert "Traceback" not in done.stderr
