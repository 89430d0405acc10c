//! The Open Inference Protocol against the real server in-process (fake classifier, no ONNX
//! Runtime): REST with JSON and with the binary tensor extension, gRPC on the same port (h2c,
//! messages framed by hand), the errors of each class and their statuses and codes, API keys on
//! both, and the shared metrics. The ecosystem's own clients (tritonclient, kserve) run against
//! the real model in `scripts/oip-clients`.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use celestial_server::grpc::proto::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use celestial_server::grpc::proto::{
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelMetadataResponse,
};
use celestial_server::routes;
use celestial_server::testing::{FakeClassifier, LABELS, TestServer};
use common::{error_of, get_json, synthetic_sized};
use image::ImageFormat;
use prost::Message;
use serde_json::{Value, json};

const KEY: &str = "v2-test-key_8c1f";
const INFER: &str = "/v2/models/fake/infer";

/// The server in-process over the fake classifier.
async fn start(args: &[&str]) -> TestServer {
    common::start_with(args, Some(Arc::new(FakeClassifier::default()))).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// An h2c client (HTTP/2 with prior knowledge), as gRPC clients connect.
fn h2c() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A PNG `width` pixels wide: the fake classifier's label is `LABELS[width % 10]`.
fn picture(width: u32) -> Vec<u8> {
    synthetic_sized(width, 4, ImageFormat::Png)
}

/// The raw form of BYTES elements (a 4-byte little-endian length before each).
fn raw_bytes(elements: &[&[u8]]) -> Vec<u8> {
    elements
        .iter()
        .flat_map(|e| {
            (e.len() as u32)
                .to_le_bytes()
                .into_iter()
                .chain(e.iter().copied())
        })
        .collect()
}

/// A body of `json` followed by `binary`, and the JSON's length.
fn binary_body(json: &Value, binary: &[u8]) -> (Vec<u8>, usize) {
    let mut body = serde_json::to_vec(json).unwrap();
    let len = body.len();
    body.extend_from_slice(binary);
    (body, len)
}

async fn post_binary(s: &TestServer, json: &Value, binary: &[u8]) -> reqwest::Response {
    let (body, len) = binary_body(json, binary);
    client()
        .post(s.url(INFER))
        .header("Inference-Header-Content-Length", len)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// `POST path` on `s` with a JSON `body`, answered as JSON.
async fn post_json(s: &TestServer, path: &str, body: &Value) -> Value {
    let resp = client().post(s.url(path)).json(body).send().await.unwrap();
    resp.json().await.unwrap()
}

#[tokio::test]
async fn health_and_metadata_describe_the_served_model() {
    let s = start(&[]).await;
    let c = client();
    let get = |path: &str| c.get(s.url(path)).send();
    let live = get_json(&c, &s, routes::V2_LIVE).await;
    assert_eq!(live, json!({"live": true}));
    let ready = get_json(&c, &s, routes::V2_READY).await;
    assert_eq!(ready, json!({"ready": true}));
    let server = get_json(&c, &s, routes::V2_SERVER).await;
    assert_eq!(server["extensions"], json!(["binary_tensor_data"]));
    for path in ["/v2/models/fake", "/v2/models/fake/versions/0.0.0"] {
        let m = get_json(&c, &s, path).await;
        assert_eq!(m["name"], "fake");
        assert_eq!(m["versions"], json!(["0.0.0"]));
        assert_eq!(
            m["inputs"][0],
            json!({"name": "image", "datatype": "BYTES", "shape": [-1]})
        );
        assert_eq!(
            m["inputs"][1],
            json!({"name": "input", "datatype": "FP32", "shape": [-1, 3, 64, 64]})
        );
        assert_eq!(
            m["outputs"][1],
            json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]})
        );
    }
    let ready = get_json(&c, &s, "/v2/models/fake/ready").await;
    assert_eq!(ready["ready"], true);
    for path in [
        "/v2/models/other",
        "/v2/models/fake/versions/9/ready",
        "/v2/models/other/infer",
    ] {
        let resp = match path.ends_with("/infer") {
            true => c.post(s.url(path)).body("{}").send().await.unwrap(),
            false => get(path).await.unwrap(),
        };
        let (status, code, message) = error_of(resp).await;
        assert_eq!(
            (status, code.as_str()),
            (404, "model_not_found"),
            "{path}: {message}"
        );
        assert!(
            message.contains("`fake`") || message.contains("`0.0.0`"),
            "{message}"
        );
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn pictures_in_binary_and_tensors_in_json_are_classified_in_order() {
    let s = start(&[]).await;
    let pictures = [picture(13), picture(7), picture(20)];
    let elements: Vec<&[u8]> = pictures.iter().map(Vec::as_slice).collect();
    let raw = raw_bytes(&elements);
    let request = json!({
        "id": "r-1",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [3],
            "parameters": {"binary_data_size": raw.len()}}],
        "outputs": [{"name": "label"}, {"name": "probabilities", "parameters": {"binary_data": true}}]
    });
    let resp = post_binary(&s, &request, &raw).await;
    assert_eq!(resp.status(), 200);
    let json_len: usize = resp.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = resp.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&body[..json_len]).unwrap();
    assert_eq!(
        (head["id"].as_str(), head["model_name"].as_str()),
        (Some("r-1"), Some("fake"))
    );
    assert_eq!(
        head["outputs"][0]["data"],
        json!([LABELS[3], LABELS[7], LABELS[0]])
    );
    assert_eq!(head["outputs"][1]["shape"], json!([3, 10]));
    assert_eq!(
        head["outputs"][1]["parameters"]["binary_data_size"],
        3 * 10 * 4
    );
    let probabilities: Vec<f32> = body[json_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(probabilities.len(), 30);
    assert_eq!(
        (probabilities[3], probabilities[10 + 7], probabilities[20]),
        (1.0, 1.0, 1.0)
    );

    // The model's own tensor, in JSON: flat, or nested as the shape says.
    let mut values = vec![0.0f32; 2 * 3 * 64 * 64];
    values[0] = 4.0;
    values[3 * 64 * 64] = 8.0;
    let flat = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3, 64, 64], "data": values}]});
    let answer = post_json(&s, INFER, &flat).await;
    assert_eq!(answer["outputs"][0]["data"], json!([LABELS[4], LABELS[8]]));
    assert!(answer.get("id").is_none());
    let nested: Vec<Vec<Vec<Vec<f32>>>> = values
        .chunks(3 * 64 * 64)
        .map(|p| {
            p.chunks(64 * 64)
                .map(|c| c.chunks(64).map(<[f32]>::to_vec).collect())
                .collect()
        })
        .collect();
    let nested = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3, 64, 64], "data": nested}],
        "outputs": [{"name": "label"}]});
    let answer = post_json(&s, "/v2/models/fake/versions/0.0.0/infer", &nested).await;
    assert_eq!(
        answer["outputs"],
        json!([{"name": "label", "datatype": "BYTES", "shape": [2], "data": [LABELS[4], LABELS[8]]}])
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn each_refusal_is_one_error_with_its_status() {
    let s = start(&["--max-batch-images", "3"]).await;
    let image_request = |n: usize, size: usize| json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [n], "parameters": {"binary_data_size": size}}]});
    // One element that is not a picture fails the request, naming its index.
    let raw = raw_bytes(&[&picture(3), b"not a picture"]);
    let (status, code, message) =
        error_of(post_binary(&s, &image_request(2, raw.len()), &raw).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_inference_request"));
    assert!(
        message.starts_with("Element 1 of input `image`"),
        "{message}"
    );
    // Too many pictures.
    let four = raw_bytes(&[&picture(1), &picture(1), &picture(1), &picture(1)]);
    let (status, code, _) =
        error_of(post_binary(&s, &image_request(4, four.len()), &four).await).await;
    assert_eq!((status, code.as_str()), (413, "too_many_images"));
    let bad: [(Value, &str); 8] = [
        (json!({"inputs": []}), "exactly one"),
        (
            json!({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [1]}]}),
            "no input `pixels`",
        ),
        (
            json!({"inputs": [{"name": "input", "datatype": "INT64", "shape": [1], "data": [1]}]}),
            "INT64",
        ),
        (
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": vec![0.0; 192]}]}),
            "[1, 3, 64, 64]",
        ),
        (
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2], "data": [1.0]}]}),
            "2 elements",
        ),
        (
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": vec![0.0; 12288]}], "outputs": [{"name": "known"}]}),
            "no output `known`",
        ),
        (json!({"inputs": "x"}), "not a valid inference request"),
        (json!({"id": null, "inputs": []}), "`id` is null"),
    ];
    for (request, needle) in bad {
        let resp = client()
            .post(s.url(INFER))
            .json(&request)
            .send()
            .await
            .unwrap();
        let (status, code, message) = error_of(resp).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_inference_request"),
            "{request}"
        );
        assert!(message.contains(needle), "{needle} in {message}");
    }
    // A non-finite value (only the binary form can carry one).
    let mut values = vec![0u8; 2 * 12288 * 4];
    values[(12288 + 5) * 4..(12288 + 6) * 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let request = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3, 64, 64], "parameters": {"binary_data_size": values.len()}}]});
    let (status, _, message) = error_of(post_binary(&s, &request, &values).await).await;
    assert_eq!(status, 400);
    assert!(
        message.starts_with("Element 1 of input `input`") && message.contains("value 5"),
        "{message}"
    );
    // A header length beyond the body.
    let resp = client()
        .post(s.url(INFER))
        .header("Inference-Header-Content-Length", "999")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.0, 400);
    s.stop().await.unwrap();
}

