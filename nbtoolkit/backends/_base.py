"""What every backend client shares: one call shape, one way to be built and closed.

    client.ask(audio=None, *, text=None, images=None, **options) -> Reply
    await client.ask_async(...)                                   -> Reply
    client.stream(...)          # `for event in …` or `async for event in …` (nbtoolkit.events)

A client answers in one of two natures. Sync-native clients (:class:`Client`: Qwen-Audio and
Dialog on the SDK's threads, the audio-modalities client on httpx) implement :meth:`Client._answer`
and get ``ask_async`` by running it in a worker thread. The async-native realtime client implements
:meth:`AsyncClient._answer_async` and gets ``ask`` by running it on the loop that owns its
connection (the portal loop when nothing else does), which works in a plain script and in a running
Jupyter cell alike.

The arguments are checked here, once, for all of them: a wrong type raises a toolkit error that
says what was given and what is wanted.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from nbtoolkit._portal import portal_loop, run_sync
from nbtoolkit.audio.clip import Clip
from nbtoolkit.config import Endpoints, Secret
from nbtoolkit.connection import connect
from nbtoolkit.errors import AudioError, ConfigError, ConnectionLost, ImageError
from nbtoolkit.events import Done, StreamEvent
from nbtoolkit.ledger import Ledger, session_ledger
from nbtoolkit.results import Reply
from nbtoolkit.retry import RetryPolicy

__all__ = [
    "AsyncClient",
    "AudioInput",
    "Client",
    "Emit",
    "EventStream",
    "ImageInput",
    "Question",
    "check_seconds",
]

AudioInput = Clip | str | os.PathLike[str] | bytes
ImageInput = Any  # JPEG/PNG bytes, a path, or a PIL image
Emit = Callable[[StreamEvent], None]
T = TypeVar("T")

_AUDIO_TYPES = (Clip, str, os.PathLike, bytes, bytearray, memoryview)


@dataclass(frozen=True)
class Question:
    """One question, checked: spoken ``audio`` and/or ``text``, with ``images``."""

    audio: AudioInput | None = None
    text: str | None = None
    images: tuple[ImageInput, ...] = ()

    @classmethod
    def of(cls, audio: Any, text: Any, images: Any) -> Question:
        """Check the arguments every ``ask``/``ask_async``/``stream`` takes."""
        if audio is not None and not isinstance(audio, _AUDIO_TYPES):
            raise AudioError(
                f"audio= got {type(audio).__name__} {_short(audio)}",
                "pass a Clip, a file path, a URL or the file's bytes "
                "(for samples use Clip.from_array(samples, rate))",
            )
        if text is not None and not isinstance(text, str):
            raise ConfigError(
                f"text= must be a string, not {type(text).__name__} {_short(text)}",
                "pass the question as text='…' (or str(value))",
            )
        if images is None:
            pics: tuple[Any, ...] = ()
        elif isinstance(images, (bytes, bytearray, str, os.PathLike)) or not isinstance(
            images, Iterable
        ):
            pics = (images,)
        else:
            pics = tuple(images)
        for pic in pics:
            if not isinstance(pic, (bytes, bytearray, str, os.PathLike)) and not hasattr(
                pic, "save"
            ):
                raise ImageError(
                    f"images= got {type(pic).__name__} {_short(pic)}",
                    "pass JPEG/PNG bytes, a file path or a PIL image (or a list of them)",
                )
        if audio is None and not (text or "").strip():
            raise AudioError(
                "Nothing to ask: neither audio nor text was given",
                "pass audio=clip (a Clip, path, URL or bytes) and/or text='…'",
            )
        return cls(audio, text, pics)  # type: ignore[arg-type]  # checked against _AUDIO_TYPES


def _short(value: Any) -> str:
    text = repr(value)
    return f"({text[:40]}…)" if len(text) > 40 else f"({text})"


def check_seconds(name: str, value: Any, *, optional: bool = False, example: int = 60) -> None:
    """A wait option: a number of seconds above 0 and under a day (``None`` too if ``optional``:
    no bound of that kind)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 86_400:
        raise ConfigError(
            f"{name}= must be a number of seconds above 0, not {value!r}",
            f"e.g. {name}={example}" + (" (or None to turn it off)" if optional else ""),
        )


