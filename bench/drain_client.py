#!/usr/bin/env python3
"""Load for bench/drain.sh: THREADS threads post IMAGE to POST /predict on PORT_A and PORT_B in
turn for SECONDS, over keep-alive HTTP/1.1 connections. A connection that is refused or closes
without an answer is retried on the other server (what a load balancer does); a request fails when
it gets an answer other than 200, or when no server answered it in 4 attempts. Counted apart:
`refused` (connecting to a server whose listener is closed) and `retried_after_close` (a
connection that closed or reset before its answer).

usage: drain_client.py IMAGE PORT_A PORT_B THREADS SECONDS
"""

import http.client
import sys
import threading
import time


def worker(body, ports, until, tally, lock):
    conns = {}
    turn = 0
    mine = dict.fromkeys(tally, 0)
    while time.monotonic() < until:
        for attempt in range(4):
            port = ports[(turn + attempt) % 2]
            conn = conns.pop(port, None) or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "image/jpeg"})
                resp = conn.getresponse()
                resp.read()
            except ConnectionRefusedError:
                conn.close()
                mine["refused"] += 1
                continue
            except (OSError, http.client.HTTPException):
                conn.close()
                mine["retried_after_close"] += 1
                continue
            closing = (resp.getheader("Connection") or "").lower() == "close"
            if closing:
                conn.close()
            else:
                conns[port] = conn
            if resp.status == 200:
                mine["ok"] += 1
                if closing and port == ports[0]:
                    mine["closing_answers_from_a"] += 1
            else:
                mine["failed"] += 1
                mine["status_%d" % resp.status] = mine.get("status_%d" % resp.status, 0) + 1
            break
        else:
            mine["failed"] += 1
            mine["unanswered"] += 1
        turn += 1
    with lock:
        for k, v in mine.items():
            tally[k] = tally.get(k, 0) + v


def main():
    image, port_a, port_b, threads, seconds = sys.argv[1:6]
    body = open(image, "rb").read()
    ports = (int(port_a), int(port_b))
    tally = {"ok": 0, "failed": 0, "unanswered": 0, "refused": 0, "retried_after_close": 0, "closing_answers_from_a": 0}
    lock = threading.Lock()
    started = time.monotonic()
    until = started + float(seconds)
    pool = [threading.Thread(target=worker, args=(body, ports, until, tally, lock)) for _ in range(int(threads))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - started
    total = tally["ok"] + tally["failed"]
    print(
        "DRAIN requests=%d ok=%d failed=%d unanswered=%d refused=%d retried_after_close=%d "
        "closing_answers_from_a=%d rps=%.0f %s"
        % (
            total,
            tally["ok"],
            tally["failed"],
            tally["unanswered"],
            tally["refused"],
            tally["retried_after_close"],
            tally["closing_answers_from_a"],
            total / elapsed,
            " ".join("%s=%d" % kv for kv in sorted(tally.items()) if kv[0].startswith("status_")),
        )
    )


if __name__ == "__main__":
    main()
