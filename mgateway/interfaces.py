# -*- test-case-name: tests.test_seams,tests.test_store -*-
"""
The seams of the gateway. Each has more than one implementation: the real one
and an in-memory fake shipped in L{mgateway.testing} for the tests of the code
around it.
"""

from zope.interface import Attribute, Interface


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

    def start():
        """
        Connect (and migrate the schema): a store that cannot be used fails
        here, at start-up, rather than at its first utterance.

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

    def ping():
        """
        One cheap round trip to the database, to tell whether it is
        reachable (the readiness of C{/health}).

        @rtype: L{twisted.internet.defer.Deferred} firing with L{None}, or
            failing when the database cannot be reached
        """


class IConfigurationStore(Interface):
    """The Configuration API's custom vocabulary and redaction policies, shared by every node."""

    def vocabularies():
        """
        Every custom vocabulary entry, oldest first.

        @rtype: L{twisted.internet.defer.Deferred} firing with a L{list} of
            L{mgateway.store.configuration.StoredVocabulary}
        """

    def add_vocabulary(vocabulary):
        """@rtype: L{twisted.internet.defer.Deferred} firing with L{None}"""

    def delete_vocabulary(vocabulary_id):
        """@rtype: L{twisted.internet.defer.Deferred} firing with whether it existed"""

    def redaction_policies():
        """
        The policies set through the API, by entity id (entities never set are absent).

        @rtype: L{twisted.internet.defer.Deferred} firing with a L{dict}
        """

    def set_redaction_policies(entity_id, policies):
        """@rtype: L{twisted.internet.defer.Deferred} firing with L{None}"""


class IMediaSource(Interface):
    """
    Media the gateway fetches itself for the calls of one namespace (Amazon
    Connect: pulled from Kinesis Video Streams), rather than having it pushed
    by an ingress. The registry asks it to open a call on start-streaming.
    """

    def prepare(registry, request):
        """
        Before the call starts: check the request's media can be reached and
        attach the call's legs (creating the call). A call already prepared is
        left as it is. Raises L{mgateway.calls.errors.ApiError}.

        @rtype: awaitable
        """

    def begin(call, request):
        """The call has started: deliver its media (into the legs attached)."""

    def abandon(request):
        """The start failed after L{prepare}: undo what it did for a new call."""


class ITranscriber(Interface):
    """
    The recognition of one participant stream, fed on the reactor thread:
    utterances and the failure signal are delivered on the reactor thread,
    through the callbacks given to L{ISpeechEngine.transcriber}.
    """

    def feed(pcm):
        """
        Queue 16-bit little-endian 8 kHz mono PCM. Ignored after L{finish}, or
        after the recogniser failed.

        @type pcm: L{bytes}
        """

    def finish():
        """
        Decode what was fed and flush the recogniser, so its last words are
        delivered. Fires once the last utterance was delivered; it fires
        normally after a failure too (the failure was signalled already).

        @rtype: L{twisted.internet.defer.Deferred} firing with L{None}
        """


class ISpeechEngine(Interface):
    """The one door to speech recognition (calls -> asr)."""

    loaded = Attribute("L{bool}: whether every configured model finished loading")

    def ready():
        """
        @return: a L{twisted.internet.defer.Deferred} that fires once every
            configured model finished loading (or failed to).
        """

    def canonical(language):
        """
        The configured spelling of a language tag (matched whatever its case),
        or L{None} when it cannot be transcribed.

        @type language: L{str}
        """

    def transcriber(language, on_utterance, offset_ms=0, on_failure=None, name=""):
        """
        A new L{ITranscriber} for one stream.

        @param name: names the stream (its stream id) in the lag metrics and log.

        @param on_utterance: called with each L{mgateway.transcript.Utterance},
            its times shifted by C{offset_ms}.
        @param on_failure: called once, with a L{twisted.python.failure.Failure},
            if the recogniser fails: the stream is no longer transcribed, and
            its owner says so in its own terms.
        @rtype: L{ITranscriber}
        """


class IMediaFeed(Interface):
    """
    What an ingress holds for the legs it feeds into a call (one socket, one
    SIP session). Several feeds may feed one call; it ends when the last one
    hangs up.
    """

    legs = Attribute("L{tuple} of L{str}: the legs this feed attached")

    def audio(leg_id, pcm, filled=False):
        """
        16-bit little-endian 8 kHz mono PCM of one leg, in timeline order;
        C{filled}: comfort noise for a gap, counted apart in the summaries.
        """

    def release(leg_id):
        """Stop feeding one leg (its m-line was removed): another feed may take it."""

    def hang_up():
        """
        The media is gone: the call ends (flushed, its last words delivered)
        once its last feed hung up.

        @rtype: L{twisted.internet.defer.Deferred}
        """

    def stopped():
        """Transcription of the call was stopped: tell the ingress, if it asked."""

    def failed(reason):
        """
        The recogniser of one of the call's streams failed: tell the
        ingress, if it asked (the direct API ends the stream with 5000).

        @type reason: L{twisted.python.failure.Failure}
        """