def _check_options(options: Mapping[str, Any], allowed: Iterable[str], client: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(
            f"{client}.ask() got unknown option(s) {', '.join(unknown)}",
            f"the options {client} takes are: {known}",
        )


class Client:
    """The shape of every client. ``endpoints=None`` means :func:`nbtoolkit.connect` with
    ``api_key`` (the cloud with a key, from the argument or ``DASHSCOPE_API_KEY``, else the offline
    engine); ``ledger=None`` the session ledger; ``retry=None`` the
    default :class:`~nbtoolkit.retry.RetryPolicy`. ``timeout`` bounds each wait, in seconds."""

    #: The options this client's ``ask`` takes besides audio/text/images.
    options: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        endpoints: Endpoints | None = None,
        *,
        model: str,
        api_key: str | Secret | None = None,
        ledger: Ledger | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
    ) -> None:
        if not isinstance(model, str):
            raise ConfigError(f"model= must be a model name, not {model!r}", "e.g. model='…'")
        check_seconds("timeout", timeout)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigError(
                f"retry= must be a RetryPolicy, not {type(retry).__name__}",
                "e.g. retry=nbtoolkit.RetryPolicy(max_retries=3)",
            )
        if ledger is not None and not isinstance(ledger, Ledger):
            raise ConfigError(
                f"ledger= must be a Ledger, not {type(ledger).__name__}",
                "e.g. ledger=nbtoolkit.Ledger(budget_cny=1.0) (or leave it out)",
            )
        if endpoints is not None and not isinstance(endpoints, Endpoints):
            raise ConfigError(
                f"endpoints= must be Endpoints, not {type(endpoints).__name__}",
                "use nbtoolkit.connect() (or leave it out)",
            )
        if endpoints is not None and api_key is not None:
            raise ConfigError(
                "Both endpoints= and api_key= were given; endpoints already carry a key",
                "pass one: api_key='sk-…' (the cloud) or endpoints=nbtoolkit.connect(…)",
            )
        self.endpoints = endpoints if endpoints is not None else connect(api_key, quiet=True)
        self.model = model
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = float(timeout)
        self._ledger = ledger

    @property
    def ledger(self) -> Ledger:
        """Where usage is recorded and the budget checked (the session ledger unless given)."""
        return self._ledger if self._ledger is not None else session_ledger()

    @property
    def local(self) -> bool:
        """True when the offline engine answers."""
        return self.endpoints.local

    # ------------------------------------------------------------------ the one call shape
    def ask(
        self,
        audio: AudioInput | None = None,
        *,
        text: str | None = None,
        images: ImageInput | Iterable[ImageInput] | None = None,
        **options: Any,
    ) -> Reply:
        """Ask with speech (``audio``) and/or ``text`` (and ``images`` where the backend sees);
        wait for the whole answer."""
        question = self._question(audio, text, images, options)
        return self._answer(question, options, None)

    async def ask_async(
        self,
        audio: AudioInput | None = None,
        *,
        text: str | None = None,
        images: ImageInput | Iterable[ImageInput] | None = None,
        **options: Any,
    ) -> Reply:
        """:meth:`ask`, awaited: the event loop stays free while the answer comes."""
        question = self._question(audio, text, images, options)
        return await self._answer_awaited(question, options)

    def stream(
        self,
        audio: AudioInput | None = None,
        *,
        text: str | None = None,
        images: ImageInput | Iterable[ImageInput] | None = None,
        **options: Any,
    ) -> EventStream:
        """The answer as :mod:`nbtoolkit.events`, as they arrive, ending with ``Done(reply)``.
        Iterate it with ``for`` or ``async for``."""
        question = self._question(audio, text, images, options)
        return self._events_of(question, options)

    def _question(self, audio: Any, text: Any, images: Any, options: Mapping[str, Any]) -> Question:
        _check_options(options, self.options, type(self).__name__)
        return Question.of(audio, text, images)

    def _answer(self, question: Question, options: Mapping[str, Any], emit: Emit | None) -> Reply:
        raise NotImplementedError  # each client answers in its own way

    async def _answer_awaited(self, question: Question, options: Mapping[str, Any]) -> Reply:
        return await asyncio.to_thread(self._answer, question, options, None)

    def _events_of(self, question: Question, options: Mapping[str, Any]) -> EventStream:
        return EventStream(
            lambda emit: self._answer(question, options, emit), None, self._event_bound()
        )

    def _event_bound(self) -> float:
        """Longest wait for the next event of a stream: the client's own bound, plus a margin
        for its error to arrive first."""
        return self.timeout + 5.0

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release connections (the client can be used again: it reconnects when asked)."""

    async def aclose(self) -> None:
        """:meth:`close`, awaited."""
        await asyncio.to_thread(self.close)

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        where = "offline engine" if self.endpoints.local else f"cloud ({self.endpoints.region})"
        return f"{type(self).__name__}(model={self.model!r}, {where})"


class AsyncClient(Client):
    """A client whose connection lives on an event loop (its *home*): the loop it connected on,
    or the portal loop when :meth:`ask` connects it from synchronous code. Calls from another
    loop or thread are run on the home loop."""

    def __init__(self, endpoints: Endpoints | None = None, **kwargs: Any) -> None:
        super().__init__(endpoints, **kwargs)
        self._home: asyncio.AbstractEventLoop | None = None

    async def _answer_async(
        self, question: Question, options: Mapping[str, Any], emit: Emit | None
    ) -> Reply:
        raise NotImplementedError  # each client answers in its own way

    def _call_bound(self) -> float:
        """Longest a synchronous call waits for its coroutine (a backstop: the coroutine has
        bounds of its own)."""
        return self.timeout + 30.0

    def _home_now(self) -> asyncio.AbstractEventLoop | None:
        home = self._home
        return None if home is None or home.is_closed() or not home.is_running() else home

    async def _at_home(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await ``make()`` on the home loop (here, if this loop is home or there is none yet)."""
        home, here = self._home_now(), asyncio.get_running_loop()
        if home is None or home is here:
            return await make()
        future = asyncio.run_coroutine_threadsafe(_await(make), home)
        return await asyncio.wrap_future(future)

    def _sync(self, make: Callable[[], Awaitable[T]], what: str) -> T:
        """Run ``make()`` to completion from synchronous code."""
        home = self._home_now()
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if home is not None and home is here:
            raise ConfigError(
                f"This {type(self).__name__} is connected on the event loop running here, "
                "so a blocking call would wait on itself",
                f"use `await client.{what}_async(...)` (or `await client.aclose()`) here",
            )
        if home is None or home is portal_loop():
            return run_sync(_await(make), timeout=self._call_bound(), what=what)
        future = asyncio.run_coroutine_threadsafe(_await(make), home)
        try:
            return future.result(self._call_bound())
        except TimeoutError:
            future.cancel()
            raise ConnectionLost(
                f"{what} did not finish within {self._call_bound():.0f} s", "try again"
            ) from None

    async def _answer_awaited(self, question: Question, options: Mapping[str, Any]) -> Reply:
        return await self._at_home(lambda: self._answer_async(question, options, None))

    def _events_of(self, question: Question, options: Mapping[str, Any]) -> EventStream:
        return EventStream(
            None,
            lambda emit: self._answer_async(question, options, emit),
            self._event_bound(),
            home=self,
        )

    def _answer(self, question: Question, options: Mapping[str, Any], emit: Emit | None) -> Reply:
        return self._sync(lambda: self._answer_async(question, options, emit), "ask")

    async def _aclose(self) -> None:
        """Close the connection, on its home loop."""

    def close(self) -> None:
        if self._home_now() is None:
            self._home = None
            return
        self._sync(self._aclose, "close")

    async def aclose(self) -> None:
        await self._at_home(self._aclose)


