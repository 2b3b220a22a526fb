#!/usr/bin/python3
"""Hostile and broken peers of the control plane (tests/robustness/control_plane.sh).

  control_plane_peer.py garbage HOST PORT        send junk bytes, then wait for the close
  control_plane_peer.py basp HOST PORT           send the 36-byte packet: a CAF BASP client
                                                 handshake header announcing a ~4 GB payload
  control_plane_peer.py silent HOST PORT SECS    connect and say nothing for SECS seconds
  control_plane_peer.py listen PORTFILE SECS     accept connections and never answer; writes
                                                 the port it listens on to PORTFILE

Prints what happened (whether the peer closed the connection, and how fast).
"""
import socket
import struct
import sys
import time


def wait_closed(s, limit):
    """Seconds until the peer closed the connection (None if it did not within `limit`)."""
    t0 = time.time()
    s.settimeout(limit)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return time.time() - t0
    except (socket.timeout, TimeoutError):
        return None
    except ConnectionResetError:
        return time.time() - t0


def main():
    mode = sys.argv[1]
    if mode == "listen":
        port_file, secs = sys.argv[2], float(sys.argv[3])
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        with open(port_file + ".tmp", "w") as f:
            f.write(str(listener.getsockname()[1]))
        import os
        os.rename(port_file + ".tmp", port_file)
        held = []
        listener.settimeout(0.1)
        end = time.time() + secs
        while time.time() < end:
            try:
                held.append(listener.accept()[0])
            except (socket.timeout, TimeoutError):
                pass
        return
    host, port = sys.argv[2], int(sys.argv[3])
    s = socket.create_connection((host, port), timeout=5)
    if mode == "garbage":
        s.sendall(b"GET / HTTP/1.1\r\nHost: meshpipe\r\n\r\n" + bytes(range(256)) * 4)
    elif mode == "basp":
        # operation 1 (client handshake), flags 0, payload length 0xFA000000 (4.2 GB),
        # operation data 3 (the BASP version), source and destination actor 0; then 4 bytes.
        s.sendall(struct.pack(">BBBBIQQQ", 1, 0, 0, 0, 0xFA000000, 3, 0, 0) + b"\0\0\0\0")
    elif mode == "silent":
        time.sleep(float(sys.argv[4]))
        print("silent peer: done")
        return
    closed = wait_closed(s, 10)
    if closed is None:
        print(f"{mode}: the peer kept the connection open")
    else:
        print(f"{mode}: the peer closed the connection after {closed:.2f} s")


if __name__ == "__main__":
    main()
