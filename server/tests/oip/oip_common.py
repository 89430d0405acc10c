"""What the tests of the Open Inference Protocol's own clients share (test_tritonclient.py,
test_kserve.py: each in a process of its own, as the two packages register the same protobuf messages
and cannot be imported together). scripts/oip-clients starts the server and says where it is:

  CELESTIAL_OIP_PLAIN  host:port of the plain listener (HTTP/1.1 and h2c; REST and gRPC)
  CELESTIAL_OIP_TLS    host:port of the TLS listener (the certificate names localhost)
  CELESTIAL_OIP_CA     the certificate to trust for it
  CELESTIAL_OIP_KEY    the API key the server takes (--api-key-scope model: inference and metadata)

The expected answers come from model/golden.json (the training run's own tensors, predictions,
confidences) and from the Saturn pictures of server/tests/fixtures.
"""

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = json.loads((ROOT / "model" / "golden.json").read_text())
FIXTURES = ROOT / "server" / "tests" / "fixtures"
MODEL = "celestial-bodies"
PLAIN = os.environ.get("CELESTIAL_OIP_PLAIN", "")
TLS = os.environ.get("CELESTIAL_OIP_TLS", "")
CA = os.environ.get("CELESTIAL_OIP_CA", "")
KEY = os.environ.get("CELESTIAL_OIP_KEY", "")


def auth() -> dict:
    """The key as a header: a new dict each time, as tritonclient's HTTP client adds its own headers to the
    dict it is given."""
    return {"authorization": f"Bearer {KEY}"}


SKIP = pytest.mark.skipif(not PLAIN, reason="scripts/oip-clients starts the server and sets CELESTIAL_OIP_*")

# The Saturn pictures in several formats (each decoder path), as encoded files.
PICTURES = [
    (FIXTURES / name).read_bytes()
    for name in ["saturn.webp", "saturn-progressive.jpg", "saturn-cmyk.jpg", "saturn-lossless.webp"]
]


def golden_tensors() -> tuple[np.ndarray, list[dict]]:
    """The golden images' input tensors (NCHW float32, pixels / 255, as the training run made them)."""
    images = GOLDEN["images"]
    tensors = []
    for image in images:
        pixels = np.frombuffer(base64.b64decode(image["pixels_rgb8_base64"]), dtype=np.uint8)
        hwc = pixels.reshape(image["height"], image["width"], image["channels"]).astype(np.float32)
        tensors.append((hwc * np.float32(float(GOLDEN["input"]["scale"]))).transpose(2, 0, 1))
    return np.stack(tensors), images
