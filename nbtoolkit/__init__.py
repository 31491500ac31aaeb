"""nbtoolkit: Jupyter widgets and clients for DashScope speech/audio LLMs, with an offline engine.

Start with ``nbtoolkit.connect()``; see the notebooks in ``notebooks/`` for each feature.
"""

from nbtoolkit.audio import Clip
from nbtoolkit.cassettes import record, replay
from nbtoolkit.config import Endpoints, Secret
from nbtoolkit.connection import connect
from nbtoolkit.errors import (
    AudioError,
    AuthError,
    BackendError,
    BudgetExceeded,
    ConfigError,
    ConnectionLost,
    ImageError,
    NbToolkitError,
    ProtocolError,
    RateLimited,
    ServerError,
)
from nbtoolkit.ledger import Ledger, session_ledger, set_session_budget
from nbtoolkit.results import Reply, Timeline, Turn, Usage

__version__ = "0.1.0"

# Clients and widgets pull in the dashscope SDK, websockets, httpx and ipywidgets: import them on first
# use so `import nbtoolkit` stays quick.
_LAZY = {
    "QwenAudio": "nbtoolkit.backends.qwen_audio",
    "Chat": "nbtoolkit.backends.qwen_audio",
    "Dialog": "nbtoolkit.backends.dialog",
    "OmniRealtime": "nbtoolkit.backends.omni",
    "AudioModalitiesClient": "nbtoolkit.backends.audio_modalities",
    "serve_audio_modalities": "nbtoolkit.local.audio_modalities_server",
    "Recorder": "nbtoolkit.widgets",
    "Player": "nbtoolkit.widgets",
    "VoiceChat": "nbtoolkit.voice_chat",
    "run_batch": "nbtoolkit.batch",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nbtoolkit' has no attribute {name!r}")


__all__ = [
    "AudioError",
    "AudioModalitiesClient",
    "AuthError",
    "BackendError",
    "BudgetExceeded",
    "Chat",
    "Clip",
    "ConfigError",
    "ConnectionLost",
    "Dialog",
    "Endpoints",
    "ImageError",
    "Ledger",
    "NbToolkitError",
    "OmniRealtime",
    "Player",
    "ProtocolError",
    "QwenAudio",
    "RateLimited",
    "Recorder",
    "Reply",
    "Secret",
    "ServerError",
    "Timeline",
    "Turn",
    "Usage",
    "VoiceChat",
    "connect",
    "record",
    "replay",
    "run_batch",
    "serve_audio_modalities",
    "session_ledger",
    "set_session_budget",
]
