"""The preprocessing (celestial.preprocess) against the served rule: golden.json's fixtures, which the Rust
server's tests also check, and the rule as the model card states it."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from celestial.preprocess import (
    Preprocessing,
    jpeg_dct_factor,
    jpeg_draft_size,
    load_model_pixels,
    load_rgb8,
    parse_f32,
    tensor_sha256,
    to_rgb8,
    to_tensor,
)
from PIL import Image


def pixels(entry: dict, key: str = "pixels_rgb8_base64") -> np.ndarray:
    return np.frombuffer(base64.b64decode(entry[key]), np.uint8)


def golden_preprocessing(golden: dict) -> Preprocessing:
    i = golden["input"]
    _, _, h, w = i["shape"]
    mode = golden.get("resize_mode", "stretch")
    return Preprocessing(h, w, "rgb", i["layout"], i["scale"], tuple(i["mean"]), tuple(i["std"]), resize_mode=mode)


def test_decode_cases_reproduce_pixels_and_tensors(golden):
    pre = golden_preprocessing(golden)
    cases = golden["decode_cases"]
    assert len(cases) == 13
    for case in cases:
        data = base64.b64decode(case["file_base64"])
        got = load_model_pixels(io.BytesIO(data), pre.height, pre.width, pre.resize_mode)
        assert np.array_equal(got.ravel(), pixels(case)), case["stored_width"]
        assert tensor_sha256(to_tensor(got, pre)[None]) == case["tensor_sha256"]


def test_decode_cases_dct_scaled_size(golden):
    pre = golden_preprocessing(golden)
    for case in golden["decode_cases"]:
        if case["format"] != "jpeg":
            continue
        w, h = case["stored_width"], case["stored_height"]
        assert jpeg_dct_factor(w, h, pre.width, pre.height) == case["dct_scale_denominator"]
        assert jpeg_draft_size(w, h, pre.width, pre.height) == (case["decoded_width"], case["decoded_height"])
        got = load_rgb8(io.BytesIO(base64.b64decode(case["file_base64"])), draft=(pre.width, pre.height)).size
        want = (case["decoded_width"], case["decoded_height"])
        # EXIF orientations 5-8 turn the picture by 90 degrees after the decode
        assert got == (want[::-1] if case["exif_orientation"] >= 5 else want)


@pytest.mark.parametrize(
    ("stored", "factor", "decoded"),
    [
        ((128, 128), 4, (32, 32)),
        ((300, 200), 4, (75, 50)),
        ((100, 60), 1, (100, 60)),
        ((256, 256), 8, (32, 32)),
        ((257, 129), 4, (65, 33)),
        ((70, 70), 2, (35, 35)),
        ((20, 24), 1, (20, 24)),
    ],
)
def test_dct_factor_as_the_model_card_states(stored, factor, decoded):
    """The largest s in {8, 4, 2, 1} with s <= min(w // 32, h // 32); decoded size ceil(w / s) x ceil(h / s)."""
    assert jpeg_dct_factor(*stored, 32, 32) == factor
    assert jpeg_draft_size(*stored, 32, 32) == decoded


def test_golden_tensors_follow_the_float32_formula(golden):
    """t = ((p * scale) - mean[c]) / std[c] in float32, NCHW: the golden tensor_sha256 bit for bit."""
    pre = golden_preprocessing(golden)
    scale = np.float32(float(pre.scale))
    for entry in golden["images"]:
        px = pixels(entry).reshape(entry["height"], entry["width"], 3)
        by_hand = np.stack([(px[..., c].astype(np.float32) * scale - np.float32(0)) / np.float32(1) for c in range(3)])[
            None
        ]
        assert by_hand.dtype == np.float32
        assert tensor_sha256(by_hand) == entry["tensor_sha256"]
        assert tensor_sha256(to_tensor(px, pre)[None]) == entry["tensor_sha256"]


def test_to_tensor_multiplies_subtracts_divides_in_float32():
    pre = Preprocessing(
        1, 2, "rgb", "NCHW", "0.00392156862745098", ("0.485", "0.456", "0.406"), ("0.229", "0.224", "0.225")
    )
    px = np.array([[[0, 128, 255], [17, 200, 3]]], np.uint8)
    got = to_tensor(px, pre)
    assert got.shape == (3, 1, 2) and got.dtype == np.float32
    for c, (m, s) in enumerate(zip(pre.mean, pre.std)):
        want = (px[..., c].astype(np.float32) * np.float32(pre.scale) - np.float32(m)) / np.float32(s)
        assert np.array_equal(got[c], want)


def test_golden_pixels_from_the_dataset(golden, raw):
    """The committed golden pixels come out of the dataset's files again (decoded, DCT-scaled, resized)."""
    pre = golden_preprocessing(golden)
    for entry in golden["images"]:
        decoded = np.asarray(load_rgb8(raw / entry["image"], draft=(pre.width, pre.height)), np.uint8)
        assert decoded.shape == (entry["decoded_height"], entry["decoded_width"], 3)
        assert np.array_equal(decoded.ravel(), pixels(entry, "decoded_rgb8_base64"))
        got = load_model_pixels(raw / entry["image"], pre.height, pre.width, pre.resize_mode)
        assert np.array_equal(got.ravel(), pixels(entry)), entry["image"]


def test_alpha_is_composited_onto_black():
    """c' = round(c * a / 255)."""
    rgba = np.array([[[200, 100, 255, 128], [255, 255, 255, 0], [10, 20, 30, 255]]], np.uint8)
    got = np.asarray(to_rgb8(Image.fromarray(rgba, "RGBA")))
    want = np.rint(rgba[..., :3].astype(np.float64) * rgba[..., 3:4] / 255).astype(np.uint8)
    assert np.array_equal(got, want)
    assert got[0, 0].tolist() == [100, 50, 128]


def test_grayscale_and_16_bit_sources_become_rgb8():
    gray = np.asarray(to_rgb8(Image.fromarray(np.array([[0, 77, 255]], np.uint8), "L")))
    assert gray.tolist() == [[[0, 0, 0], [77, 77, 77], [255, 255, 255]]]
    wide = Image.fromarray(np.array([[0, 257, 32768, 65535]], np.uint16))
    got = np.asarray(to_rgb8(wide))[..., 0]
    assert got.tolist() == [[0, 1, 128, 255]]  # round(v * 255 / 65535)


def test_parse_f32_is_one_correct_rounding():
    assert parse_f32("0.00392156862745098") == np.float32(1 / 255)
    assert parse_f32("0") == np.float32(0)
    assert parse_f32("0.1") == np.float32(0.1)
