"""
The scripted speech engine under the name the tests have long used; it ships
in L{mgateway.testing}.
"""

from mgateway.testing import ScriptedSpeechEngine as ScriptedEngine
from mgateway.testing import ScriptedTranscriber

__all__ = ["ScriptedEngine", "ScriptedTranscriber"]
