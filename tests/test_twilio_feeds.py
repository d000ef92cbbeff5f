"""
Which streams feed a Twilio call, which a restarted stream supersedes, and
how long a call whose stream was lost waits for the restart (on a L{Clock}).
"""

from twisted.internet.task import Clock

from mgateway.calls.namespaces import TWILIO
from mgateway.ingress.twilio.feeds import CallFeeds
from mgateway.testing import RecordingCallRegistry

GRACE = 30


class Stream:
    """A stream feeding tracks of a call, as the Twilio transport's sockets do."""

    def __init__(self, registry, feeds, call_sid, tracks):
        self.call_sid = call_sid
        self.feeds = feeds
        self.media = registry.attach(TWILIO, call_sid, tracks)
        self.hung_up = 0
        feeds.add(call_sid, self)

    def hang_up(self):
        self.hung_up += 1
        self.feeds.forget(self.call_sid, self)
        return self.media.hang_up()


def calls(grace=GRACE):
    clock = Clock()
    return clock, RecordingCallRegistry(), CallFeeds(clock, grace)


def test_a_restart_supersedes_the_streams_of_its_call_that_carry_any_of_its_tracks():
    clock, registry, feeds = calls()
    both = Stream(registry, feeds, "CA1", ["inbound", "outbound"])
    other_call = Stream(registry, feeds, "CA2", ["inbound"])
    assert feeds.take_over("CA1", ["outbound"]) == [both]
    assert both.media.released == ["inbound", "outbound"], "every leg of the superseded stream"
    assert registry.attach(TWILIO, "CA1", ["outbound"]) is not None, "its tracks are free for the restart"
    assert feeds.take_over("CA3", ["inbound"]) == [] and other_call.media.released == []


def test_a_lost_stream_keeps_its_call_for_the_grace_then_lets_it_go():
    clock, registry, feeds = calls()
    lost = Stream(registry, feeds, "CA1", ["inbound"])
    feeds.lost("CA1", lost)
    assert feeds.waiting() == [lost]
    clock.advance(GRACE - 0.1)
    assert lost.hung_up == 0 and registry.holds(TWILIO, "CA1")
    clock.advance(0.1)
    assert lost.hung_up == 1 and not registry.holds(TWILIO, "CA1")
    assert feeds.waiting() == [] and clock.getDelayedCalls() == []


def test_a_superseded_stream_no_longer_waits_and_its_timer_is_gone():
    clock, registry, feeds = calls()
    lost = Stream(registry, feeds, "CA1", ["inbound"])
    feeds.lost("CA1", lost)
    (old,) = feeds.take_over("CA1", ["inbound"])
    restarted = Stream(registry, feeds, "CA1", ["inbound"])
    old.hang_up()
    assert feeds.waiting() == [] and clock.getDelayedCalls() == []
    clock.advance(GRACE)
    assert lost.hung_up == 1 and registry.holds(TWILIO, "CA1"), "the restarted stream feeds the call"
    assert feeds.take_over("CA1", ["inbound"]) == [restarted]


def test_without_a_grace_a_lost_stream_lets_its_call_go_at_once():
    clock, registry, feeds = calls(grace=0)
    lost = Stream(registry, feeds, "CA1", ["inbound"])
    feeds.lost("CA1", lost)
    assert lost.hung_up == 1 and feeds.waiting() == [] and clock.getDelayedCalls() == []


def test_ending_the_waiting_calls_lets_only_those_go():
    clock, registry, feeds = calls()
    lost, live = Stream(registry, feeds, "CA1", ["inbound"]), Stream(registry, feeds, "CA2", ["inbound"])
    feeds.lost("CA1", lost)
    ended = feeds.end_waiting()
    assert ended.called and (lost.hung_up, live.hung_up) == (1, 0)
    assert clock.getDelayedCalls() == [] and feeds.take_over("CA2", ["inbound"]) == [live]
