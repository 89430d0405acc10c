#!/usr/bin/env python3
"""Seed inputs for the cargo-fuzz targets of server/fuzz (called by scripts/fuzz).

Usage: fuzz_seeds.py DATASET_RAW OUT_DIR   (needs Pillow)

Writes OUT_DIR/{image,body,root_path}/: a few dataset JPEGs per class, the same images as PNG
(8-bit, 16-bit, grayscale, alpha, palette), WebP, GIF and BMP, progressive and grayscale JPEGs,
truncated and corrupt files; HTTP bodies in the `body` target's format (a flags byte, the
Content-Type up to `\\n`, the body) with 0, 1 and 2 image parts, odd boundaries and media types;
and root-path inputs in the `root_path` target's format (configured prefix, X-Forwarded-Prefix,
method byte + target, extra headers, one per line). Deterministic: the same dataset gives the
same seeds.
"""

import io
import sys
from pathlib import Path

from PIL import Image

PER_CLASS = 3


def encode(img, fmt, **kw):
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def image_seeds(raw: Path):
    seeds = {}
    for cls in sorted(p for p in raw.iterdir() if p.is_dir()):
        files = sorted(cls.glob("*.jpg"), key=lambda p: (p.stat().st_size, p.name))[:PER_CLASS]
        for f in files:
            seeds[f"jpg-{f.stem}"] = f.read_bytes()
    first = sorted(raw.glob("*/*.jpg"))[0]
    img = Image.open(first).convert("RGB")
    small = img.resize((32, 24))
    tiny = img.resize((3, 2))
    seeds["png-rgb"] = encode(small, "PNG")
    seeds["png-gray"] = encode(small.convert("L"), "PNG")
    seeds["png-rgba"] = encode(small.convert("RGBA"), "PNG")
    seeds["png-la"] = encode(small.convert("LA"), "PNG")
    seeds["png-palette"] = encode(small.convert("P"), "PNG")
    seeds["png-16bit"] = encode(small.convert("L").point(lambda v: v * 257).convert("I;16"), "PNG")
    seeds["png-1bit"] = encode(small.convert("1"), "PNG")
    seeds["png-1x1"] = encode(tiny.resize((1, 1)), "PNG")
    seeds["png-optimized"] = encode(small, "PNG", optimize=True)
    seeds["webp-lossy"] = encode(small, "WEBP", quality=50)
    seeds["webp-lossless"] = encode(small.convert("RGBA"), "WEBP", lossless=True)
    seeds["gif"] = encode(small.convert("P"), "GIF")
    frames = [small, small.rotate(90), small.rotate(180)]
    seeds["gif-anim"] = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    seeds["bmp-rgb"] = encode(small, "BMP")
    seeds["bmp-gray"] = encode(small.convert("L"), "BMP")
    seeds["bmp-1bit"] = encode(small.convert("1"), "BMP")
    seeds["jpg-progressive"] = encode(small, "JPEG", progressive=True, quality=60)
    seeds["jpg-gray"] = encode(small.convert("L"), "JPEG")
    seeds["jpg-cmyk"] = encode(small.convert("CMYK"), "JPEG")
    seeds["jpg-420"] = encode(small, "JPEG", subsampling=2, quality=30)
    seeds["jpg-tiny"] = encode(tiny, "JPEG")
    whole = (raw / first.parent.name / first.name).read_bytes()
    seeds["jpg-truncated"] = whole[: len(whole) // 3]
    seeds["png-truncated"] = seeds["png-rgb"][: len(seeds["png-rgb"]) // 2]
    seeds["jpg-header-only"] = whole[:200]
    seeds["empty"] = b""
    seeds["text"] = b"hello, not an image\n"
    return seeds


BOUNDARY = b"celestial-fuzz-boundary"


def part(name, data, boundary=BOUNDARY, filename=b"x.jpg", ctype=b"image/jpeg"):
    head = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + name + b'"'
    if filename is not None:
        head += b'; filename="' + filename + b'"'
    head += b"\r\n"
    if ctype is not None:
        head += b"Content-Type: " + ctype + b"\r\n"
    return head + b"\r\n" + data + b"\r\n"


def multipart(parts, boundary=BOUNDARY):
    return b"".join(parts) + b"--" + boundary + b"--\r\n"


def body_seeds(images):
    """Flags byte: bit 0 batch, bits 1-3 chunk size, bit 4 Content-Length, bit 5 no Content-Type."""
    jpg = images["jpg-tiny"]
    png = images["png-1x1"]
    ct = b"multipart/form-data; boundary=" + BOUNDARY
    seeds = {}

    def add(name, flags, content_type, body):
        seeds[name] = bytes([flags]) + content_type + b"\n" + body

    add("mp-1-image", 0x00, ct, multipart([part(b"image", jpg)]))
    add("mp-1-image-batch", 0x01, ct, multipart([part(b"image", png, ctype=b"image/png")]))
    add("mp-2-images", 0x00, ct, multipart([part(b"image", jpg), part(b"image", png)]))
    add("mp-2-images-batch", 0x11, ct, multipart([part(b"image", jpg), part(b"image", png)]))
    add("mp-0-parts", 0x00, ct, multipart([]))
    add("mp-other-part", 0x01, ct, multipart([part(b"note", b"hi", filename=None, ctype=None)]))
    add(
        "mp-other-and-image",
        0x01,
        ct,
        multipart([part(b"note", b"hi", filename=None, ctype=None), part(b"image", jpg)]),
    )
    add("mp-chunked-4", 0x06, ct, multipart([part(b"image", png)]))
    add("mp-chunked-1", 0x03, ct, multipart([part(b"image", png)]))
    add("mp-no-closing", 0x00, ct, b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="image"\r\n\r\n' + png)
    add(
        "mp-quoted-boundary",
        0x00,
        b'multipart/form-data; boundary="a b:c"',
        multipart([part(b"image", png, boundary=b"a b:c")], boundary=b"a b:c"),
    )
    add("mp-no-boundary", 0x00, b"multipart/form-data", multipart([part(b"image", png)]))
    add("mp-empty-boundary", 0x00, b"multipart/form-data; boundary=", b"--\r\n")
    add("mp-wrong-boundary", 0x00, ct, multipart([part(b"image", png, boundary=b"other")], boundary=b"other"))
    add(
        "mp-upper",
        0x00,
        b"Multipart/Form-Data; BOUNDARY=" + BOUNDARY + b"; charset=utf-8",
        multipart([part(b"image", png)]),
    )
    add("mp-preamble", 0x00, ct, b"preamble\r\n" + multipart([part(b"image", png)]) + b"epilogue")
    add("mp-lf-only", 0x00, ct, multipart([part(b"image", png)]).replace(b"\r\n", b"\n"))
    add("raw-jpeg", 0x00, b"image/jpeg", jpg)
    add("raw-png-batch", 0x01, b"image/png", png)
    add("raw-octet", 0x10, b"application/octet-stream", png)
    add("raw-no-ct", 0x20, b"", jpg)
    add("raw-wrong-ct", 0x00, b"image/png", jpg)
    add("raw-empty", 0x00, b"image/jpeg", b"")
    add("ct-semicolons", 0x00, b";;;=;", png)
    add("ct-text", 0x00, b"text/plain; charset=utf-8", b"hello")
    add("ct-json", 0x00, b"application/json", b'{"image": "x"}')
    add("ct-params", 0x00, b'image/jpeg; q="a\\"b"; x=y', jpg)
    add("ct-non-ascii", 0x00, "image/jpég".encode(), jpg)
    add("ct-spaces", 0x00, b"   ", jpg)
    add("ct-form-urlencoded", 0x00, b"application/x-www-form-urlencoded", b"image=abc")
    return seeds


def root_path_seeds():
    lines = {
        "plain-docs-json": [b"", b"-", b"\x00/docs.json"],
        "configured-docs-json": [b"/celestial", b"-", b"\x00/docs.json"],
        "forwarded-docs-json": [b"", b"/api/v1", b"\x00/docs.json"],
        "both-docs-json": [b"/celestial/", b"/edge", b"\x00/docs.json?x=1"],
        "redirect": [b"/celestial", b"-", b"\x00/docs/"],
        "redirect-forwarded": [b"", b"/p%20q/r", b"\x00/docs/"],
        "redirect-bad-forwarded": [b"/a", b"//evil.example", b"\x00/docs/"],
        "dot-segments": [b"/a/../b", b"/./x", b"\x00/docs/"],
        "too-long": [b"/" + b"a" * 300, b"/" + b"b" * 257, b"\x00/"],
        "root": [b"/", b"/", b"\x00/"],
        "post-predict": [b"/x", b"/y", b"\x01/predict"],
        "head-docs": [b"/x", b"-", b"\x02/docs"],
        "put-livez": [b"", b"/z", b"\x03/livez"],
        "not-found": [b"/x", b"/y", b"\x00/nowhere/../docs"],
        "absolute-uri": [b"", b"/y", b"\x00http://host/docs/"],
        "two-forwarded": [b"", b"/one", b"\x00/docs/", b"x-forwarded-prefix:/two"],
        "host-header": [b"", b"/one", b"\x00/docs.json", b"host:example.com", b"x-forwarded-host:evil"],
        "percent": [b"/%2e%2e", b"/%2F%2Fevil", b"\x00/docs/"],
        "metrics": [b"/m", b"-", b"\x00/metrics"],
        "readyz": [b"/m", b"-", b"\x00/readyz"],
    }
    return {k: b"\n".join(v) for k, v in lines.items()}


def main():
    raw, out = Path(sys.argv[1]), Path(sys.argv[2])
    images = image_seeds(raw)
    for target, seeds in (
        ("image", images),
        ("body", body_seeds(images)),
        ("root_path", root_path_seeds()),
    ):
        d = out / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (d / name).write_bytes(data)
        print(f"{target}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")


if __name__ == "__main__":
    main()
