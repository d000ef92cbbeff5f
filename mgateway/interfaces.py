"""
The seams of the gateway. Each has more than one implementation (or a scripted
one used by tests of the code around it).
"""

from zope.interface import Interface


class IRecognizer(Interface):
    """
    Speech recognition for one participant stream.

    Implementations block: they are only ever called from one worker thread at a
    time, in audio order, never on the reactor thread. Times in the returned
    utterances are relative to the first sample this recogniser was given.
    """

    def accept(pcm):
        """
        Feed 16-bit little-endian mono PCM.

        @type pcm: L{bytes}
        @return: the utterances that this audio completed (often none).
        @rtype: L{list} of L{mgateway.transcript.Utterance}
        """

    def finish():
        """
        Flush: return whatever is still pending as final utterances. The
        recogniser is not used after this.

        @rtype: L{list} of L{mgateway.transcript.Utterance}
        """


class ITranscriptSink(Interface):
    """Somewhere utterances go: a webhook, the store, a WebSocket reply."""

    def deliver(event):
        """
        Hand over one utterance. Never blocks and never raises: a sink deals with
        its own failures (logs and counts them).

        @type event: L{mgateway.transcript.TranscriptEvent}
        """


class ITranscriptStore(Interface):
    """Durable storage of utterances for the after-call endpoint."""

    def add(message):
        """
        Store one message.

        @type message: L{mgateway.store.message.StoredMessage}
        @rtype: L{twisted.internet.defer.Deferred} firing with L{None}
        """

    def messages(conversation_id, limit):
        """
        The messages of a conversation, every leg and participant, oldest first
        (by C{spoken}, then C{created}), at most C{limit}.

        @rtype: L{twisted.internet.defer.Deferred} firing with a L{list} of
            L{mgateway.store.message.StoredMessage}
        """

    def purge(older_than):
        """
        Delete messages created before C{older_than} (an aware UTC datetime).

        @rtype: L{twisted.internet.defer.Deferred} firing with the number deleted
        """

    def close():
        """
        Release connections and threads.

        @rtype: L{twisted.internet.defer.Deferred}
        """


class IWebhookFailureLog(Interface):
    """Where the utterances a webhook target did not get are recorded."""

    def record(failure):
        """
        Keep one failure.

        @type failure: L{mgateway.store.failure.WebhookFailure}
        @rtype: L{twisted.internet.defer.Deferred} firing with L{None}
        """

    def webhook_failures(conversation_id, limit):
        """
        The failures recorded for a conversation, newest first, at most C{limit}.

        @rtype: L{twisted.internet.defer.Deferred} firing with a L{list} of
            L{mgateway.store.failure.WebhookFailure}
        """
