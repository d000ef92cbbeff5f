# -*- test-case-name: tests.test_jitter,tests.test_rtp_fast_path -*-
"""
A jitter buffer: the RTP packets of one stream, in, as contiguous PCM, out.

Sans-I/O and clock-free: each L{JitterBuffer.push} returns the audio that has
become ready, and L{JitterBuffer.flush} the rest. Packets are put back in
sequence order; one that is missing is waited for while the packets after it
span no more than the buffer's depth, and is then declared lost. The payloads
are decoded in order at release (G.729 decoding carries state from frame to
frame) and placed by their timestamps on the stream's L{TrackTimeline}, which
fills the gaps (lost packets, silence suppression, hold) with comfort noise,
never digital zeros, which defeat Vosk's endpointing. Its policy is
L{Overlap.KEEP}: a packet that comes after its time was filled (a stalled
link) is late speech, kept whole.

Sequence numbers and timestamps are unwrapped to unbounded integers, so the
16-bit and 32-bit wrap-arounds need no special cases. A new SSRC is a new
source: what is buffered from the old one is released and the new one
continues the timeline where it stands, whatever its timestamps say.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from mgateway.media import MediaError
from mgateway.media.pcm import SAMPLES_PER_MS
from mgateway.media.rtp import RtpPacket
from mgateway.media.timeline import Overlap, TrackTimeline

#: A packet this far behind the highest sequence number received, or further
#: ahead of it than L{MAX_DROPOUT}, is not taken at its word: only if the next
#: packet follows it is the source deemed to have restarted its numbering
#: (RFC 3550 appendix A.1).
MAX_MISORDER = 100
MAX_DROPOUT = 3000
#: How many holes are remembered, to tell a late packet from a duplicate.
_LOST_RANGES_KEPT = 32


def _unwrap(value: int, reference: int, bits: int) -> int:
    """The integer nearest to C{reference} that is congruent to C{value} modulo 2**bits."""
    modulus = 1 << bits
    delta = (value - reference) % modulus
    if delta >= modulus >> 1:
        delta -= modulus
    return reference + delta


class _Source:
    """The sequence space of one SSRC (where its audio goes is the timeline's)."""

    def __init__(self, packet: RtpPacket):
        self.ssrc = packet.ssrc
        #: Highest extended sequence number received, and that packet's extended timestamp.
        self.highest = packet.sequence
        self.timestamp = packet.timestamp
        #: Extended sequence number of the next packet to release, and of the
        #: first one released; C{None} while the start is being buffered.
        self.next: int | None = None
        self.first: int | None = None
        #: The extended sequence number after the packet whose audio ends
        #: where the timeline stands (the sender's position there is the
        #: timeline's C{position_samples + skew}).
        self.resume: int | None = None
        #: Whether packets were given up on since the last release.
        self.after_loss = False
        #: Extended sequence number -> (extended timestamp, payload, or None for
        #: a packet of another payload type that only holds its place).
        self.pending: dict[int, tuple[int, bytes | None]] = {}
        self.lost: deque[range] = deque(maxlen=_LOST_RANGES_KEPT)

    def was_lost(self, sequence: int) -> bool:
        return sequence < self.first or any(sequence in hole for hole in self.lost)


class JitterBuffer:
    """
    Turns the RTP packets of one stream into in-order PCM (16-bit
    little-endian, at the payload's clock rate).

    @param payload_type: the negotiated audio payload type. Packets of any
        other type (telephone-event, CN) hold their place in the sequence but
        yield no audio and move nothing on the timeline.
    @param decode: payload -> PCM, called in sequence order.
    @param conceal: the codec's packet-loss concealment, if it has one: each
        call returns PCM for one lost frame. It covers up to
        C{max_conceal_ms} of a gap left by lost packets; comfort noise fills
        the rest, and all of a gap where nothing was lost (silence
        suppression, hold).
    @param depth_ms: how much audio may queue behind a missing packet before
        it is declared lost: a packet overtaken by later ones spanning up to
        this much still finds its place.
    @param frame_ms: the usual packet duration. Twice C{depth_ms} worth of
        packets waiting behind a hole also declares it lost, for when the
        timestamps cannot be trusted.
    @param max_gap_ms: the most audio a single gap is filled with. A longer
        jump of the timestamps (after hold, or a misbehaving sender) is
        filled this far and the timeline continues from there
        (L{TrackTimeline}).
    @param noise_dbfs: the RMS level of the comfort noise.
    @param octet_per_sample: the codec decodes each octet to one sample on
        its own (G.711), so L{follow} may take packets and decode them together.

    @ivar timeline: where the released audio stands (L{Overlap.KEEP}).
    @ivar received: packets pushed, of any kind.
    @ivar lost: sequence numbers given up on.
    @ivar late: packets that came after their place was given up on (or
        after a new source took over), dropped.
    @ivar duplicates: packets received twice, dropped.
    @ivar reordered: packets that arrived after a later one and were put back in place.
    @ivar ignored: packets of another payload type.
    @ivar undecodable: payloads the decoder rejected; their time became noise.
    @ivar resyncs: new sources (SSRC changes, restarted numbering).
    """

    def __init__(
        self,
        payload_type: int,
        decode: Callable[[bytes], bytes],
        *,
        conceal: Callable[[], bytes] | None = None,
        frame_ms: int = 20,
        depth_ms: int = 60,
        max_gap_ms: int = 60_000,
        max_conceal_ms: int = 40,
        noise_dbfs: float = -60,
        octet_per_sample: bool = False,
    ):
        self.payload_type = payload_type
        self._decode = decode
        self._conceal = conceal
        self._depth = depth_ms * SAMPLES_PER_MS
        self._max_pending = 2 * depth_ms // frame_ms
        self._max_conceal = max_conceal_ms * SAMPLES_PER_MS
        self.timeline = TrackTimeline(max_gap_ms, overlap=Overlap.KEEP, noise_dbfs=noise_dbfs)
        self._source: _Source | None = None
        self._previous: _Source | None = None
        self._suspect: RtpPacket | None = None
        self._out: list[bytes] = []
        #: Payloads taken by L{follow}, decoded together when next released.
        self._undecoded: list[bytes] | None = [] if octet_per_sample else None
        self.received = self.lost = self.late = self.duplicates = self.reordered = 0
        self.ignored = self.undecodable = self.resyncs = 0

    @property
    def position(self) -> int:
        """Samples released so far: the stream's media time."""
        return self.timeline.position_samples

    @property
    def slipped(self) -> int:
        """
        Samples by which audio was placed later than its timestamps: it came
        after an L{idle} fill (late, not absent), or the timestamps went back.
        """
        return self.timeline.slipped

    def push(self, packet: RtpPacket) -> bytes:
        """Take one packet; return the PCM now ready (often one packet's worth, or none)."""
        self.received += 1
        audio = packet.payload_type == self.payload_type
        if not audio:
            self.ignored += 1
        source = self._source
        if source is None or packet.ssrc != source.ssrc:
            if not audio:
                return b""
            if self._from_previous_source(packet):
                self.late += 1
                return b""
            source = self._resync(packet)
        self._accept(source, packet, audio)
        return self._take()

    def follow(self, sequence: int, timestamp: int, ssrc: int, payload: bytes) -> bool:
        """
        The fast path for the common packet, with no L{RtpPacket} made: the
        next one of the current source, in sequence and contiguous in time,
        nothing buffered or missing before it. Whether it was taken (then
        L{take} releases its audio, decoded with the others taken in a row);
        C{False}: nothing changed, hand it to L{push}.

        Only for codecs of one octet per sample (G.711: C{octet_per_sample}),
        whose runs of payloads decode as one.
        """
        source = self._source
        timeline = self.timeline
        skew = timeline.skew
        if (
            self._undecoded is None
            or source is None
            or ssrc != source.ssrc
            or source.pending
            or skew is None
            or source.after_loss
            or self._suspect is not None
        ):
            return False
        following = source.highest + 1
        playout = timeline.position_samples + skew
        if source.next != following or sequence != following & 0xFFFF or timestamp != playout & 0xFFFFFFFF:
            return False
        self.received += 1
        samples = len(payload)
        source.highest = following
        source.next = source.resume = following + 1
        source.timestamp = playout
        # TrackTimeline.extend, inlined: this runs for nearly every packet.
        timeline.position_samples += samples
        self._undecoded.append(payload)
        return True

    def take(self) -> bytes:
        """The audio released and not yet returned (by L{follow})."""
        return self._take()

    def flush(self) -> bytes:
        """Release everything buffered, giving up on any missing packets."""
        if self._source is not None:
            self._release(self._source, force=True)
        return self._take()

    def idle(self, samples: int) -> bytes:
        """
        The sender has sent nothing for a while (silence suppression without
        comfort-noise packets, a stalled link): release what is buffered and
        C{samples} of comfort noise now, so that recognition hears the
        silence as it happens rather than when the next packet comes
        (L{TrackTimeline.idle}). The packet that ends the quiet spell fills
        only what is left of its gap. Audio that was late rather than absent
        (a stalled link) is kept whole, after the noise: the timeline slips
        by the overlap (C{slipped}) rather than losing speech. Nothing before
        the first packet.
        """
        source = self._source
        if source is None:
            return b""
        self._release(source, force=True)
        noise = self.timeline.idle(samples)
        if noise:
            self._append(noise)
        return self._take()

    def _from_previous_source(self, packet: RtpPacket) -> bool:
        """A straggler of the source that was replaced, rather than its return."""
        previous = self._previous
        return (
            previous is not None
            and packet.ssrc == previous.ssrc
            and _unwrap(packet.sequence, previous.highest, 16) <= previous.highest
        )

    def _resync(self, packet: RtpPacket) -> _Source:
        self._dismiss_suspect()
        if self._source is not None:
            self._release(self._source, force=True)
            self.resyncs += 1
            if self._source.ssrc != packet.ssrc:
                self._previous = self._source
        self._source = _Source(packet)
        # The new source continues the timeline where it stands, whatever its timestamps say.
        self.timeline.reanchor()
        return self._source

    def _accept(self, source: _Source, packet: RtpPacket, audio: bool) -> None:
        sequence = _unwrap(packet.sequence, source.highest, 16)
        if not -MAX_MISORDER <= sequence - source.highest <= MAX_DROPOUT:
            self._suspicious(packet)
            return
        self._dismiss_suspect()
        if sequence in source.pending:
            self.duplicates += 1
            return
        if source.next is not None and sequence < source.next:
            if source.was_lost(sequence):
                self.late += 1
            else:
                self.duplicates += 1
            return
        timestamp = _unwrap(packet.timestamp, source.timestamp, 32)
        if sequence < source.highest:
            self.reordered += 1
        else:
            source.highest, source.timestamp = sequence, timestamp
        source.pending[sequence] = (timestamp, packet.payload if audio else None)
        self._release(source)

    def _suspicious(self, packet: RtpPacket) -> None:
        """A packet far from the others: the first of a renumbered stream, or junk."""
        suspect = self._suspect
        if suspect is not None and packet.sequence == (suspect.sequence + 1) & 0xFFFF:
            self._suspect = None
            source = self._resync(suspect)
            self._accept(source, suspect, suspect.payload_type == self.payload_type)
            self._accept(source, packet, packet.payload_type == self.payload_type)
        else:
            self._dismiss_suspect()
            self._suspect = packet

    def _dismiss_suspect(self) -> None:
        """The held packet was not followed up: a straggler after all."""
        if self._suspect is not None:
            self._suspect = None
            self.late += 1

    def _release(self, source: _Source, force: bool = False) -> None:
        pending = source.pending
        while pending:
            if source.next in pending:
                self._emit(source, source.next)
            elif source.next is None:
                if not (force or self._overdue(source)):
                    return
                source.first = source.next = min(pending)
            else:
                if not (force or self._overdue(source)):
                    return
                # Give up on one missing packet at a time: the next one may
                # still be on its way, with its own deadline.
                missing = min(pending) - source.next if force else 1
                self.lost += missing
                self._remember_lost(source, range(source.next, source.next + missing))
                source.next += missing
                source.after_loss = True

    def _overdue(self, source: _Source) -> bool:
        """
        Whether to stop waiting for the next packet: the packets buffered
        after it span more than the depth past where it belongs. (At the
        start, whether to stop waiting for packets before the first one.)
        """
        pending = source.pending
        if len(pending) > self._max_pending:
            return True
        stamps = [timestamp for timestamp, _ in pending.values()]
        timeline = self.timeline
        if not timeline.anchored:
            expected = min(stamps)
        else:
            # Where the missing packet's audio belongs: its share of the
            # time between the last audio released and the first buffered.
            playout = timeline.position_samples + timeline.skew
            lowest = min(pending)
            share = (source.next - source.resume) / (lowest - source.resume)
            expected = playout + share * (pending[lowest][0] - playout)
        return max(stamps) - expected > self._depth

    @staticmethod
    def _remember_lost(source: _Source, missing: range) -> None:
        holes = source.lost
        if holes and holes[-1].stop == missing.start:
            holes[-1] = range(holes[-1].start, missing.stop)
        else:
            holes.append(missing)

    def _emit(self, source: _Source, sequence: int) -> None:
        timestamp, payload = source.pending.pop(sequence)
        source.next = sequence + 1
        if payload is None:
            return
        after_loss, source.after_loss = source.after_loss, False
        # The gap before the packet first: concealment needs the decoder's
        # state from before it. An undecodable packet's own time then
        # becomes part of the next packet's gap.
        conceal = self._concealment if after_loss and self._conceal is not None else None
        fill, _ = self.timeline.advance(timestamp, 0, conceal)
        if fill:
            self._append(fill)
        source.resume = sequence
        try:
            pcm = self._decode(payload)
        except MediaError:
            self.undecodable += 1
            return
        self._append(pcm)
        self.timeline.extend(len(pcm) // 2)
        source.resume = sequence + 1

    def _concealment(self, samples: int) -> bytes:
        """The codec's concealment for a loss of C{samples}, up to C{max_conceal_ms} of it."""
        limit = min(samples, self._max_conceal)
        frames, concealed = [], 0
        while concealed < limit:
            pcm = self._conceal()[: 2 * (limit - concealed)]
            if not pcm:
                break
            frames.append(pcm)
            concealed += len(pcm) // 2
        return b"".join(frames)

    def _append(self, pcm: bytes) -> None:
        """Queue PCM already counted on the timeline, after what L{follow} took."""
        self._decode_followed()
        self._out.append(pcm)

    def _decode_followed(self) -> None:
        """Decode what L{follow} took, in one call (the timeline counted it already)."""
        if self._undecoded:
            self._out.append(self._decode(b"".join(self._undecoded)))
            self._undecoded.clear()

    def _take(self) -> bytes:
        self._decode_followed()
        out = b"".join(self._out)
        self._out.clear()
        return out
