"""Endpoints and API keys.

Keys live in :class:`Secret`, whose ``repr``/``str``/``format`` never show the value; every Secret's value
is also registered so :func:`scrub_secrets` can remove it from error messages and logs (the masking
itself lives in ``nbtoolkit._scrub``, below the error hierarchy).
"""

from __future__ import annotations

import getpass
import logging
import os
from dataclasses import dataclass, field
from typing import Literal

from nbtoolkit._scrub import MASK, SecretFilter, register, scrub_secrets
from nbtoolkit.errors import ConfigError

__all__ = [
    "LOOPBACK_HOSTS",
    "MIN_KEY_LENGTH",
    "REGIONS",
    "Endpoints",
    "Secret",
    "SecretFilter",
    "cloud_endpoints",
    "get_api_key",
    "local_endpoints",
    "scrub_secrets",
    "scrubbed_logger",
]

#: Host names that mean "this machine" (urlparse().hostname strips IPv6 brackets).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Shorter keys are refused: no real key is this short (a DashScope key is ``sk-`` and 32 hex
#: digits, a local server's token 32 characters), and masking a short value in messages would
#: hide ordinary words while a mistyped key went unnoticed.
MIN_KEY_LENGTH = 16


class Secret:
    """A credential. Use :meth:`reveal` at the one place it is sent; nothing else shows it."""

    __slots__ = ("__value", "__weakref__")

    def __init__(self, value: str, *, min_length: int = MIN_KEY_LENGTH) -> None:
        """``min_length`` is for keys of other services (an audio-modalities server of someone
        else's may take any key, e.g. "any-api-key"); DashScope keys and our tokens keep the
        default."""
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                "An API key must be a non-empty string",
                "set DASHSCOPE_API_KEY or pass api_key='sk-…'",
            )
        value = value.strip()
        if len(value) < min_length:
            # the message never shows the value, not even in part
            raise ConfigError(
                f"An API key or token of {len(value)} characters is too short to be real "
                f"(at least {MIN_KEY_LENGTH})",
                "paste the whole key: a DashScope key is 'sk-' followed by 32 hex digits; a token "
                f"of your own needs {MIN_KEY_LENGTH} characters or more (or leave it out: "
                "nbtoolkit.connect() and the local server make their own)",
            )
        self.__value = value
        register(self)

    def reveal(self) -> str:
        """The raw value — only for the Authorization header or the SDK call that needs it."""
        return self.__value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.reveal() == self.__value

    def __hash__(self) -> int:
        return hash(self.__value)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling a key (e.g. to a Dask worker) must be a deliberate act: reveal() and pass the str.
        raise TypeError(
            "Secret cannot be pickled; pass secret.reveal() explicitly where it must travel"
        )

    def _repr_html_(self) -> str:
        return f"<code>{self!r}</code>"


def scrubbed_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with a :class:`SecretFilter` attached (once)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, SecretFilter) for f in logger.filters):
        logger.addFilter(SecretFilter())
    return logger


def get_api_key(api_key: str | Secret | None = None, *, prompt: bool = False) -> Secret | None:
    """The DashScope key from the argument, else ``DASHSCOPE_API_KEY``, else (if ``prompt``) a prompt.

    Returns ``None`` when no key is available and ``prompt`` is false: the caller then uses the offline
    engine.
    """
    if isinstance(api_key, Secret):
        return api_key
    if api_key:
        return Secret(api_key)
    env = os.environ.get("DASHSCOPE_API_KEY", "").strip()
    if env:
        return Secret(env)
    if prompt:
        typed = getpass.getpass("DashScope API key (input hidden): ")
        return Secret(typed) if typed.strip() else None
    return None


Region = Literal["cn", "intl"]

#: Cloud hosts per region: mainland China (Beijing) and international (Singapore).
REGIONS: dict[str, str] = {
    "cn": "dashscope.aliyuncs.com",
    "intl": "dashscope-intl.aliyuncs.com",
}


@dataclass(frozen=True)
class Endpoints:
    """Where each protocol lives, and the key to use there. ``local`` is true for the offline engine."""

    http_base: str  # …/api/v1 (MultiModalConversation)
    websocket_base: str  # …/api-ws/v1/inference (MultiModalDialog)
    realtime_url: str  # …/api-ws/v1/realtime (Omni; clients append ?model=)
    audio_modalities_url: str | None  # …/audio/chat/completions (local engine only)
    api_key: Secret = field(repr=True)
    local: bool = False
    region: str = "local"

    def _repr_html_(self) -> str:
        where = "offline engine on 127.0.0.1" if self.local else f"DashScope cloud ({self.region})"
        return f"<b>nbtoolkit endpoints</b>: {where}<br><code>{self.http_base}</code>"


def cloud_endpoints(api_key: Secret, region: str = "cn") -> Endpoints:
    """Endpoints of the DashScope cloud in ``region`` ("cn" or "intl")."""
    if region not in REGIONS:
        raise ConfigError(f"Unknown region {region!r}", f"use one of {sorted(REGIONS)}")
    host = REGIONS[region]
    return Endpoints(
        http_base=f"https://{host}/api/v1",
        websocket_base=f"wss://{host}/api-ws/v1/inference",
        realtime_url=f"wss://{host}/api-ws/v1/realtime",
        audio_modalities_url=None,
        api_key=api_key,
        local=False,
        region=region,
    )


def local_endpoints(base_url: str, token: Secret) -> Endpoints:
    """Endpoints of a local server at ``base_url`` (e.g. ``http://127.0.0.1:8765``)."""
    base = base_url.rstrip("/")
    ws = "ws" + base[len("http") :]
    return Endpoints(
        http_base=f"{base}/api/v1",
        websocket_base=f"{ws}/api-ws/v1/inference",
        realtime_url=f"{ws}/api-ws/v1/realtime",
        audio_modalities_url=f"{base}/audio/chat/completions",
        api_key=token,
        local=True,
        region="local",
    )
