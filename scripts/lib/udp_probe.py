#!/usr/bin/env python3
"""The UDP probe of scripts/bench-udp: targets on the server's side, and the measurements.

    udp_probe.py SINK UECHO TECHO FWD_SINK FWD_UECHO FWD_TECHO MBIT SECS SIZE

Binds a UDP sink on 127.0.0.1:SINK (counts each run's datagrams, unique and repeated), a
UDP echo server on UECHO and a TCP echo server on TECHO: the targets the tunnel's server
forwards to. Waits for the tunnel (the TCP echo through FWD_TECHO), then measures:

* load: SECS seconds of SIZE-byte datagrams offered at MBIT Mbit/s, straight to the sink
  (the machine's own baseline) and through the tunnel (FWD_SINK): sent, received, lost %,
  delivered twice;
* round trip: 64-byte datagrams one at a time through FWD_UECHO, and 64-byte messages on
  one TCP connection through FWD_TECHO (the same tunnel's stream), median and p90 in ms.
"""

import socket
import statistics
import struct
import sys
import threading
import time

LOCAL = "127.0.0.1"


def sink(port, counts, lock):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((LOCAL, port))
    while True:
        data = s.recv(65536)
        if len(data) < 5:
            continue
        run, seq = struct.unpack("!BI", data[:5])
        with lock:
            seen, dups = counts.setdefault(run, (set(), [0]))
            if seq in seen:
                dups[0] += 1
            else:
                seen.add(seq)


def udp_echo(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOCAL, port))
    while True:
        data, addr = s.recvfrom(65536)
        s.sendto(data, addr)


def tcp_echo(port):
    l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((LOCAL, port))
    l.listen(16)

    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            d = c.recv(65536)
            if not d:
                return
            c.sendall(d)

    while True:
        c, _ = l.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def offer(port, run, mbit, secs, size):
    """Sends datagrams numbered from 0 at `mbit`, in 1 ms steps; returns how many."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pad = b"\x5a" * (size - 5)
    rate = mbit * 1e6 / 8 / size  # datagrams per second
    start = time.monotonic()
    sent = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= secs:
            return sent
        due = int(elapsed * rate)
        while sent < due:
            try:
                s.sendto(struct.pack("!BI", run, sent) + pad, (LOCAL, port))
            except BlockingIOError:
                pass
            sent += 1
        time.sleep(0.0005)


def load(port, run, mbit, secs, size, counts, lock):
    sent = offer(port, run, mbit, secs, size)
    time.sleep(2.0)  # what is in flight arrives
    with lock:
        seen, dups = counts.get(run, (set(), [0]))
        got, twice = len(seen), dups[0]
    lost = 100.0 * (sent - got) / sent if sent else 0.0
    return sent, got, lost, twice


def udp_rtts(port, n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    out = []
    msg = b"\x01" * 64
    for _ in range(n):
        t = time.perf_counter()
        s.sendto(msg, (LOCAL, port))
        try:
            s.recv(65536)
        except socket.timeout:
            continue
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.002)
    return out


def tcp_rtts(port, n):
    c = socket.create_connection((LOCAL, port))
    c.settimeout(10)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = []
    msg = b"\x02" * 64
    for _ in range(n):
        t = time.perf_counter()
        c.sendall(msg)
        got = 0
        while got < len(msg):
            got += len(c.recv(65536))
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.002)
    c.close()
    return out


def wait_tunnel(port, within=180.0):
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            c = socket.create_connection((LOCAL, port), timeout=2)
            c.sendall(b"x")
            c.settimeout(max(1.0, min(30.0, end - time.monotonic())))
            if c.recv(1) == b"x":
                c.close()
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"udp_probe: the tunnel did not come up within {within:.0f} s")


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def main():
    sink_p, uecho_p, techo_p, f_sink, f_uecho, f_techo = map(int, sys.argv[1:7])
    mbit, secs, size = float(sys.argv[7]), float(sys.argv[8]), int(sys.argv[9])
    counts, lock = {}, threading.Lock()
    for target, args in ((sink, (sink_p, counts, lock)), (udp_echo, (uecho_p,)), (tcp_echo, (techo_p,))):
        threading.Thread(target=target, args=args, daemon=True).start()
    wait_tunnel(f_techo)
    # A first datagram opens the flow: the load measures the open flow, not its opening.
    udp_rtts(f_uecho, 3)
    offer(f_sink, 0, 1, 0.2, size)
    time.sleep(1.0)
    rows = []
    for name, port, run in (("direct", sink_p, 1), ("tunnel", f_sink, 2)):
        sent, got, lost, twice = load(port, run, mbit, secs, size, counts, lock)
        rows.append(f"load {name:7s} {mbit:g} Mbit/s x {secs:g} s, {size} B: sent {sent}, "
                    f"received {got}, lost {lost:.3f}%, delivered twice {twice}")
    u, t = udp_rtts(f_uecho, 500), tcp_rtts(f_techo, 500)
    du, dt = udp_rtts(uecho_p, 200), tcp_rtts(techo_p, 200)
    for line in rows:
        print(line)
    print(f"rtt udp via tunnel  median {statistics.median(u):.3f} ms  p90 {pct(u, 0.9):.3f} ms  ({len(u)} of 500 answered)")
    print(f"rtt tcp via tunnel  median {statistics.median(t):.3f} ms  p90 {pct(t, 0.9):.3f} ms")
    print(f"rtt udp direct      median {statistics.median(du):.3f} ms;  tcp direct median {statistics.median(dt):.3f} ms")
    print(f"rtt udp - tcp via tunnel (median): {statistics.median(u) - statistics.median(t):+.3f} ms")


if __name__ == "__main__":
    main()