/// A gRPC call over h2c: the framed request, and the answer's `grpc-status` (from the head for an
/// error, which is answered in trailers only) and message.
async fn grpc<T: Message + Default>(
    s: &TestServer,
    method: &str,
    request: &impl Message,
    key: Option<&str>,
) -> (String, Option<T>, String) {
    let auth = key.map(|key| ("authorization", format!("Bearer {key}")));
    grpc_with(s, method, request, auth.as_slice()).await
}

/// [`grpc`] with any request metadata (`headers`).
async fn grpc_with<T: Message + Default>(
    s: &TestServer,
    method: &str,
    request: &impl Message,
    headers: &[(&str, String)],
) -> (String, Option<T>, String) {
    let message = request.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let mut req = h2c()
        .post(s.url(&format!("/inference.GRPCInferenceService/{method}")))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let head = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (code, text) = (head("grpc-status"), head("grpc-message"));
    let body = resp.bytes().await.unwrap();
    let answer = (body.len() >= 5).then(|| T::decode(&body[5..]).unwrap());
    (code, answer, text)
}

fn grpc_infer(pictures: &[Vec<u8>]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "fake".into(),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "BYTES".into(),
            shape: vec![pictures.len() as i64],
            contents: Some(InferTensorContents {
                bytes_contents: pictures.iter().map(|p| p.clone().into()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        outputs: vec![InferRequestedOutputTensor {
            name: "label".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn grpc_on_the_same_port_answers_like_rest_and_checks_keys() {
    let s = start(&["--api-keys", KEY, "--api-key-scope", "model"]).await;
    // The same port still serves HTTP/2 requests that are not gRPC to the HTTP routes.
    let live = h2c().get(s.url(routes::V2_LIVE)).send().await.unwrap();
    assert_eq!(
        (live.version(), live.status().as_u16()),
        (reqwest::Version::HTTP_2, 200)
    );

    let (code, answer, _) = grpc::<ModelInferResponse>(
        &s,
        "ModelInfer",
        &grpc_infer(&[picture(12), picture(5)]),
        Some(KEY),
    )
    .await;
    assert_eq!(code, "", "success: the status comes in the trailers");
    let answer = answer.unwrap();
    assert_eq!(answer.outputs[0].name, "label");
    assert_eq!(answer.outputs[0].shape, [2]);
    assert_eq!(
        answer.raw_output_contents[0],
        raw_bytes(&[LABELS[2].as_bytes(), LABELS[5].as_bytes()])
    );

    let (code, _, message) = grpc::<ModelInferResponse>(
        &s,
        "ModelInfer",
        &grpc_infer(&[picture(1), b"nope".to_vec()]),
        Some(KEY),
    )
    .await;
    assert_eq!(code, (tonic::Code::InvalidArgument as i32).to_string());
    assert!(message.contains("Element%201"), "{message}");
    let mut other = grpc_infer(&[picture(1)]);
    other.model_name = "other".into();
    let (code, _, _) = grpc::<ModelInferResponse>(&s, "ModelInfer", &other, Some(KEY)).await;
    assert_eq!(code, (tonic::Code::NotFound as i32).to_string());

    // Keys: the inference and (with --api-key-scope model) the metadata need one; health does not.
    let (code, _, _) =
        grpc::<ModelInferResponse>(&s, "ModelInfer", &grpc_infer(&[picture(1)]), None).await;
    assert_eq!(code, (tonic::Code::Unauthenticated as i32).to_string());
    let metadata = ModelMetadataRequest {
        name: "fake".into(),
        version: String::new(),
    };
    let (code, _, _) =
        grpc::<ModelMetadataResponse>(&s, "ModelMetadata", &metadata, Some("wrong")).await;
    assert_eq!(code, (tonic::Code::Unauthenticated as i32).to_string());
    let (_, answer, _) =
        grpc::<ModelMetadataResponse>(&s, "ModelMetadata", &metadata, Some(KEY)).await;
    assert_eq!(answer.unwrap().inputs[1].shape, [-1, 3, 64, 64]);
    let (code, answer, _) = grpc::<celestial_server::grpc::proto::ServerLiveResponse>(
        &s,
        "ServerLive",
        &celestial_server::grpc::proto::ServerLiveRequest {},
        None,
    )
    .await;
    assert_eq!((code.as_str(), answer.map(|a| a.live)), ("", Some(true)));

    // REST needs the same key.
    let resp = client().post(s.url(INFER)).body("{}").send().await.unwrap();
    assert_eq!(error_of(resp).await.1, "api_key_missing");

    // Both count in the same metrics, gRPC by method.
    let metrics = client()
        .get(s.url(routes::METRICS))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "route=\"/inference.GRPCInferenceService/ModelInfer\",method=\"POST\",status=\"200\"",
        "route=\"/inference.GRPCInferenceService/ModelInfer\",method=\"POST\",status=\"401\"",
        "route=\"/inference.GRPCInferenceService/ModelInfer\",method=\"POST\",status=\"400\"",
        "reason=\"invalid_inference_request\"",
    ] {
        assert!(metrics.contains(needle), "{needle} in\n{metrics}");
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_and_rest_probes_stay_out_of_the_prediction_counters() {
    let s = start(&[]).await;
    let probe = [("celestial-probe", "evaluation".to_string())];
    let request = grpc_infer(&[picture(1), picture(2)]);
    let (code, answer, text) =
        grpc_with::<ModelInferResponse>(&s, "ModelInfer", &request, &probe).await;
    assert_eq!(
        code, "",
        "success (the status comes in the trailers): {text}"
    );
    assert_eq!(answer.unwrap().outputs[0].shape, [2]);
    let resp = client()
        .post(s.url(INFER))
        .header("celestial-probe", "evaluation")
        .json(
            &json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64],
                                  "data": vec![3.0; 3 * 64 * 64]}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let counted = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("celestial_predictions_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let metrics = common::get_text(&client(), &s, routes::METRICS).await;
    assert_eq!(counted(&metrics), 0.0, "{metrics}");
    let (code, answer, text) = grpc::<ModelInferResponse>(&s, "ModelInfer", &request, None).await;
    assert_eq!(code, "", "{text}");
    assert!(answer.is_some());
    let metrics = common::get_text(&client(), &s, routes::METRICS).await;
    assert_eq!(counted(&metrics), 2.0, "{metrics}");
    s.stop().await.unwrap();
}
