"""Qwen-Audio through the official ``dashscope`` SDK (``MultiModalConversation``), cloud or local.

    qa = QwenAudio()                                   # cloud with a key, else the offline engine
    qa.ask(clip, text="What is said in the audio?").text
    for event in qa.stream("speech.wav"): print(getattr(event, "delta", ""), end="")
    chat = qa.chat(system="Answer briefly."); chat.ask(clip); chat.ask(text="And then?")

Audio may be a :class:`~nbtoolkit.audio.Clip`, a path (or ``file://`` URL), encoded bytes, or a URL
(``http(s)://``, ``oss://``, ``data:``) passed verbatim. Everything but URLs is checked against the
service's limits (10 MB, only the first 30 s used) and sent as a 16 kHz WAV through the SDK's own
upload flow, which works for the cloud and the local server alike. 16 kHz because the model listens
at that rate, and it keeps 30 s under 1 MB.

The SDK never raises for a service error; it returns ``status_code != 200``. Those become
:mod:`nbtoolkit.errors` (401/403 → AuthError, 429 → RateLimited, 5xx → ServerError, 400 →
ProtocolError). Connect failures and the statuses of :class:`~nbtoolkit.retry.RetryPolicy` are
retried with jittered backoff (Retry-After honoured up to its cap) — never once a stream has begun;
a stream that breaks raises with ``partial=`` the text so far. Each retry is logged at INFO on the
``nbtoolkit.backends.qwen_audio`` logger.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends import _sdk
from nbtoolkit.backends._base import AudioInput, Client, Emit, Question
from nbtoolkit.config import Endpoints, Secret
from nbtoolkit.errors import (
    AudioError,
    BackendError,
    ConfigError,
    ConnectionLost,
    ImageError,
    ProtocolError,
)
from nbtoolkit.events import TextDelta
from nbtoolkit.ledger import Ledger
from nbtoolkit.protocols.conversation import (
    MAX_AUDIO_BYTES,
    MAX_AUDIO_SECONDS,
    finish_reason,
    output_text,
)
from nbtoolkit.protocols.errors import error_for
from nbtoolkit.protocols.params import GENERATION_OPTIONS, conversation_parameters_problem
from nbtoolkit.results import Reply, Usage
from nbtoolkit.retry import RetryPolicy, parse_retry_after, retrying

__all__ = ["AudioInput", "Chat", "QwenAudio"]


_URL_PREFIXES = ("http://", "https://", "oss://", "data:")
_SEND_RATE = 16000
_BACKEND = "qwen_audio"
T = TypeVar("T")


class QwenAudio(Client):
    """A Qwen-Audio client. ``endpoints=None`` means ``nbtoolkit.connect(quiet=True)``.

    ``ask`` passes generation parameters through as options (``temperature``, ``top_p``, ``top_k``,
    ``seed``, ``max_tokens``, ``repetition_penalty``, ``presence_penalty``, ``stop``,
    ``enable_search``), each checked against its documented range before anything is sent.

    ``on_too_long``: audio over 30 s (or a file over 10 MB) is trimmed to its first 30 s with a
    warning (``"trim"``, what the service does anyway) or refused with an :class:`AudioError`
    (``"refuse"``). ``timeout`` bounds each wait for the server in seconds.
    """

    options = GENERATION_OPTIONS

    def __init__(
        self,
        endpoints: Endpoints | None = None,
        *,
        model: str = "qwen-audio-turbo-latest",
        api_key: str | Secret | None = None,
        ledger: Ledger | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        on_too_long: Literal["trim", "refuse"] = "trim",
    ) -> None:
        if on_too_long not in ("trim", "refuse"):
            raise ConfigError(
                f"on_too_long={on_too_long!r} is not an option", 'use "trim" or "refuse"'
            )
        super().__init__(
            endpoints, model=model, api_key=api_key, ledger=ledger, retry=retry, timeout=timeout
        )
        self.on_too_long = on_too_long
        #: The last complete answer.
        self.last_reply: Reply | None = None

    def chat(self, system: str | None = None) -> Chat:
        """A conversation that keeps its history (``system`` is an optional system prompt)."""
        return Chat(self, system)

    def _question(self, audio: Any, text: Any, images: Any, options: Mapping[str, Any]) -> Question:
        question = super()._question(audio, text, images, options)
        problem = conversation_parameters_problem(options)
        if problem is not None:
            raise problem.error(problem.param.removeprefix("parameters.") + "=")
        return question

    def _answer(self, question: Question, options: Mapping[str, Any], emit: Emit | None) -> Reply:
        return self._reply_to([self._user_message(question)], options, emit)

    def _reply_to(
        self, messages: list[dict[str, Any]], options: Mapping[str, Any], emit: Emit | None
    ) -> Reply:
        if emit is None:
            return self._complete(messages, options)
        for delta in self._stream(messages, options):
            emit(TextDelta(delta))
        assert self.last_reply is not None  # set by _stream once the answer is complete
        return self.last_reply

    # ------------------------------------------------------------------ audio and messages
    @property
    def _where(self) -> str:
        return (
            "the local nbtoolkit server"
            if self.endpoints.local
            else f"DashScope ({self.endpoints.region})"
        )

    def _too_long(self, what: str) -> None:
        if self.on_too_long == "refuse":
            raise AudioError(
                f"{what}; Qwen-Audio takes files up to 10 MB and uses only the first 30 s",
                "cut it first (e.g. clip[:30]) or use QwenAudio(on_too_long='trim')",
            )
        warnings.warn(
            f"{what}; sending at most its first 30 s as a 16 kHz WAV (Qwen-Audio uses no more). "
            "Pass on_too_long='refuse' to get an error instead.",
            stacklevel=_user_frame(),
        )

    def _clip(self, audio: Clip | str | os.PathLike[str] | bytes) -> Clip:
        size = None
        if isinstance(audio, (bytes, bytearray, memoryview)):
            size = len(audio)
        elif not isinstance(audio, Clip):
            path = Path(str(audio)[len("file://") :] if str(audio).startswith("file://") else audio)
            size = path.stat().st_size if path.is_file() else None
        if size is not None and size > MAX_AUDIO_BYTES:
            self._too_long(f"The audio file is {size / 1e6:.1f} MB (over 10 MB)")
        clip = Clip.load(audio)
        if clip.duration > MAX_AUDIO_SECONDS:
            if size is None or size <= MAX_AUDIO_BYTES:
                self._too_long(f"The audio is {clip.duration:.1f} s long")
            clip = clip[:MAX_AUDIO_SECONDS]
        return clip.resample(_SEND_RATE) if clip.rate > _SEND_RATE else clip

    def _audio_ref(self, audio: AudioInput) -> str:
        if isinstance(audio, str) and audio.lower().startswith(_URL_PREFIXES):
            return audio
        clip = self._clip(audio)
        with tempfile.TemporaryDirectory(prefix="nbtoolkit-") as tmp:
            path = clip.save(Path(tmp) / "audio.wav")
            return self._retrying(lambda: self._upload(path))

    def _upload(self, path: Path) -> str:
        try:
            return _sdk.upload_file(self.endpoints, self.model, path)
        except Exception as exc:
            err = self._translate(exc, started=False)
            if err is None:
                raise
            raise err from exc

    def _user_message(self, question: Question) -> dict[str, Any]:
        """The user message, with local audio checked and uploaded (after the budget check, so a
        refused call uploads nothing)."""
        if question.images:
            raise ImageError(
                "Qwen-Audio listens and reads; it does not take images",
                "ask about images with Dialog (visual Q&A) or OmniRealtime",
            )
        self.ledger.check(local=self.endpoints.local)
        content: list[dict[str, str]] = []
        if question.audio is not None:
            content.append({"audio": self._audio_ref(question.audio)})
        if question.text:
            content.append({"text": question.text})
        return {"role": "user", "content": content}

    # ------------------------------------------------------------------ calls
    def _error(self, resp: Any, partial: Any = None) -> BackendError:
        headers = {str(k).lower(): v for k, v in (resp.get("headers") or {}).items()}
        return error_for(
            int(resp.status_code),
            resp.code,
            resp.message,
            where=self._where[0].upper() + self._where[1:],
            request_id=resp.request_id or None,
            retry_after=parse_retry_after(headers.get("retry-after")),
            partial=partial,
            local=self.endpoints.local,
        )

    def _translate(
        self, exc: BaseException, *, started: bool, partial: Any = None
    ) -> BackendError | None:
        return _sdk.translate(
            exc,
            where=self._where,
            timeout=self.timeout,
            started=started,
            partial=partial,
            local=self.endpoints.local,
        )

    def _retryable(self, err: BackendError) -> bool:
        if err.code == _sdk.CONNECT_FAILED:
            return True
        return err.status is not None and self.retry.retryable(err.status)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """``attempt()``, retried per :attr:`retry` for connect failures and retryable statuses;
        a Retry-After beyond the policy's cap is raised at once (see :mod:`nbtoolkit.retry`)."""
        return retrying(attempt, self.retry, retryable=self._retryable)

    def _call(
        self, messages: list[dict[str, Any]], options: Mapping[str, Any], *, stream: bool
    ) -> Any:
        try:
            return _sdk.conversation_call(
                self.endpoints,
                self.model,
                messages,
                stream=stream,
                timeout=self.timeout,
                parameters=options,
            )
        except Exception as exc:
            err = self._translate(exc, started=False)
            if err is None:
                raise
            raise err from exc

    def _finish(self, text: str, resp: Any, started: float, first: float | None, raw: Any) -> Reply:
        latency = time.monotonic() - started
        usage = Usage.from_dashscope(resp.usage, model=self.model, local=self.endpoints.local)
        reply = Reply(
            text,
            usage=usage,
            request_id=resp.request_id or None,
            latency=latency,
            first_token_latency=first if first is not None else latency,
            model=self.model,
            local=self.endpoints.local,
            raw=raw,
        )
        self.ledger.record(usage, backend=_BACKEND, request_id=reply.request_id, latency=latency)
        self.last_reply = reply
        return reply

    def _complete(self, messages: list[dict[str, Any]], options: Mapping[str, Any]) -> Reply:
        started = time.monotonic()

        def attempt() -> Any:
            resp = self._call(messages, options, stream=False)
            if resp.status_code != 200:
                raise self._error(resp)
            return resp

        resp = self._retrying(attempt)
        return self._finish(output_text(resp.output), resp, started, None, resp)

    def _stream(self, messages: list[dict[str, Any]], options: Mapping[str, Any]) -> Iterator[str]:
        started = time.monotonic()

        def open_stream() -> tuple[Any, Iterator[Any]]:
            chunks = self._call(messages, options, stream=True)
            try:
                head = next(chunks)
            except StopIteration:
                raise ConnectionLost(
                    f"{self._where} closed the stream before answering", "try again"
                ) from None
            except Exception as exc:
                err = self._translate(exc, started=False)
                if err is None:
                    raise
                raise err from exc
            if head.status_code != 200:
                raise self._error(head)
            return head, chunks

        head, rest = self._retrying(open_stream)
        text, first, last, done = "", None, head, False
        resp = head
        try:
            while True:
                if resp.status_code != 200 and resp.code == "Unknown":
                    raise ProtocolError(  # the SDK's label for a chunk that was not JSON
                        f"The stream from {self._where} held a chunk that is not JSON: "
                        f"{str(resp.message)[:60]!r}",
                        "ask again; the text received so far is in err.partial",
                        partial=text,
                    )
                if resp.status_code != 200:
                    raise self._error(resp, partial=text)
                delta = output_text(resp.output)
                if delta:
                    if first is None:
                        first = time.monotonic() - started
                    text += delta
                    yield delta
                last, done = resp, finish_reason(resp.output) is not None
                if done:
                    break
                resp = next(rest)
        except StopIteration:
            pass
        except BackendError:
            raise
        except Exception as exc:
            err = self._translate(exc, started=True, partial=text)
            if err is None:
                raise
            raise err from exc
        finally:
            close = getattr(rest, "close", None)
            if close is not None:
                close()  # a reader that stops early releases the connection now, not at GC
        if not done:
            raise ConnectionLost(
                f"The stream from {self._where} ended before the answer was complete",
                "the text received so far is in err.partial; ask again for the full answer",
                partial=text,
            )
        self._finish(text, last, started, first, last)


