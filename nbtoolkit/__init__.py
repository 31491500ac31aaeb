"""nbtoolkit: Jupyter widgets and clients for DashScope speech/audio LLMs, with an offline engine.

Start with ``nbtoolkit.connect()``; see the notebooks in ``notebooks/`` for each feature.
"""

import importlib

from nbtoolkit.audio import Clip
from nbtoolkit.cassettes import record, replay
from nbtoolkit.config import Endpoints, Secret
from nbtoolkit.connection import connect, local_server
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
from nbtoolkit.results import LATENCIES, Reply, Timeline, Usage
from nbtoolkit.retry import RetryPolicy

__version__ = "0.1.0"

# Clients and widgets pull in the dashscope SDK, websockets, httpx and ipywidgets: import them on first
# use so `import nbtoolkit` stays quick.
_LAZY = {
    "QwenAudio": "nbtoolkit.backends.qwen_audio",
    "Chat": "nbtoolkit.backends.qwen_audio",
    "Dialog": "nbtoolkit.backends.dialog",
    "DialogLive": "nbtoolkit.backends.dialog_live",
    "OmniRealtime": "nbtoolkit.backends.omni",
    "ReconnectPolicy": "nbtoolkit.backends.omni",
    "AudioModalitiesClient": "nbtoolkit.backends.audio_modalities",
    "serve_audio_modalities": "nbtoolkit.audio_modalities_server",
    "Recorder": "nbtoolkit.widgets",
    "Player": "nbtoolkit.widgets",
    "is_headless": "nbtoolkit.widgets",
    "play": "nbtoolkit.display",
    "dominant_pitch": "nbtoolkit.audio.features",
    "to_jpeg": "nbtoolkit.backends._dialog_sdk",
    "Faults": "nbtoolkit.local.faults",
    "plot_waveform": "nbtoolkit.display",
    "plot_spectrogram": "nbtoolkit.display",
    "plot_timeline": "nbtoolkit.display",
    "plot_usage": "nbtoolkit.display",
    "VoiceChat": "nbtoolkit.voice_chat",
    "run_batch": "nbtoolkit.batch",
    "quoted": "nbtoolkit.batch",
    "wer": "nbtoolkit.batch",
    "spoken": "nbtoolkit.demo",
    "words": "nbtoolkit.demo",
}


def __getattr__(name: str) -> object:
    if name == "events":
        return importlib.import_module("nbtoolkit.events")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nbtoolkit' has no attribute {name!r}")


__all__ = [
    "LATENCIES",
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
    "DialogLive",
    "Endpoints",
    "Faults",
    "ImageError",
    "Ledger",
    "NbToolkitError",
    "OmniRealtime",
    "Player",
    "ProtocolError",
    "QwenAudio",
    "RateLimited",
    "ReconnectPolicy",
    "Recorder",
    "Reply",
    "RetryPolicy",
    "Secret",
    "ServerError",
    "Timeline",
    "Usage",
    "VoiceChat",
    "connect",
    "dominant_pitch",
    "events",
    "is_headless",
    "local_server",
    "play",
    "plot_spectrogram",
    "plot_timeline",
    "plot_usage",
    "plot_waveform",
    "quoted",
    "record",
    "replay",
    "run_batch",
    "serve_audio_modalities",
    "session_ledger",
    "set_session_budget",
    "spoken",
    "to_jpeg",
    "wer",
    "words",
]
