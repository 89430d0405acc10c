"""Plot of bench/growth.sh's table: req/s and p50/p99 vs concurrency, and vs image size (JPEG, PNG)."""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

table, png = sys.argv[1], sys.argv[2]
rows = []
for line in open(table):
    if line.startswith("#") or "=" not in line:
        continue
    fields = dict(f.split("=", 1) for f in line.split())
    rows.append(fields)
conc = [r for r in rows if "c" in r]
fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
cs = [int(r["c"]) for r in conc]
a.plot(cs, [float(r["rps"]) for r in conc], "o-", color="tab:blue", label="req/s")
a.set_xscale("log", base=2)
a.set_xlabel("concurrent connections")
a.set_ylabel("req/s", color="tab:blue")
a2 = a.twinx()
a2.plot(cs, [float(r["p50_ms"]) for r in conc], "s--", color="tab:orange", label="p50")
a2.plot(cs, [float(r["p99_ms"]) for r in conc], "^--", color="tab:red", label="p99")
a2.set_yscale("log")
a2.set_ylabel("latency (ms)")
a2.legend(loc="upper left")
a.set_title("POST /predict, 128x128 JPEG (7.6 KB)")
for fmt, color in (("jpg", "tab:green"), ("png", "tab:purple")):
    pts = [r for r in rows if fmt in r]
    px = [int(r[fmt]) for r in pts]
    b.plot(px, [float(r["rps"]) for r in pts], "o-", color=color, label=f"{fmt.upper()} req/s")
    b.plot(px, [float(r["p99_ms"]) for r in pts], "^:", color=color, alpha=0.6, label=f"{fmt.upper()} p99 ms")
b.set_xscale("log", base=2)
b.set_yscale("log")
b.set_xlabel("image side (px), square; 2048 = 4 Mpx")
b.set_title("vs image size, c=8")
b.legend(fontsize=8)
fig.suptitle(open(table).readline().lstrip("# ").strip()[:140], fontsize=8)
fig.tight_layout()
fig.savefig(png, dpi=110)
