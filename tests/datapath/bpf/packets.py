"""Packet builders for datapath tests: Ethernet, IPv4, TCP, UDP, ICMP echo and ARP, with
correct checksums, as bytes."""

from __future__ import annotations

import ipaddress
import struct

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

BROADCAST = "ff:ff:ff:ff:ff:ff"


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def ip4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(src: str, dst: str, ethertype: int, payload: bytes) -> bytes:
    return mac(dst) + mac(src) + struct.pack("!H", ethertype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, ttl, proto, 0, ip4(src), ip4(dst)
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def _l4_checksum(src: str, dst: str, proto: int, segment: bytes) -> int:
    pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, proto, len(segment))
    return checksum(pseudo + segment)


def tcp(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    seg = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 65535, 0, 0) + payload
    csum = _l4_checksum(src, dst, PROTO_TCP, seg)
    return ipv4(src, dst, PROTO_TCP, seg[:16] + struct.pack("!H", csum) + seg[18:])


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x") -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    csum = _l4_checksum(src, dst, PROTO_UDP, seg)
    return ipv4(src, dst, PROTO_UDP, seg[:6] + struct.pack("!H", csum) + seg[8:])


def icmp_echo(src: str, dst: str, ident: int, seq: int = 1, reply: bool = False) -> bytes:
    body = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, seq) + b"ping"
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    return ipv4(src, dst, PROTO_ICMP, body)


def arp_request(sender_mac: str, sender_ip: str, target_ip: str) -> bytes:
    body = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        ETH_P_IP,
        6,
        4,
        1,
        mac(sender_mac),
        ip4(sender_ip),
        b"\0" * 6,
        ip4(target_ip),
    )
    return ethernet(sender_mac, BROADCAST, ETH_P_ARP, body)


def parse_arp(frame: bytes) -> dict[str, object]:
    """The fields of an Ethernet+ARP frame, for assertions."""
    dst, src, ethertype = frame[:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    _, _, _, _, op, sha, spa, tha, tpa = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
    return {
        "eth_dst": dst.hex(":"),
        "eth_src": src.hex(":"),
        "ethertype": ethertype,
        "op": op,
        "sha": sha.hex(":"),
        "spa": str(ipaddress.IPv4Address(spa)),
        "tha": tha.hex(":"),
        "tpa": str(ipaddress.IPv4Address(tpa)),
    }
