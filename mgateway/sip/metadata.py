# -*- test-case-name: tests.test_siprec_metadata -*-
"""
Recording metadata (RFC 7865) in the dialects recording clients really send.

Elements and attributes are matched by local name, ignoring namespaces and
prefixes, so one reader covers:

  - RFC 7865 (C{urn:ietf:params:xml:ns:recording:1}): C{*_id} attributes,
    C{participantstreamassoc} with C{send}/C{recv} (Cisco CUBE, Avaya SBCE,
    OpenSIPS, SEMS, Intrado);
  - the pre-RFC draft (C{urn:ietf:params:xml:ns:recording}): C{id}/C{session}
    attributes, C{send}/C{recv} inside C{participant}, C{aor}/C{name} children
    (Oracle/Acme, AudioCodes);
  - Ribbon/Sonus: a C{tns:} prefix and C{callData} inside C{group};
  - BroadWorks: root C{recording_metadata}, C{send><id>...</id></send>},
    C{extensiondata parent=...} beside the elements it extends;
  - C{datamode} and C{dataMode} alike;
  - vendor prefixes used without being declared (AudioCodes C{ac:}, Oracle
    C{apkt:}, as their manuals print them): the document is read again with
    the prefix declared (L{VENDOR_PREFIXES}) instead of being dropped.

Elements outside the core vocabulary (C{extensiondata}, C{callData},
C{role}, ...) are flattened into an C{extensions} mapping on the element
that holds them: lower-cased local name to text, and for elements with a
C{label} attribute (Oracle's C{<apkt:header label="Call-ID"><value>...}) the
key C{name:label}. That is where vendor call identifiers live.

XML is parsed with defusedxml: no DTDs, no entity expansion, no external
entities.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence
from xml.etree.ElementTree import Element
from xml.etree.ElementTree import ParseError as XMLSyntaxError

import attrs
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from mgateway.sip.errors import ParseError

COMPLETE = "complete"
PARTIAL = "partial"
_ROOTS = ("recording", "recording_metadata")
#: Real documents nest five or six levels; far deeper ones are refused before any recursion.
MAX_DEPTH = 32
#: Vendor prefixes tolerated undeclared, with the namespaces their vendors declare them with.
VENDOR_PREFIXES = {
    b"ac": b"http://AudioCodes",
    b"apkt": b"http://acmepacket.com/siprec/extensiondata",
}
_ROOT_TAG_RE = re.compile(rb"<([A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?)")


@attrs.frozen
class Group:
    group_id: str
    associate_time: str | None = None
    disassociate_time: str | None = None
    extensions: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Session:
    """
    A recorded communication session.

    @ivar sip_session_id: RFC 7989 Session-ID of the recorded call (Cisco CUBE).
    @ivar associate_time: from C{sessionrecordingassoc} (or the session itself in
        the draft); C{disassociate_time} set means it is no longer recorded.
    """

    session_id: str
    sip_session_id: str | None = None
    group_ref: str | None = None
    start_time: str | None = None
    stop_time: str | None = None
    associate_time: str | None = None
    disassociate_time: str | None = None
    extensions: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Participant:
    """
    A party of the recorded call.

    @ivar send: the stream ids this participant speaks on; None when the
        document says nothing about its streams (then a partial update
        leaves them as they were).
    @ivar disassociate_time: set when the participant has left the session.
    """

    participant_id: str
    aor: str | None = None
    name: str | None = None
    send: tuple[str, ...] | None = None
    recv: tuple[str, ...] | None = None
    associate_time: str | None = None
    disassociate_time: str | None = None
    extensions: dict[str, str] = attrs.field(factory=dict)

    @property
    def active(self) -> bool:
        return self.disassociate_time is None

    @property
    def calling(self) -> bool | None:
        """
        Whether this is the calling party, when the client says so: Oracle's
        C{callingParty}, or C{role} C{calling}/C{called} (Intrado).
        """
        flag = self.extensions.get("callingparty", "").lower()
        if flag in ("true", "false"):
            return flag == "true"
        role = self.extensions.get("role", "").lower()
        if role in ("calling", "caller"):
            return True
        if role in ("called", "callee"):
            return False
        return None


@attrs.frozen
class Stream:
    stream_id: str
    label: str | None = None
    session_id: str | None = None


@attrs.frozen
class RecordingMetadata:
    """
    One metadata document, or the model built from a complete one and partial
    updates (see L{merge}). Entities keep their document order.
    """

    data_mode: str = COMPLETE
    groups: tuple[Group, ...] = ()
    sessions: tuple[Session, ...] = ()
    participants: tuple[Participant, ...] = ()
    streams: tuple[Stream, ...] = ()
    extensions: dict[str, str] = attrs.field(factory=dict)

    @property
    def session_id(self) -> str | None:
        """The id of the first recorded session."""
        return self.sessions[0].session_id if self.sessions else None

    def stream_for_label(self, label: str) -> Stream | None:
        return next((s for s in self.streams if s.label == label), None)

    def participant_for_label(self, label: str) -> Participant | None:
        """
        The speaker on the stream with SDP C{a=label:label}: the participant
        whose C{send} holds that stream, present ones before departed ones.
        """
        stream = self.stream_for_label(label)
        if stream is None:
            return None
        senders = [p for p in self.participants if p.send and stream.stream_id in p.send]
        senders.sort(key=lambda p: not p.active)
        return senders[0] if senders else None

    def extension(self, name: str) -> str | None:
        """
        The first extension value called C{name} (lower-cased local name, or
        C{name:label}), looked for in sessions, groups, the document, then
        participants.
        """
        holders = [*self.sessions, *self.groups, self, *self.participants]
        for holder in holders:
            value = holder.extensions.get(name)
            if value:
                return value
        return None


def participants_for_labels(
    metadata: RecordingMetadata, labels: Sequence[str | None]
) -> list[Participant | None]:
    """
    The speaker of each SDP m-line, given the m-lines' labels in order.

    When no label resolves through stream associations (OpenSIPS and an
    inactive CUBE send none), fall back to what drachtio and jambonz do: the
    n-th present participant speaks on the n-th m-line.
    """
    resolved = [metadata.participant_for_label(label) if label is not None else None for label in labels]
    if any(resolved):
        return resolved
    present = [p for p in metadata.participants if p.active]
    return [present[index] if index < len(present) else None for index in range(len(labels))]


def parse_metadata(data: bytes) -> RecordingMetadata:
    """
    Read one metadata document.

    @raise ParseError: the XML is not well-formed, uses DTDs or entities, or
        its root is not a recording.
    """
    try:
        root = _parse_xml(data)
    except XMLSyntaxError as error:
        declared = _declare_vendor_prefixes(data) if "unbound prefix" in str(error) else None
        if declared is None:
            raise ParseError(f"recording metadata is not acceptable XML: {error}") from None
        try:
            root = _parse_xml(declared)
        except XMLSyntaxError as error:
            raise ParseError(f"recording metadata is not acceptable XML: {error}") from None
    _check_depth(root)
    if _local(root) not in _ROOTS:
        raise ParseError(f"metadata root element is {_local(root)!r}, not a recording")
    builder = _Builder()
    builder.container(root)
    return builder.build()


def _parse_xml(data: bytes) -> Element:
    """defusedxml's parse; every refusal but a syntax error is a L{ParseError} here."""
    try:
        return fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except XMLSyntaxError:
        raise
    except (DefusedXmlException, ValueError, LookupError) as error:
        raise ParseError(f"recording metadata is not acceptable XML: {error}") from None


