#!/usr/bin/env python3
"""Silent and slowloris connections against a running server (the slow-client defences): opens SILENT
connections that never send a byte and SLOW connections that send a request head one byte per
second, then times POST /predict of IMAGE from a normal client (best and worst of 10), and counts
how many of the hostile connections the server has closed after WAIT seconds.

usage: silent_client.py PORT IMAGE SILENT SLOW WAIT
"""

import http.client
import socket
import sys
import time


def main():
    port, image, silent, slow, wait = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    body = open(image, "rb").read()
    hostile = []
    for i in range(silent + slow):
        s = socket.create_connection(("127.0.0.1", port))
        if i >= silent:
            s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        hostile.append(s)
    times = []
    for _ in range(10):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        t = time.monotonic()
        c.request("POST", "/predict", body=body, headers={"Content-Type": "image/jpeg"})
        r = c.getresponse()
        r.read()
        times.append((time.monotonic() - t) * 1000)
        assert r.status == 200, r.status
        c.close()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for s in hostile[silent:]:
            try:
                s.send(b"a")
            except OSError:
                pass
        time.sleep(1)
    closed = 0
    for s in hostile:
        s.settimeout(0.01)
        try:
            closed += s.recv(1) == b""
        except socket.timeout:
            pass
        except OSError:
            closed += 1
    print("SILENT silent=%d slow=%d predict_ms_best=%.1f predict_ms_worst=%.1f closed_after_%.0fs=%d/%d" % (
        silent, slow, min(times), max(times), wait, closed, len(hostile)))


if __name__ == "__main__":
    main()
