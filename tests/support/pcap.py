"""
A capture file of one RTP stream, for sipp's C{play_pcap_audio}: libpcap's
format, each packet an Ethernet frame holding IPv4, UDP and RTP, 20 ms apart.
sipp sends the UDP payloads to the media port of the answer, at the
capture's own pace.
"""

from __future__ import annotations

import struct
from pathlib import Path

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # LINKTYPE_ETHERNET
_ETHERNET = bytes(6) + bytes.fromhex("020000000001") + struct.pack("!H", 0x0800)


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(payload: bytes, source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0) + payload
    addresses = bytes(int(part) for part in source[0].split(".")) + bytes(
        int(part) for part in destination[0].split(".")
    )
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0) + addresses
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return _ETHERNET + ip + udp


def write_rtp_pcap(path: Path, packets: list[bytes], interval_ms: int = 20) -> Path:
    """Write C{packets} (RTP datagrams) as a capture, C{interval_ms} apart."""
    out = bytearray(_PCAP_HEADER)
    for index, packet in enumerate(packets):
        frame = _frame(packet, ("192.0.2.10", 40000), ("192.0.2.20", 40002))
        microseconds = index * interval_ms * 1000
        out += struct.pack("<IIII", microseconds // 1_000_000, microseconds % 1_000_000, len(frame), len(frame))
        out += frame
    path.write_bytes(bytes(out))
    return path