async def _await(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


_END = object()


class EventStream:
    """The events of one answer: iterate with ``for`` (blocking) or ``async for``.

    Made by ``client.stream(...)``; the question is sent when iteration starts. Each wait for the
    next event is bounded; the last event is :class:`~nbtoolkit.events.Done`, or the iteration
    raises the client's error (with ``partial``).
    """

    def __init__(
        self,
        run: Callable[[Emit], Reply] | None,
        run_async: Callable[[Emit], Awaitable[Reply]] | None,
        bound: float,
        *,
        home: AsyncClient | None = None,
    ) -> None:
        self._run, self._run_async, self._bound, self._home = run, run_async, bound, home
        self._started = False
        #: The whole answer, once the stream has ended with ``Done``.
        self.reply: Reply | None = None

    def _start(
        self, put: Callable[[Any], None], *, reader_awaits: bool
    ) -> asyncio.Task[None] | None:
        """Start answering, every event (then the end, or the error) going to ``put``. A
        sync-native client answers on a thread; an async one on its home loop: for a reader that
        awaits (``async for``) as a task of the reader's loop (returned), for one that blocks
        (``for``) on a thread that waits for it."""
        if self._started:
            raise ConfigError("This stream was already read", "call client.stream(...) again")
        self._started = True
        if self._run is not None:
            run = self._run
            threading.Thread(
                target=_produce, args=(lambda: run(put), put), name="nbtoolkit-stream", daemon=True
            ).start()
            return None
        assert self._run_async is not None and self._home is not None
        run_async, home = self._run_async, self._home

        async def produce() -> None:
            try:
                put(Done(await home._at_home(lambda: run_async(put))))
            except BaseException as exc:  # handed to the reader, who raises it
                put(exc)
            put(_END)

        if reader_awaits:
            return asyncio.ensure_future(produce())
        threading.Thread(
            target=home._sync, args=(produce, "stream"), name="nbtoolkit-stream", daemon=True
        ).start()
        return None

    def _take(self, item: Any) -> StreamEvent | None:
        """The event ``item`` is (None at the end); raises what the answer raised."""
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, Done):
            self.reply = item.reply
        event: StreamEvent = item
        return event

    def _silent(self) -> ConnectionLost:
        return ConnectionLost(
            f"No event of the answer for {self._bound:.0f} s", "the server may be stuck; try again"
        )

    def __iter__(self) -> Iterator[StreamEvent]:
        items: queue.Queue[Any] = queue.Queue()
        self._start(items.put, reader_awaits=False)
        while True:
            try:
                event = self._take(items.get(timeout=self._bound))
            except queue.Empty:
                raise self._silent() from None
            if event is None:
                return
            yield event

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        task = self._start(put, reader_awaits=True)
        try:
            while True:
                try:
                    event = self._take(await asyncio.wait_for(items.get(), self._bound))
                except TimeoutError:
                    raise self._silent() from None
                if event is None:
                    return
                yield event
        finally:
            if task is not None and not task.done():
                task.cancel()


def _produce(run: Callable[[], Reply], put: Callable[[Any], None]) -> None:
    """Run a sync-native answer on this thread: its end (or error) goes to ``put``."""
    try:
        put(Done(run()))
    except BaseException as exc:  # handed to the reader, who raises it
        put(exc)
    put(_END)
