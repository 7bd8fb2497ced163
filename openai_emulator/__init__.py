"""A local stand-in for an OpenAI-compatible chat-completions API, reached over real HTTP
on loopback: the wire format, structured output, errors and 429s of the real service,
with answers a test scripts. Its docstring says what it deliberately does not model.
"""

from openai_emulator.completions import CannedAnswer
from openai_emulator.server import DEFAULT_KEY, OpenAIEmulator, Recorded

__all__ = ["DEFAULT_KEY", "CannedAnswer", "OpenAIEmulator", "Recorded"]
