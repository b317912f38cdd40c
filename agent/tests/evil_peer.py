#!/usr/bin/env python3
"""A BGP peer that misbehaves on purpose, for the agent's bad-input tests.

usage: evil_peer.py LOCAL_ADDR AGENT_ADDR MODE [ROUTER_ID]

Opens a correct session with the agent (AS 65000, IPv4 unicast, 4-octet AS),
then sends the damage named by MODE and reports, as one JSON line on stdout,
the NOTIFICATION the agent answered with (or null if none came and the
session stayed up). Modes: garbage, wrong-marker, short-length, truncated-update,
update-too-long, ipv6-next-hop-for-ipv4, mp-reach-overrun, bad-origin-length
(RFC 7606 treat-as-withdraw: no NOTIFICATION).

Mode "collide" makes a connection collision (RFC 4271 §6.8): it accepts the
agent's dial on LOCAL_ADDR:179 and dials the agent too, sends OPEN (with
ROUTER_ID) on both, and reports for each connection whether the agent closed
it with a NOTIFICATION or completed the session on it.
"""
import json
import socket
import struct
import sys
import time

MARKER = b"\xff" * 16


def message(kind, body):
    return MARKER + struct.pack("!HB", 19 + len(body), kind) + body


def open_message(router_id="10.77.0.3"):
    caps = bytes([1, 4, 0, 1, 0, 1])  # multiprotocol IPv4 unicast
    caps += bytes([65, 4]) + struct.pack("!I", 65000)  # 4-octet AS
    params = bytes([2, len(caps)]) + caps
    body = struct.pack("!BHH4sB", 4, 65000, 90, socket.inet_aton(router_id), len(params)) + params
    return message(1, body)


def attrs(origin_value=b"\x00"):
    a = bytes([0x40, 1, len(origin_value)]) + origin_value  # ORIGIN
    a += bytes([0x40, 2, 6, 2, 1]) + struct.pack("!I", 65000)  # AS_PATH [65000]
    a += bytes([0x40, 3, 4]) + socket.inet_aton("10.77.0.2")  # NEXT_HOP
    return a


def mp_reach(afi, next_hop, nlri):
    value = struct.pack("!HBB", afi, 1, len(next_hop)) + next_hop + b"\x00" + nlri
    return bytes([0x80, 14, len(value)]) + value


def update(attributes, nlri):
    return message(2, struct.pack("!H", 0) + struct.pack("!H", len(attributes)) + attributes + nlri)


def read_message(sock, deadline):
    buf = b""
    while len(buf) < 19:
        sock.settimeout(max(0.01, deadline - time.time()))
        chunk = sock.recv(19 - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    length, kind = struct.unpack("!HB", buf[16:19])
    while len(buf) < length:
        sock.settimeout(max(0.01, deadline - time.time()))
        chunk = sock.recv(length - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return kind, buf[19:]


def outcome(sock, seen, until):
    """What the agent does on one connection until `until`: the NOTIFICATION
    it closed it with, else 'established' if its OPEN and KEEPALIVE came."""
    try:
        while True:
            kind, body = read_message(sock, until)
            if kind == 3:
                return [body[0], body[1]]
            seen.add(kind)
    except (socket.timeout, TimeoutError):
        return "established" if {1, 4} <= seen else "silent"
    except (EOFError, ConnectionResetError):
        return "closed"


def collide(local, agent, router_id):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((local, 179))
    listener.listen(1)
    listener.settimeout(15)
    accepted, _ = listener.accept()  # the agent dialled us
    dialled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    dialled.bind((local, 0))
    dialled.connect((agent, 179))  # and we dial the agent
    # The agent's OPEN on both connections proves it runs a session on each
    # (a dial whose completion it has not taken up yet is no collision, and
    # it may drop that connection unannounced); only then answer, so both
    # race to OpenConfirm.
    deadline = time.time() + 10
    seen = {"agent_dialled": set(), "peer_dialled": set()}
    for s, side in ((dialled, "peer_dialled"), (accepted, "agent_dialled")):
        kind, _ = read_message(s, deadline)
        seen[side].add(kind)
    # The agent settles the collision on the first OPEN and may close the
    # other connection before we write to it: a failed write is expected,
    # and what it sent (its NOTIFICATION) is still there to read.
    for s in (accepted, dialled):
        try:
            s.sendall(open_message(router_id) + message(4, b""))
        except OSError:
            pass
    until = time.time() + 3
    result = {
        "agent_dialled": outcome(accepted, seen["agent_dialled"], until),
        "peer_dialled": outcome(dialled, seen["peer_dialled"], until),
    }
    print(json.dumps(result), flush=True)
    keepalive = message(4, b"")
    for _ in range(30):
        for s in (accepted, dialled):
            try:
                s.sendall(keepalive)
            except OSError:
                pass
        time.sleep(1)


def main():
    local, agent, mode = sys.argv[1:4]
    if mode == "collide":
        collide(local, agent, sys.argv[4])
        return
    family = socket.AF_INET6 if ":" in agent else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((local, 0))
    sock.connect((agent, 179))
    sock.sendall(open_message())
    deadline = time.time() + 10
    seen = set()
    while not {1, 4} <= seen:
        kind, _ = read_message(sock, deadline)
        seen.add(kind)
    sock.sendall(message(4, b""))
    # Two good routes first, so treat-as-withdraw has something to remove.
    good = bytes([16, 10, 66]) + bytes([16, 10, 67])
    sock.sendall(update(attrs(), good))

    damage = {
        "garbage": bytes(range(7, 80)),
        "wrong-marker": b"\xfe" * 16 + struct.pack("!HB", 19, 4),
        "short-length": MARKER + struct.pack("!HB", 18, 4),
        "truncated-update": message(2, struct.pack("!H", 40) + b"\x18\x0a\x00"),
        "update-too-long": MARKER + struct.pack("!HB", 5000, 2) + bytes(4981),
        "bad-origin-length": update(attrs(b"\x00\x00"), bytes([16, 10, 66])),
        # An IPv4 route with an IPv6 next hop, no Extended Next Hop
        # capability negotiated (RFC 8950): RFC 7606 §7.11 session reset.
        "ipv6-next-hop-for-ipv4": update(
            attrs()[:-7] + mp_reach(1, socket.inet_pton(socket.AF_INET6, "2001:db8::2"),
                                    bytes([24, 10, 68, 0])),
            b""),
        # MP_REACH_NLRI whose length runs past the attribute list: its
        # prefixes cannot be found to withdraw them (RFC 7606 §4).
        "mp-reach-overrun": update(
            attrs()[:-7] + bytes([0x80, 14, 40, 0, 1, 1, 4]) + socket.inet_aton("10.77.0.3"),
            b""),
    }[mode]
    sock.sendall(damage)

    deadline = time.time() + (3 if mode == "bad-origin-length" else 10)
    result = {"notification": None, "closed": False}
    try:
        while True:
            kind, body = read_message(sock, deadline)
            if kind == 3:
                result["notification"] = [body[0], body[1]]
                break
            if kind == 2 or kind == 4:
                continue
    except (socket.timeout, TimeoutError):
        pass
    except (EOFError, ConnectionResetError):
        result["closed"] = True
    print(json.dumps(result), flush=True)
    if mode == "bad-origin-length":
        # Stay up so the test can look at the agent's view of this session.
        sock.settimeout(None)
        keepalive = message(4, b"")
        for _ in range(60):
            sock.sendall(keepalive)
            time.sleep(1)


if __name__ == "__main__":
    main()
