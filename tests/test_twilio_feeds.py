"""Which streams feed a Twilio call, and which a restarted stream supersedes."""

import attrs

from mgateway.ingress.twilio.feeds import CallFeeds


@attrs.define
class Media:
    legs: tuple


@attrs.define(eq=False)
class Stream:
    legs: tuple
    waiting_for_restart: bool = False

    @property
    def media(self):
        return Media(self.legs)


def test_a_restart_supersedes_the_streams_of_its_call_that_carry_any_of_its_tracks():
    feeds = CallFeeds()
    both, inbound, outbound, other_call = (Stream(("inbound", "outbound")), Stream(("inbound",)),
                                           Stream(("outbound",)), Stream(("inbound",)))
    for stream in (both, inbound, outbound):
        feeds.add("CA1", stream)
    feeds.add("CA2", other_call)
    assert feeds.superseded("CA1", ["inbound"]) == [both, inbound]
    assert feeds.superseded("CA1", ["outbound"]) == [both, outbound]
    assert feeds.superseded("CA3", ["inbound"]) == []


def test_forgotten_streams_are_neither_superseded_nor_waited_for():
    feeds = CallFeeds()
    lost, live = Stream(("inbound",), waiting_for_restart=True), Stream(("outbound",))
    feeds.add("CA1", lost)
    feeds.add("CA1", live)
    assert feeds.waiting() == [lost]
    feeds.forget("CA1", lost)
    feeds.forget("CA1", lost)
    assert feeds.waiting() == [] and feeds.superseded("CA1", ["inbound", "outbound"]) == [live]
    feeds.forget("CA1", live)
    assert feeds.superseded("CA1", ["outbound"]) == []
