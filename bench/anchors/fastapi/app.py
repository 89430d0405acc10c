"""The FastAPI anchor: what a competent engineer writes in an afternoon to serve the same model.

FastAPI + uvicorn (uvloop, httptools) + onnxruntime + Pillow, `POST /predict` with a multipart part
`image`, answering BentoML-style `{"prediction": ..., "probabilities": {...}}` like celestial-server.
The preprocessing is the model's own definition (model/celestial/preprocess.py), read from the ONNX
metadata: decode (a JPEG at reduced size in the DCT domain via Image.draft when the model says
`celestial.jpeg_dct_scaling = draft`), RGB, resize (stretch, bilinear/triangle, reducing_gap=None),
scale, normalise, NCHW. One ONNX Runtime session per worker process, 1 intra-op thread (uvicorn
--workers N gives the parallelism, as celestial-server's --workers does).

  MODEL=model/celestial-bodies.onnx uvicorn app:app --app-dir bench/anchors/fastapi --workers 2
"""

import io
import json
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, File, HTTPException, UploadFile
from PIL import Image

MODEL = os.environ.get("MODEL", "model/celestial-bodies.onnx")

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(MODEL, options, providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
LABELS = json.loads(meta["celestial.labels"])
H, W = int(meta["celestial.input_height"]), int(meta["celestial.input_width"])
SCALE = np.float32(float(meta["celestial.scale"]))
MEAN = np.array([float(v) for v in meta["celestial.mean"].split(",")], np.float32).reshape(3, 1, 1)
STD = np.array([float(v) for v in meta["celestial.std"].split(",")], np.float32).reshape(3, 1, 1)
DRAFT = meta.get("celestial.jpeg_dct_scaling") == "draft"
INPUT = meta.get("celestial.input_name", session.get_inputs()[0].name)

app = FastAPI(title="celestial FastAPI anchor")


def preprocess(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    if DRAFT and im.format == "JPEG":
        im.draft("RGB", (W, H))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, rgba)
    im = im.convert("RGB").resize((W, H), Image.Resampling.BILINEAR, reducing_gap=None)
    x = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) * SCALE
    return ((x - MEAN) / STD)[None]


@app.post("/predict")
async def predict(image: UploadFile = File(...)):
    data = await image.read()
    try:
        x = preprocess(data)
    except Exception as e:  # not an image Pillow can read
        raise HTTPException(status_code=400, detail=f"not a readable image: {e}")
    logits = session.run(None, {INPUT: x})[0][0].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return {"prediction": LABELS[int(p.argmax())], "probabilities": dict(zip(LABELS, p.tolist()))}


@app.get("/readyz")
async def readyz():
    return {"status": "ready"}