def _declare_vendor_prefixes(data: bytes) -> bytes | None:
    """
    C{data} with the L{VENDOR_PREFIXES} it uses but never declares declared
    on its root element; None when there are none to declare.
    """
    missing = [prefix for prefix in VENDOR_PREFIXES
               if b"<" + prefix + b":" in data and b"xmlns:" + prefix + b"=" not in data]
    root = _root_tag(data)
    if not missing or root is None:
        return None
    declarations = b"".join(b' xmlns:%s="%s"' % (prefix, VENDOR_PREFIXES[prefix]) for prefix in missing)
    return data[:root] + declarations + data[root:]


def _root_tag(data: bytes) -> int | None:
    """The offset just after the root element's name, skipping the XML declaration and comments."""
    position = 0
    while True:
        start = data.find(b"<", position)
        if start < 0:
            return None
        if data.startswith(b"<?", start) or data.startswith(b"<!", start):
            end = data.find(b"-->" if data.startswith(b"<!--", start) else b">", start)
            if end < 0:
                return None
            position = end + 1
            continue
        match = _ROOT_TAG_RE.match(data, start)
        return match.end() if match else None


def _check_depth(root: Element) -> None:
    pending = [(root, 1)]
    while pending:
        element, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ParseError(f"recording metadata nested deeper than {MAX_DEPTH} elements")
        pending.extend((child, depth + 1) for child in element)


