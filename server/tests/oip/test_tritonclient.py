"""tritonclient's HTTP and gRPC clients, unchanged, against the real server (scripts/oip-clients): health,
metadata, encoded pictures and tensors in batches, each error class, TLS and the API key."""

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from oip_common import CA, GOLDEN, KEY, MODEL, PICTURES, PLAIN, SKIP, TLS, auth, golden_tensors
from tritonclient.utils import InferenceServerException

pytestmark = SKIP


def triton(module, tls: bool = False):
    """A tritonclient client of `module` (tritonclient.http or tritonclient.grpc)."""
    if module is triton_grpc:
        if tls:
            return triton_grpc.InferenceServerClient(TLS, ssl=True, root_certificates=CA)
        return triton_grpc.InferenceServerClient(PLAIN)
    if tls:
        return triton_http.InferenceServerClient(TLS, ssl=True, ssl_options={"ca_certs": CA})
    return triton_http.InferenceServerClient(PLAIN)


def status_of(e: InferenceServerException) -> str:
    """The HTTP status or the gRPC code of a refusal, as a string ("400", "StatusCode.NOT_FOUND")."""
    return str(e.status())


BOTH = pytest.mark.parametrize("module", [triton_http, triton_grpc], ids=["http", "grpc"])


@BOTH
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_health_and_metadata(module, tls):
    c = triton(module, tls)
    assert c.is_server_live()
    assert c.is_server_ready()
    assert c.is_model_ready(MODEL)
    assert c.is_model_ready(MODEL, GOLDEN["model_version"])
    meta = c.get_model_metadata(MODEL, headers=auth(), **({"as_json": True} if module is triton_grpc else {}))
    assert meta["name"] == MODEL
    assert meta["versions"] == [GOLDEN["model_version"]]
    inputs = {i["name"]: (i["datatype"], [int(d) for d in i["shape"]]) for i in meta["inputs"]}
    assert inputs == {"image": ("BYTES", [-1]), "input": ("FP32", [-1, *GOLDEN["input"]["shape"][1:]])}
    outputs = {o["name"]: (o["datatype"], [int(d) for d in o["shape"]]) for o in meta["outputs"]}
    labels = len(GOLDEN["labels"])
    assert outputs == {
        "label": ("BYTES", [-1]),
        "probabilities": ("FP32", [-1, labels]),
        "confidence": ("FP32", [-1]),
        "known": ("BOOL", [-1]),
    }
    server = c.get_server_metadata(headers=auth(), **({"as_json": True} if module is triton_grpc else {}))
    assert "binary_tensor_data" in server["extensions"]


@BOTH
def test_encoded_pictures_in_one_batch(module):
    c = triton(module)
    batch = np.array(PICTURES, dtype=np.object_)
    image = module.InferInput("image", [len(PICTURES)], "BYTES")
    image.set_data_from_numpy(batch)
    result = c.infer(MODEL, [image], headers=auth(), request_id="pictures-1")
    labels = [v.decode() for v in result.as_numpy("label")]
    assert labels == ["Saturn"] * len(PICTURES)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (len(PICTURES), len(GOLDEN["labels"]))
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert probabilities.argmax(axis=1).tolist() == [GOLDEN["labels"].index("Saturn")] * len(PICTURES)
    assert ((0 <= result.as_numpy("confidence")) & (result.as_numpy("confidence") <= 1)).all()
    assert result.as_numpy("known").dtype == np.bool_
    assert result.get_response(**({"as_json": True} if module is triton_grpc else {}))["id"] == "pictures-1"


