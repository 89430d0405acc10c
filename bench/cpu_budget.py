"""The analysis half of bench/cpu_budget.sh.

Reads `perf report --stdio --sort dso,symbol -g none` of the server on stdin (the reports of several
profiled rounds may follow each other: the split is their mean) and the rounds' lines (key=value) from
the file named first; prints the server's CPU per request by part and the request rate the machine's
cores (second argument) would allow if only the parts no server code can avoid were left: JPEG entropy
decoding, ONNX Runtime, the kernel's socket work, and the load generator.
"""

import re
import statistics
import sys

ENTROPY = ("decode_mcu", "decode_mcu_fast", "decode_mcu_slow", "jpeg_fill_bit_buffer", "jpeg_huff_decode")
NAMES = {
    "entropy": "JPEG entropy decoding (libjpeg-turbo Huffman: every coefficient, even with a scaled IDCT)",
    "ort": "ONNX Runtime (the model's inference)",
    "kernel": "kernel (socket reads and writes, epoll, scheduling)",
    "rest": "the rest (HTTP, multipart, IDCT, colour conversion, resize, JSON, metrics, ...)",
}


def split(report):
    """Shares of the server's samples by part, from perf's report lines."""
    parts = dict.fromkeys(NAMES, 0.0)
    for line in report:
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(\S+)", line)
        if not m:
            continue
        share, dso, kind, sym = float(m[1]), m[2], m[3], m[4]
        if sym in ENTROPY:
            parts["entropy"] += share
        elif "onnxruntime" in dso:
            parts["ort"] += share
        elif kind == "k":
            parts["kernel"] += share
        else:
            parts["rest"] += share
    total = sum(parts.values()) or 1.0
    return {k: v / total for k, v in parts.items()}


def main():
    with open(sys.argv[1]) as f:
        # (a variant's name, in brackets, may hold flags with `=`: only the key=value words count)
        rounds = [dict(kv.split("=", 1) for kv in line.split() if re.fullmatch(r"\w+=\S*", kv)) for line in f]
    cores = int(sys.argv[2])
    profiled = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    # perf takes a share of the cores and adds to the server's CPU: the rates and CPU per request
    # come from the rounds without it, when there are any
    quiet = [r for r in rounds if r.get("profiled") != "yes"]
    rounds = quiet or rounds
    server_us = statistics.median(float(r["server_us_per_request"]) for r in rounds)
    wrk_us = statistics.median(float(r["wrk_us_per_request"]) for r in rounds)
    rps = statistics.median(float(r["rps"]) for r in rounds)
    shares = split(sys.stdin)
    which = "the last round" if profiled == 1 else f"the last {profiled} rounds"
    print(f"\n## the server's CPU per request by part (perf shares of {which} x the median)")
    for k, share in shares.items():
        print(f"  {share * 100:5.1f} %  {server_us * share:6.1f} us  {NAMES[k]}")
    floor = server_us * (shares["entropy"] + shares["ort"] + shares["kernel"]) + wrk_us
    print(
        f"\nmedian of {len(rounds)} rounds{' without perf' if quiet else ''}: {rps:.0f} req/s; "
        f"CPU per request: server {server_us:.1f} us, wrk {wrk_us:.1f} us"
    )
    print(f"unavoidable CPU per request (entropy decoding + inference + kernel + wrk): {floor:.1f} us")
    print(
        f"ceiling on {cores} cores if everything else cost nothing: {cores * 1e6 / floor:.0f} req/s "
        f"({cores * 1e6 / floor / rps:.2f}x the measured rate)"
    )


if __name__ == "__main__":
    main()