def merge(previous: RecordingMetadata | None, update: RecordingMetadata) -> RecordingMetadata:
    """
    Apply a metadata document to the model so far (RFC 7865 §6): a complete
    document replaces it; a partial one changes, by id, only what it states.
    """
    if previous is None or update.data_mode != PARTIAL:
        return update
    return RecordingMetadata(
        data_mode=previous.data_mode,
        groups=_merge_entities(previous.groups, update.groups),
        sessions=_merge_entities(previous.sessions, update.sessions),
        participants=_merge_entities(previous.participants, update.participants),
        streams=_merge_entities(previous.streams, update.streams),
        extensions={**previous.extensions, **update.extensions},
    )


def _merge_entities(old: tuple, new: tuple) -> tuple:
    merged = {_entity_id(entity): entity for entity in old}
    for entity in new:
        before = merged.get(_entity_id(entity))
        merged[_entity_id(entity)] = entity if before is None else _merge_entity(before, entity)
    return tuple(merged.values())


def _entity_id(entity) -> str:
    return getattr(entity, attrs.fields(type(entity))[0].name)


def _merge_entity(before, after):
    changes = {}
    for field in attrs.fields(type(after)):
        value = getattr(after, field.name)
        if field.name == "extensions":
            changes[field.name] = {**before.extensions, **value}
        elif value is not None:
            changes[field.name] = value
    return attrs.evolve(before, **changes)


def _local(element: Element) -> str:
    return element.tag.rpartition("}")[2].lower()


def _attributes(element: Element) -> dict[str, str]:
    return {name.rpartition("}")[2].lower(): value for name, value in element.attrib.items()}


def _text(element: Element) -> str | None:
    text = "".join(element.itertext()).strip()
    return text or None


def _children(element: Element) -> Iterable[Element]:
    return (child for child in element if isinstance(child.tag, str))


def _flatten(element: Element, found: dict[str, str] | None = None) -> dict[str, str]:
    """
    An extension subtree as {local name: text} for its leaves and {name:label:
    text} for labelled elements (whose inside is not flattened further); the
    first occurrence of a key wins.
    """
    found = {} if found is None else found
    key, label = _local(element), _attributes(element).get("label")
    if label:
        found.setdefault(f"{key}:{label.lower()}", _text(element) or "")
    elif len(element) == 0:
        found.setdefault(key, _text(element) or "")
    else:
        for child in _children(element):
            _flatten(child, found)
    return found


def _ids(element: Element) -> list[str]:
    """Stream ids of a C{send}/C{recv}: its text, or its C{<id>} children (BroadWorks)."""
    children = list(_children(element))
    texts = [_text(child) for child in children] if children else [_text(element)]
    return [text for text in texts if text]


