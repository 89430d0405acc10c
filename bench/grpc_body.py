"""Write one gRPC ModelInfer request for h2load (bench/oip_ab.sh): the message framed as gRPC frames it (a
zero compression flag, a 4-byte big-endian length), asking model celestial-bodies to classify the picture
given as the BYTES input `image`. Protobuf encoded by hand (four fields), so no generated code is needed.

  python3 bench/grpc_body.py PICTURE OUT
"""

import struct
import sys


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def main() -> None:
    picture = open(sys.argv[1], "rb").read()
    contents = field(8, picture)  # InferTensorContents.bytes_contents
    tensor = field(1, b"image") + field(2, b"BYTES") + field(3, varint(1)) + field(5, contents)
    request = field(1, b"celestial-bodies") + field(5, tensor)  # model_name, inputs
    with open(sys.argv[2], "wb") as out:
        out.write(b"\x00" + struct.pack(">I", len(request)) + request)


if __name__ == "__main__":
    main()
