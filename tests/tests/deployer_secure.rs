//! `deployer release --api-key-secret --tls-secret` against the real test environment, to pods on
//! its real node: the API-key Secret is created with a generated key, the TLS Secret (a CA and a
//! server certificate made here with rcgen) is mounted, the Service turns to 443 -> https, and the
//! smoke prediction goes over HTTPS with the key. Then, from outside: no key -> 401, the key -> 200,
//! plain HTTP on the public port -> refused; a re-run keeps the key; a new model version is
//! evaluated through the pod proxy over HTTPS with the key and promoted; a missing TLS Secret is
//! said before anything is applied.

use std::process::Command;

use celestial_e2e::TestEnv;
use celestial_e2e::deployer::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use std::collections::BTreeMap;

const SERVER_NAME: &str = "celestial.test";

/// A CA and a certificate for [`SERVER_NAME`] it signed: (ca.crt, tls.crt, tls.key), PEM.
fn certificates() -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "celestial e2e CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    (ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem())
}

/// `curl` to `url` (https://ADDRESS:443/...) checking the certificate for SERVER_NAME against
/// `ca`: (HTTP status, body); status 0 when curl could not connect or the TLS handshake failed.
fn curl(url: &str, ca: &std::path::Path, extra: &[&str]) -> (u16, String) {
    let u = url.strip_prefix("https://").unwrap_or(url);
    let (authority, path) = u.split_once('/').unwrap();
    let (addr, port) = authority.rsplit_once(':').unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(ca)
        .args(["--resolve", &format!("{SERVER_NAME}:{port}:{addr}")])
        .args(extra)
        .arg(format!("https://{SERVER_NAME}:{port}/{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    match code.trim().parse() {
        Ok(code) if code != 0 => (code, body.to_string()),
        // curl's own error (no answer), in the failure message
        _ => (0, String::from_utf8_lossy(&out.stderr).to_string()),
    }
}

#[tokio::test]
async fn deployer_releases_with_an_api_key_and_tls_and_smoke_tests_over_https() {
    let env = TestEnv::get().await.expect("test environment");
    let (env, node) = env.real_node().await.expect("the real node");
    let ns = env.namespace("deployer-secure").await.unwrap();
    let c = cluster_args(&env, ns.name());
    let on_node = real_node_manifests(&node, str::to_string);
    let f = on_node.path().to_str().unwrap().to_string();
    let client = env.client().await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());

    // A missing TLS Secret is said before anything is applied: exit 2, nothing in the namespace.
    let mut missing = args(&[
        "apply",
        "-f",
        &f,
        "--tls-secret",
        "celestial-tls",
        "-o",
        "json",
    ]);
    missing.extend(c.clone());
    let r = run(missing, None).await;
    assert_eq!(r.code, 2, "{}", r.describe());
    let said = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        said.contains("Secret/celestial-tls not found in namespace")
            && said.contains("kubectl create secret tls celestial-tls"),
        "{}",
        r.describe()
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns.name());
    assert!(
        deployments
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(secrets.get_opt("celestial-keys").await.unwrap().is_none());

    // The TLS Secret, as `kubectl create secret tls` (plus cert-manager's ca.crt) makes it.
    let (ca, crt, key) = certificates();
    let scratch = Scratch::new("secure");
    let ca_file = scratch.path().join("ca.crt");
    std::fs::write(&ca_file, &ca).unwrap();
    let data = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect::<BTreeMap<_, _>>()
    };
    let tls = Secret {
        metadata: ObjectMeta {
            name: Some("celestial-tls".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data(&[
            ("tls.crt", &crt),
            ("tls.key", &key),
            ("ca.crt", &ca),
        ])),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &tls).await.unwrap();

    // release: the key Secret is created, the pods mount both, the smoke test goes over HTTPS
    // with the key, checking the certificate for SERVER_NAME at the load balancer's address.
    let (_inputs, mut release) = real_node_release(&env, "secure", on_node.path());
    release.extend(args(&[
        "--api-key-secret",
        "celestial-keys",
        "--show-api-key",
        "--tls-secret",
        "celestial-tls",
        "--tls-server-name",
        SERVER_NAME,
    ]));
    release.extend(c.clone());
    let r = run(release, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let j = r.json();
    let url = j["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("https://") && url.ends_with(":443/"),
        "{url}"
    );
    assert_eq!(j["smoke"]["labels"], 10, "{}", r.describe());
    assert_eq!(j["api_key"]["created"], true, "{}", r.describe());
    assert_eq!(j["tls_secret"], "celestial-tls");
    let api_key = j["api_key"]["key"].as_str().unwrap().to_string();
    assert_eq!(api_key.len(), 43);
    let stored = secrets.get("celestial-keys").await.unwrap();
    let stored = String::from_utf8(stored.data.unwrap()["api-keys"].0.clone()).unwrap();
    assert_eq!(stored.trim(), api_key);
    eprintln!(
        "measured: secure release to real pods {:.1}s (smoke over HTTPS with the key {:.0} ms)",
        r.seconds,
        j["smoke"]["latency_ms"].as_f64().unwrap_or(f64::NAN)
    );

    // From outside, through the public URL: 0 of N requests without a valid key get a prediction.
    let image_file = smoke_image().unwrap_or_else(|| {
        let p = scratch.path().join("disc.png");
        image::RgbImage::from_fn(64, 64, |x, y| {
            let d = (x as f32 - 32.0).hypot(y as f32 - 32.0);
            image::Rgb(if d < 26.0 { [200, 120, 60] } else { [0, 0, 0] })
        })
        .save(&p)
        .unwrap();
        p
    });
    let form = format!("image=@{}", image_file.display());
    let predict = format!("{url}predict");
    for bad in [
        vec![],
        vec!["-H", "Authorization: Bearer wrong-key"],
        vec!["-H", "X-API-Key: nope"],
    ] {
        let mut extra = bad.clone();
        extra.extend(["-F", &form]);
        let (status, body) = curl(&predict, &ca_file, &extra);
        assert_eq!(status, 401, "{bad:?}: {body}");
        assert!(body.contains("api_key_"), "{body}");
    }
    let bearer = format!("Authorization: Bearer {api_key}");
    let (status, body) = curl(&predict, &ca_file, &["-H", &bearer, "-F", &form]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"probabilities\""), "{body}");
    // The probes stay open; plain HTTP on the public port does not get an answer.
    assert_eq!(curl(&format!("{url}readyz"), &ca_file, &[]).0, 200);
    let plain = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(url.replacen("https://", "http://", 1) + "readyz")
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");

    // A re-run keeps the Secret and its key (never overwritten) and says how to read it.
    let mut again = args(&[
        "apply",
        "-f",
        &f,
        "--image",
        j["pushed"]["image"].as_str().unwrap(),
        "--api-key-secret",
        "celestial-keys",
        "--tls-secret",
        "celestial-tls",
        "--tls-server-name",
        SERVER_NAME,
        "-o",
        "json",
    ]);
    again.extend(c.clone());
    let r = run(again, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let j = r.json();
    assert_eq!(j["changed"], 0, "{}", r.describe());
    assert_eq!(j["api_key"]["created"], false);
    assert!(
        j["api_key"].get("key").is_none(),
        "printed without --show-api-key"
    );
    assert!(!r.stdout.contains(&api_key) && !r.stderr.contains(&api_key));
    assert!(
        j["api_key"]["read_with"]
            .as_str()
            .unwrap()
            .starts_with("kubectl get secret celestial-keys -n "),
        "{}",
        r.describe()
    );

    // A new model version with keys and TLS on: the release reads the serving model and evaluates
    // the candidate through the API server's pod proxy on the pods' https port with the key
    // (X-API-Key), and promotes it.
    let models = Scratch::new("secure-models");
    let (v2, version2) = next_version(&shipped_model(), &models);
    let (_inputs2, mut next) = real_node_release(&env, "secure-v2", on_node.path());
    set_arg(&mut next, "--model", v2.to_str().unwrap());
    next.extend(args(&[
        "--api-key-secret",
        "celestial-keys",
        "--tls-secret",
        "celestial-tls",
        "--tls-server-name",
        SERVER_NAME,
        "--evaluate",
    ]));
    next.extend(c.clone());
    let r = run(next, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let j = r.json();
    let evaluation = &j["evaluation"];
    assert_eq!(evaluation["verdict"]["promote"], true, "{}", r.describe());
    assert_eq!(
        evaluation["candidate_scores"]["accuracy"],
        1.0,
        "{}",
        r.describe()
    );
    assert_eq!(
        evaluation["serving"]["scores"]["accuracy"],
        1.0,
        "{}",
        r.describe()
    );
    assert_eq!(j["model"]["version"], version2.as_str(), "{}", r.describe());
    eprintln!(
        "measured: evaluated release with keys and TLS {:.1}s (evaluation {:.1}s)",
        r.seconds,
        evaluation["seconds"].as_f64().unwrap_or(f64::NAN)
    );
}
