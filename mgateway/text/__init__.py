# -*- test-case-name: tests.test_text_format,tests.test_text_redaction,tests.test_text_wiring,tests.test_text_end_to_end -*-
"""
The text the customer reads: what happens to an utterance between the
recogniser and the sinks.

Three stages run in this order on the recogniser's words, each a function of
the utterance plus, where it needs one, the conversation's state:

1. custom vocabulary (L{mgateway.text.vocabulary}): spoken forms become the
   written phrase;
2. smart formatting (L{mgateway.text.numbers}, L{mgateway.text.punctuation}):
   inverse text normalisation with C{text2num}, capitals, final punctuation;
3. redaction (L{mgateway.text.redaction}): sensitive numbers become C{#},
   with context from earlier utterances of both participants.

L{mgateway.text.stage.TextStage} strings them together for the call registry
and the direct API.
"""