@pytest.mark.parametrize(
    ("module", "binary"),
    [(triton_http, True), (triton_http, False), (triton_grpc, True)],
    ids=["http-binary", "http-json", "grpc"],
)
def test_golden_tensors_give_the_golden_answers(module, binary):
    tensors, images = golden_tensors()
    c = triton(module)
    tensor = module.InferInput("input", list(tensors.shape), "FP32")
    kwargs = {"binary_data": binary} if module is triton_http else {}
    tensor.set_data_from_numpy(tensors, **kwargs)
    outputs = [
        module.InferRequestedOutput(name, **kwargs) for name in ["label", "probabilities", "confidence", "known"]
    ]
    result = c.infer(MODEL, [tensor], outputs=outputs, headers=auth())
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert labels == [i["prediction"] for i in images]
    expected = np.array([i["probabilities"] for i in images], dtype=np.float32)
    assert np.abs(result.as_numpy("probabilities") - expected).max() < 1e-4
    assert np.abs(result.as_numpy("confidence") - np.array([i["confidence"] for i in images])).max() < 1e-4
    assert result.as_numpy("known").tolist() == [i["known"] for i in images]


def refused(module, inputs, model=MODEL, version="", headers=None, outputs=None) -> tuple[str, str]:
    """The status and message of an inference the server refuses (with the key unless `headers` given)."""
    with pytest.raises(InferenceServerException) as e:
        headers = auth() if headers is None else headers
        triton(module).infer(model, inputs, model_version=version, headers=headers, outputs=outputs)
    return status_of(e.value), e.value.message()


def pictures(module, elements: list[bytes]):
    image = module.InferInput("image", [len(elements)], "BYTES")
    image.set_data_from_numpy(np.array(elements, dtype=np.object_))
    return [image]


@BOTH
def test_each_error_class(module):
    grpc = module is triton_grpc
    # One bad picture fails the whole request, naming its index.
    status, message = refused(module, pictures(module, [PICTURES[0], b"not a picture", PICTURES[1]]))
    assert status == ("StatusCode.INVALID_ARGUMENT" if grpc else "400")
    assert message.startswith("Element 1 of input `image`"), message
    # Another model or version.
    status, message = refused(module, pictures(module, [PICTURES[0]]), model="resnet")
    assert status == ("StatusCode.NOT_FOUND" if grpc else "404")
    assert MODEL in message
    status, _ = refused(module, pictures(module, [PICTURES[0]]), version="0.0.1")
    assert status == ("StatusCode.NOT_FOUND" if grpc else "404")
    # An input the model does not have, a shape that does not fit, an output it does not have.
    wrong = module.InferInput("pixels", [1], "BYTES")
    wrong.set_data_from_numpy(np.array([PICTURES[0]], dtype=np.object_))
    status, message = refused(module, [wrong])
    assert status == ("StatusCode.INVALID_ARGUMENT" if grpc else "400")
    assert "`image`" in message and "`input`" in message
    small = module.InferInput("input", [1, 3, 8, 8], "FP32")
    small.set_data_from_numpy(np.zeros((1, 3, 8, 8), dtype=np.float32))
    status, message = refused(module, [small])
    assert status == ("StatusCode.INVALID_ARGUMENT" if grpc else "400")
    assert "[1, 3, 32, 32]" in message
    status, message = refused(
        module, pictures(module, [PICTURES[0]]), outputs=[module.InferRequestedOutput("embedding")]
    )
    assert status == ("StatusCode.INVALID_ARGUMENT" if grpc else "400")
    # More pictures than --max-batch-images (scripts/oip-clients sets 12).
    status, _ = refused(module, pictures(module, [PICTURES[0]] * 13))
    assert status == ("StatusCode.RESOURCE_EXHAUSTED" if grpc else "413")
    # No key, a wrong key.
    for headers in [{}, {"x-api-key": "not-the-key"}]:
        status, _ = refused(module, pictures(module, [PICTURES[0]]), headers=headers)
        assert status == ("StatusCode.UNAUTHENTICATED" if grpc else "401")
    with pytest.raises(InferenceServerException):
        triton(module).get_model_metadata(MODEL)


@BOTH
def test_tls_with_the_key_header(module):
    c = triton(module, tls=True)
    result = c.infer(MODEL, pictures(module, PICTURES[:2]), headers={"x-api-key": KEY})
    assert [v.decode() for v in result.as_numpy("label")] == ["Saturn", "Saturn"]