class ICallRegistry(Interface):
    """
    Every call the gateway holds media for, keyed by C{(namespace, guid)}:
    where the ingresses feed audio (ingress -> calls) and the Start/Stop
    requests arrive.
    """

    engine = Attribute("the L{ISpeechEngine} the calls' streams are transcribed with")

    def attach(namespace, guid, legs, on_stop=None, *, on_failure=None, conversation_id=None,
               stream_ids=None, sinks=(), phrases=tuple):
        """
        Feed media legs into the call, created if new.

        @raise mgateway.calls.errors.LegBusy: a leg is fed by another feed now.
        @param on_stop: called when a stop request stops the call.
        @param on_failure: called with a L{twisted.python.failure.Failure}
            when a recogniser of the call fails.
        @param conversation_id: what a new call's utterances are filed under
            (its guid when not given).
        @param stream_ids: a new call's C{streamId} per role.
        @param sinks: L{ITranscriptSink}s that get the call's utterances too.
        @param phrases: what gives a new call's own custom vocabulary (a
            direct stream's C{updateVocabulary} phrases), read at every utterance.
        @rtype: L{IMediaFeed}
        """

    def start(request):
        """
        Start or resume transcription (a coroutine): C{{role: stream}}, each
        stream with its C{stream_id}.

        @type request: L{mgateway.calls.requests.StartRequest}
        @raise mgateway.calls.errors.ApiError: the spec's 400-20x / 409-20x.
        """

    def stop(request):
        """
        Pause or end transcription (a coroutine), flushing the streams:
        C{{role: (stream, L{mgateway.calls.stream.StreamSummary})}}.

        @type request: L{mgateway.calls.requests.StopRequest}
        @raise mgateway.calls.errors.ApiError: the spec's 400-20x / 409-20x.
        """

    def shut_down():
        """
        Flush every call (the last words of each are delivered).

        @rtype: L{twisted.internet.defer.Deferred}
        """

    def guids(namespace, guid):
        """The forms a call named C{guid} in a request may be filed under (the guid first)."""

    def holds(namespace, guid):
        """Whether this node holds the media of the call a request names (else another node may)."""


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


class IExportLedger(Interface):
    """
    What the exporter reads from the shared transcript store: the messages of
    an hour, and the claims that let one node of several build a day's feed
    while the others see that it is built (or being built).
    """

    def messages_created(start, end):
        """
        The stored messages created in [C{start}, C{end}) (aware datetimes),
        oldest first (by C{created}, then message id).

        @rtype: L{twisted.internet.defer.Deferred} firing with a L{list} of
            L{mgateway.store.message.StoredMessage}
        """

    def claim(feed, day, node, now, stale_before):
        """
        Claim the building of C{feed} for C{day} (a L{datetime.date}) for
        C{node}. Succeeds if nobody has claimed it, or if the claim of a node
        still building was taken before C{stale_before} (that node died); fails
        if the day is built, or being built by another node.

        @rtype: L{twisted.internet.defer.Deferred} firing with L{bool}
        """

    def finish(feed, day, node, now):
        """
        Record C{day} as built by C{node}.

        @rtype: L{twisted.internet.defer.Deferred}
        """

    def release(feed, day, node):
        """
        Give up C{node}'s claim on a day it has not built, so that the next
        attempt (of any node) may build it.

        @rtype: L{twisted.internet.defer.Deferred}
        """

    def state(feed, day):
        """
        C{None} (never claimed), C{"building"} or C{"done"}, with the node.

        @rtype: L{twisted.internet.defer.Deferred} firing with C{(state, node)}
            or C{None}
        """


class IAdmission(Interface):
    """Whether this node takes a new call (L{mgateway.admission})."""

    draining = Attribute("L{bool}: the node was told to stop and refuses every new call")

    def refusal(streams):
        """
        Why a new call of C{streams} participant streams is refused now, or
        L{None} when the node takes it.

        @rtype: L{mgateway.admission.Refusal} or L{None}
        """

    def capacity():
        """
        The streams the node can carry and those it carries now.

        @rtype: L{mgateway.admission.Capacity}
        """

    def drain():
        """From now on, refuse every new call."""


class ICallDirectory(Interface):
    """
    The call registry's durable part, shared by the nodes of one database:
    which node holds which call's media, and which nodes are alive
    (L{mgateway.cluster.records.CallRecord}). Every method returns a
    L{twisted.internet.defer.Deferred}.
    """

    def publish(record):
        """
        Record a call's media attached to C{record.node_id}, or its legs or
        state changed. Of two records of the same call from the same node the
        higher C{seq} wins, whatever order they arrive in; a record from
        another node takes the call over (media re-attached there).
        """

    def owner(namespace, guid):
        """The L{CallRecord} of the call, or C{None}."""

    def heartbeat(node_id, address, now_us):
        """Say that C{node_id}, reached at C{address}, is alive at C{now_us}."""

    def end_dead(node_id, now_us, dead_after_us):
        """
        Mark ended the calls of every node other than C{node_id} whose last
        heartbeat is more than C{dead_after_us} old, and forget ended calls
        older than that; fires with the number of calls ended.
        """

    def end_node(node_id, now_us):
        """Mark ended every call of C{node_id} (it restarted: it holds none)."""


class IEndpointing(Interface):
    """
    A recogniser (an L{IRecognizer}) that can say how near its stream's
    utterance is to its end, so that the job that ends it can go first.
    Read only between its calls, never while one runs.
    """

    silence_needed_ms = Attribute(
        "Milliseconds of non-speech still needed to end the utterance heard so far "
        "(0 or more, a float); None while no speech was heard since the last utterance."
    )


class IMemoryRelease(Interface):
    """Hands memory the process freed back to the system (L{mgateway.memory})."""

    def release() -> None:
        """Called on an ASR thread once a recogniser was freed. Never raises."""