class _Builder:
    """Collects entity fields by id while walking the document, then freezes them."""

    def __init__(self):
        self.data_mode: str | None = None
        self.entities: dict[type, dict[str, dict]] = {Group: {}, Session: {}, Participant: {}, Stream: {}}
        self.extensions: dict[str, str] = {}
        self.parented: list[tuple[str, dict[str, str]]] = []
        self.handlers = {
            "group": self.group,
            "session": self.session,
            "participant": self.participant,
            "stream": self.stream,
            "sessionrecordingassoc": self.session_recording_assoc,
            "participantsessionassoc": self.participant_session_assoc,
            "participantstreamassoc": self.participant_stream_assoc,
        }

    def container(self, element: Element) -> None:
        for child in _children(element):
            name = _local(child)
            if name in self.handlers:
                self.handlers[name](child)
            elif name == "datamode":
                self.data_mode = (_text(child) or COMPLETE).lower()
            elif name == "recording":
                self.container(child)
            elif name == "extensiondata" and _attributes(child).get("parent"):
                self.parented.append((_attributes(child)["parent"], _flatten(child)))
            else:
                self.extensions.update({k: v for k, v in _flatten(child).items() if k not in self.extensions})

    def fields(self, kind: type, element: Element, *id_names: str) -> dict | None:
        attributes = _attributes(element)
        entity_id = next((attributes[name] for name in id_names if attributes.get(name)), None)
        if entity_id is None:
            return None
        return self.entities[kind].setdefault(entity_id, {"extensions": {}})

    def _times(self, fields: dict, name: str, child: Element) -> bool:
        if name in ("associate-time", "disassociate-time"):
            fields[name.replace("-", "_")] = _text(child)
            return True
        return False

    def group(self, element: Element) -> None:
        fields = self.fields(Group, element, "group_id", "id")
        if fields is None:
            return
        for child in _children(element):
            if not self._times(fields, _local(child), child):
                fields["extensions"].update(_flatten(child))

    def session(self, element: Element) -> None:
        fields = self.fields(Session, element, "session_id", "id")
        if fields is None:
            return
        simple = {"sipsessionid": "sip_session_id", "group-ref": "group_ref",
                  "start-time": "start_time", "stop-time": "stop_time"}
        for child in _children(element):
            name = _local(child)
            if name in simple:
                fields[simple[name]] = _text(child)
            elif not self._times(fields, name, child):
                fields["extensions"].update(_flatten(child))

    def participant(self, element: Element) -> None:
        fields = self.fields(Participant, element, "participant_id", "id")
        if fields is None:
            return
        for child in _children(element):
            name = _local(child)
            if name == "nameid":
                fields["aor"] = _attributes(child).get("aor") or fields.get("aor")
                names = [_text(n) for n in _children(child) if _local(n) == "name"]
                fields["name"] = next((n for n in names if n), fields.get("name"))
            elif name == "aor":
                fields["aor"] = _text(child)
            elif name == "name":
                fields["name"] = _text(child)
            elif name in ("send", "recv"):
                fields[name] = fields.get(name) or []
                fields[name].extend(_ids(child))
            elif not self._times(fields, name, child):
                fields["extensions"].update(_flatten(child))

    def stream(self, element: Element) -> None:
        fields = self.fields(Stream, element, "stream_id", "id")
        if fields is None:
            return
        attributes = _attributes(element)
        fields["session_id"] = attributes.get("session_id") or attributes.get("session")
        for child in _children(element):
            if _local(child) == "label":
                fields["label"] = _text(child)

    def session_recording_assoc(self, element: Element) -> None:
        fields = self.fields(Session, element, "session_id", "session", "id")
        if fields is not None:
            for child in _children(element):
                self._times(fields, _local(child), child)

    def participant_session_assoc(self, element: Element) -> None:
        fields = self.fields(Participant, element, "participant_id", "participant", "id")
        if fields is not None:
            for child in _children(element):
                self._times(fields, _local(child), child)

    def participant_stream_assoc(self, element: Element) -> None:
        fields = self.fields(Participant, element, "participant_id", "participant", "id")
        if fields is None:
            return
        fields["send"] = fields.get("send") or []
        fields["recv"] = fields.get("recv") or []
        for child in _children(element):
            name = _local(child)
            if name in ("send", "recv"):
                fields[name].extend(_ids(child))

    def build(self) -> RecordingMetadata:
        for parent, extensions in self.parented:
            holders = (self.entities[kind] for kind in (Session, Participant, Group))
            holder = next((found[parent] for found in holders if parent in found), None)
            target = holder["extensions"] if holder is not None else self.extensions
            for key, value in extensions.items():
                target.setdefault(key, value)
        return RecordingMetadata(
            data_mode=self.data_mode or COMPLETE,
            groups=self._freeze(Group),
            sessions=self._freeze(Session),
            participants=self._freeze(Participant),
            streams=self._freeze(Stream),
            extensions=self.extensions,
        )

    def _freeze(self, kind: type) -> tuple:
        names = {field.name for field in attrs.fields(kind)}
        frozen = []
        for entity_id, fields in self.entities[kind].items():
            values = {key: value for key, value in fields.items() if key in names}
            for key in ("send", "recv"):
                if values.get(key) is not None:
                    values[key] = tuple(dict.fromkeys(values[key]))
            frozen.append(kind(entity_id, **values))
        return tuple(frozen)
