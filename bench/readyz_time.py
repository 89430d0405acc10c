#!/usr/bin/env python3
"""Time from process start to the first 200 from GET /readyz, polling every millisecond.

usage: readyz_time.py BINARY PORT [TRIALS] [-- extra server args]
Prints one line per trial and a summary line `READYZ min_ms=... median_ms=... max_ms=...`.
Also reports the peak RSS (VmHWM) right after readiness."""

import signal
import socket
import statistics
import subprocess
import sys
import time

binary, port = sys.argv[1], int(sys.argv[2])
trials = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "--" else 5
extra = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
req = b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
times = []
for i in range(trials):
    t0 = time.monotonic()
    p = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", str(port), "--log-filter", "warn", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready = None
    while time.monotonic() - t0 < 10:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(req)
                if s.recv(16).startswith(b"HTTP/1.1 200"):
                    ready = (time.monotonic() - t0) * 1000
                    break
        except OSError:
            pass
        if p.poll() is not None:
            break
        time.sleep(0.001)
    rss = "?"
    try:
        rss = [line.split()[1] for line in open(f"/proc/{p.pid}/status") if line.startswith("VmHWM")][0]
    except OSError:
        pass
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    if ready is None:
        sys.exit(f"trial {i}: server never became ready (exit {p.returncode})")
    print(f"trial {i}: readyz 200 after {ready:.1f} ms (VmHWM at ready {rss} kB), exit {p.returncode}")
    times.append(ready)
print(f"READYZ min_ms={min(times):.1f} median_ms={statistics.median(times):.1f} max_ms={max(times):.1f}")
