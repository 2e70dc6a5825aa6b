"""Import-only stand-in for faster-whisper in the WhisperLive conformance venv (e2e/whisperlive/setup).

WhisperLive imports `WhisperModel` at the top of its server module; it is called only when a client's
model loads, which needs weights this machine does not have (and faster-whisper pulls ctranslate2, av
and tokenizers). Constructing a model fails loudly.
"""


class WhisperModel:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("faster_whisper stub (e2e/whisperlive): no model can load in the conformance venv")
