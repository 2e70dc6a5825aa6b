"""Import-only stand-in for torch in the WhisperLive conformance venv (e2e/whisperlive/setup).

WhisperLive's server module imports torch at the top but uses it only when a client's model loads
(`torch.cuda.is_available()`), which needs weights this machine does not have. The real torch wheel
from PyPI is gigabytes (CUDA libraries), so the venv gets this stub: anything that reaches the model
fails loudly instead of pretending to work.
"""


class _NoModel:
    def __getattr__(self, name):
        raise RuntimeError("torch stub (e2e/whisperlive): no model can load in the conformance venv")


cuda = _NoModel()


def __getattr__(name):
    raise RuntimeError(f"torch stub (e2e/whisperlive): torch.{name} is not available in the conformance venv")
