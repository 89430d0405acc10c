"""KServe's REST and gRPC clients, unchanged, against the real server (scripts/oip-clients): readiness,
tensors in JSON over plain HTTP and TLS, encoded pictures over gRPC, with the API key."""

import asyncio
import ssl

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from oip_common import CA, MODEL, PICTURES, PLAIN, SKIP, TLS, auth, golden_tensors

pytestmark = SKIP


def test_kserve_rest_and_grpc_clients():
    tensors, images = golden_tensors()

    async def run():
        rest = InferenceRESTClient(RESTConfig(protocol="v2", verify=ssl.create_default_context(cafile=CA)))
        try:
            for base in [f"http://{PLAIN}", f"https://{TLS}"]:
                assert await rest.is_server_live(base)
                assert await rest.is_server_ready(base)
                assert await rest.is_model_ready(base, MODEL)
                tensor = InferInput("input", list(tensors.shape), "FP32")
                tensor.set_data_from_numpy(tensors, binary_data=False)
                request = InferRequest(model_name=MODEL, infer_inputs=[tensor])
                answer = await rest.infer(base, request, model_name=MODEL, headers=auth())
                outputs = {o.name: o.as_numpy() for o in answer.outputs}
                assert list(outputs["label"]) == [i["prediction"] for i in images]
                assert outputs["known"].tolist() == [i["known"] for i in images]
        finally:
            await rest.close()
        grpc = InferenceGRPCClient(PLAIN)
        try:
            assert await grpc.is_server_ready()
            assert await grpc.is_model_ready(MODEL)
            image = InferInput("image", [len(PICTURES)], "BYTES")
            image.set_data_from_numpy(np.array(PICTURES, dtype=np.object_))
            # grpc.aio takes metadata as (key, value) pairs
            request = InferRequest(model_name=MODEL, infer_inputs=[image])
            answer = await grpc.infer(request, headers=list(auth().items()))
            labels = {o.name: o.as_numpy() for o in answer.outputs}["label"]
            assert [v.decode() for v in labels] == ["Saturn"] * len(PICTURES)
        finally:
            await grpc.close()

    asyncio.run(run())
