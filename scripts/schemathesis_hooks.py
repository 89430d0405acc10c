"""schemathesis hooks (loaded through schemathesis.toml): two facts of this API that JSON Schema
cannot say, so that the run checks what the document says and not what the schema language leaves
out.

1. What a picture of each media type is. The document says a picture is sent to POST /predict as
bytes with an image media type: the raw body's `Content-Type`, or the `image` part's (listed under
the part's `encoding`). JSON Schema cannot say "bytes that decode as a PNG", so without this
schemathesis sends any bytes it likes (a PDF, random bytes) as a schema-valid picture, and the
server rightly refuses them (400 `invalid_image`, 415 `unsupported_image_format`, both documented).
Here every media type the document lists gets real pictures of its format, which is schemathesis's
own way to generate bodies of a media type. PNG, BMP and GIF pictures are drawn (size and pixels);
JPEG and WebP are the test fixtures (server/tests/fixtures), as no encoder for them is at hand
without an imaging library.

2. What a multipart request sends. To check that a request outside the schema is refused,
schemathesis draws a body that violates it, but some violations never reach the server: every part
is bytes, so an `image` retyped to an object is sent as one part holding `{}` (to POST
/predict/batch, a batch of one, which the document allows); a property whose value is an empty list
sends no part at all; a part name with CR, LF or `"` is percent-encoded by the client. When the
server accepts such a request, the failure ("schema-violating request accepted") is dropped, and
counted as dropped in the output, only if the body as sent is valid for the document's schema;
any violation that reaches the server (a missing `image` part, too many parts, an empty picture,
a part name with another control character) still fails the run.
"""

import json
import random
import struct
import zlib
from pathlib import Path

import jsonschema_rs
import schemathesis
from hypothesis import strategies as st

FIXTURES = Path(__file__).resolve().parent.parent / "server" / "tests" / "fixtures"
# Small pictures: the point is the answer's shape, not the model's view of large ones.
SIDE = st.integers(min_value=1, max_value=40)


def _fixtures(suffix: str) -> list[bytes]:
    found = [p.read_bytes() for p in sorted(FIXTURES.glob(f"*{suffix}"))]
    if not found:
        raise RuntimeError(f"no {suffix} picture in {FIXTURES}")
    return found


@st.composite
def _rgb(draw) -> tuple[int, int, bytes]:
    """A width, a height and that many RGB pixels (from a drawn seed: cheap for Hypothesis)."""
    width, height = draw(SIDE), draw(SIDE)
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    return width, height, random.Random(seed).randbytes(width * height * 3)


def png(width: int, height: int, rgb: bytes) -> bytes:
    """An 8-bit RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    stride = width * 3
    rows = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def bmp(width: int, height: int, rgb: bytes) -> bytes:
    """A 24-bit BMP (rows bottom-up, BGR, each padded to 4 bytes)."""
    stride = width * 3
    pad = b"\x00" * (-stride % 4)
    rows = b"".join(
        b"".join(rgb[y * stride + x * 3 : y * stride + x * 3 + 3][::-1] for x in range(width)) + pad
        for y in reversed(range(height))
    )
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(rows), 0, 0, 14 + len(info)) + info + rows


def gif(width: int, height: int, rgb: bytes) -> bytes:
    """A GIF of 128 colours (the first 128 pixels' colours) whose LZW stream never compresses: a
    clear code every 100 pixels keeps every code 8 bits wide, so the codes are plain bytes."""
    palette = (rgb * 128)[: 128 * 3].ljust(128 * 3, b"\x00")
    indices = bytes(b % 128 for b in rgb[::3][: width * height])
    clear, end = 128, 129
    codes = bytearray()
    for start in range(0, len(indices), 100):
        codes.append(clear)
        codes += indices[start : start + 100]
    codes.append(end)
    blocks = b"".join(bytes([len(codes[i : i + 255])]) + codes[i : i + 255] for i in range(0, len(codes), 255))
    screen = struct.pack("<HHBBB", width, height, 0xF6, 0, 0)
    image = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + palette + image + bytes([7]) + blocks + b"\x00;"


PICTURES = {
    "jpeg": st.sampled_from(_fixtures(".jpg")),
    "webp": st.sampled_from(_fixtures(".webp")),
    "png": _rgb().map(lambda p: png(*p)),
    "bmp": _rgb().map(lambda p: bmp(*p)),
    "gif": _rgb().map(lambda p: gif(*p)),
}
# Every media type the document lists for a picture (routes::RAW_IMAGE_TYPES), with its format.
MEDIA_TYPES = {
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/pjpeg": "jpeg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/x-bmp": "bmp",
    "image/x-ms-bmp": "bmp",
}

for media_type, kind in MEDIA_TYPES.items():
    schemathesis.openapi.media_type(media_type, PICTURES[kind])
# Bytes of any picture format: the server reads the format from the bytes.
schemathesis.openapi.media_type("application/octet-stream", st.one_of(*PICTURES.values()))


def _part_text(value: object) -> str:
    """A part's content as a JSON Schema string: its bytes one character each (so `minLength`
    counts bytes), whatever type schemathesis gave the value."""
    data = getattr(value, "data", value)
    if isinstance(data, (bytes, bytearray)):
        return bytes(data).decode("latin-1")
    return data if isinstance(data, str) else json.dumps(data)


def _as_sent(body: dict, schema: dict) -> dict:
    """A multipart body as the server receives it: one part per list item (an empty list sends
    none, a single value one), names as the client writes them (`"`, CR and LF percent-encoded,
    as browsers and urllib3 do), and a property the schema makes an array read back as one."""
    parts: dict[str, list[str]] = {}
    for name, value in body.items():
        wire = name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
        parts.setdefault(wire, []).extend(_part_text(v) for v in (value if isinstance(value, list) else [value]))
    properties = schema.get("properties", {})
    return {
        name: texts if properties.get(name, {}).get("type") == "array" or len(texts) != 1 else texts[0]
        for name, texts in parts.items()
        if texts
    }


@schemathesis.hook("filter_failure")
def keep_failure(ctx, failure, case, response) -> bool:
    """Drop an "accepted schema-violating request" whose multipart body, as sent, is schema-valid."""
    if failure.code != "ST201" or case.media_type != "multipart/form-data" or not isinstance(case.body, dict):
        return True
    schema = next(b.definition["schema"] for b in case.operation.body if b.media_type == case.media_type)
    return not jsonschema_rs.validator_for(schema).is_valid(_as_sent(case.body, schema))