class Chat:
    """A multi-turn conversation with :class:`QwenAudio`; each answer is appended to the history as
    the service returned it, and sent back with the next question. ``ask`` takes what
    :meth:`QwenAudio.ask` takes."""

    def __init__(self, client: QwenAudio, system: str | None = None) -> None:
        self.client = client
        self.messages: list[dict[str, Any]] = []
        if system:
            self.messages.append({"role": "system", "content": [{"text": system}]})

    def ask(
        self,
        audio: AudioInput | None = None,
        *,
        text: str | None = None,
        images: Any = None,
        **options: Any,
    ) -> Reply:
        """Ask within the conversation; the question and answer join the history on success."""
        question = self.client._question(audio, text, images, options)
        user = self.client._user_message(question)
        reply = self.client._complete([*self.messages, user], options)
        message = reply.raw.output.choices[0].message
        content = [dict(item) for item in message.content]
        self.messages += [user, {"role": message.role or "assistant", "content": content}]
        return reply

    async def ask_async(
        self,
        audio: AudioInput | None = None,
        *,
        text: str | None = None,
        images: Any = None,
        **options: Any,
    ) -> Reply:
        """:meth:`ask`, awaited."""
        return await asyncio.to_thread(lambda: self.ask(audio, text=text, images=images, **options))

    def __len__(self) -> int:
        """Number of completed question/answer turns."""
        return sum(1 for m in self.messages if m["role"] == "assistant")


def _user_frame() -> int:
    """The ``stacklevel`` of the first frame outside nbtoolkit: a warning points at the user's
    line whichever public method led to it."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("nbtoolkit"):
        frame, level = frame.f_back, level + 1
    return level
