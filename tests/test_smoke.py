"""The embedded engines' smoke test: it runs here, and a child that dies of a CPU fault is
reported as such (with what to do) instead of taking the caller down."""

import json
import os
import subprocess
import sys

import pytest

from app.errors import LLMUnavailableError
from app.llm.base import Message
from app.smoke import UnavailableLLM, probe_embedded_llm
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

_SIGILL = "import os, signal; os.kill(os.getpid(), signal.SIGILL)"


def test_smoke_command_runs_every_embedded_engine() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "smoke"],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "LLM_BASE_URL": ""},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) == {"embed_en", "embed_ru", "llm"}
    assert result["llm"]["output"] in {"YES", "NO"}


async def test_probe_passes_on_a_working_engine() -> None:
    assert await probe_embedded_llm() is None


async def test_probe_names_a_cpu_fault_and_the_fix() -> None:
    problem = await probe_embedded_llm(command=(sys.executable, "-c", _SIGILL))
    assert problem is not None
    assert "SIGILL" in problem
    assert "scripts/setup" in problem


async def test_probe_reports_a_failure_by_its_last_line() -> None:
    command = (sys.executable, "-c", "raise SystemExit('cannot load the GGUF model')")
    problem = await probe_embedded_llm(command=command)
    assert problem is not None
    assert problem.endswith("cannot load the GGUF model")


async def test_probe_gives_up_on_a_hung_engine() -> None:
    command = (sys.executable, "-c", "import time; time.sleep(60)")
    problem = await probe_embedded_llm(timeout_s=1.0, command=command)
    assert problem is not None
    assert "within 1 s" in problem


async def test_unavailable_model_fails_every_call_with_its_reason() -> None:
    llm = UnavailableLLM("the embedded llama.cpp crashed with SIGILL")
    with pytest.raises(LLMUnavailableError, match="SIGILL"):
        await llm.complete([Message("user", "hello")])
    with pytest.raises(LLMUnavailableError, match="SIGILL"):
        await llm.score_options([Message("user", "hello")], ["YES", "NO"])
