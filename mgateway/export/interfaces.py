"""The seam between the File Exporter and the transcript store."""

from zope.interface import Interface


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
