//! The text at the top of the Swagger page (the OpenAPI document's `info.description`), written for
//! a user: what the service does, how to send a picture, what comes back, the limits and errors.
//! How a picture becomes the model's input is not here but on `/model` (and in the model card):
//! a user needs it only to reproduce the predictions elsewhere.

use crate::model::ModelSpec;

/// The limits the document states.
#[derive(Debug, Clone, Copy)]
pub struct DocLimits {
    pub max_body_bytes: usize,
    pub max_image_pixels: u64,
    pub max_batch: usize,
    pub body_timeout: std::time::Duration,
    pub body_min_rate: u64,
}

/// The labels as Markdown code, comma-separated.
pub fn labels_md(spec: &ModelSpec) -> String {
    spec.labels
        .iter()
        .map(|l| format!("`{l}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The fields of an answer beyond `prediction` and `probabilities`, as the end of a sentence.
fn calibrated_fields(spec: &ModelSpec) -> String {
    let confidence = spec.calibration.temperature.map(|_| {
        "`confidence`, how sure the answer is: the largest of the probabilities, which are \
         calibrated (answers given with confidence 0.9 are right about 9 times in 10)"
    });
    let known = spec.calibration.ood.as_ref().map(|_| {
        "`known`, false when the picture looks like none of the classes (the prediction is then \
         the closest class, not a finding)"
    });
    match (confidence, known) {
        (Some(c), Some(k)) => format!("; {c}; and {k}"),
        (Some(one), None) | (None, Some(one)) => format!("; and {one}"),
        (None, None) => String::new(),
    }
}

/// The document's description: short paragraphs on what the service does, how to send a
/// picture, what the answer looks like, the limits and errors (one line each, `keys`: whether
/// some operations need an API key) and where the model's details are.
pub fn description(spec: &ModelSpec, limits: &DocLimits, keys: bool) -> String {
    let DocLimits {
        max_body_bytes,
        max_image_pixels,
        max_batch,
        body_timeout,
        body_min_rate,
    } = *limits;
    let slow_body = if body_min_rate == 0 {
        format!("it must arrive within {body_timeout:?}")
    } else {
        format!(
            "after {body_timeout:?} it must keep arriving at {body_min_rate} bytes/s or more on average"
        )
    };
    let key_line = if keys {
        "- **401**: no valid API key on an operation marked with a lock (see **Authorize**).\n"
    } else {
        ""
    };
    let accuracy = spec
        .validation_accuracy
        .map(|a| format!(", {:.2} % right on its validation pictures", a * 100.0))
        .unwrap_or_default();
    format!(
        "Tells which of {n} celestial bodies a picture shows: {labels}.\n\n\
         **Sending a picture.** Post a JPEG, PNG, WebP, GIF or BMP file to `POST /predict`, either as the \
         multipart/form-data part `image` (what an HTML form, the BentoML client and the **Try it out** button \
         send: `curl -F image=@saturn.jpg <server>/predict`) or as the raw request body with the picture's media \
         type, e.g. `image/jpeg`, or `application/octet-stream` (`curl --data-binary @saturn.jpg -H \
         'Content-Type: image/jpeg' <server>/predict`). To classify up to {max_batch} pictures in one request, \
         send them as several `image` parts to `POST /predict/batch`.\n\n\
         **The answer** is JSON: `prediction`, the most probable class; `probabilities`, the probability of \
         every class (they add up to 1){fields}. A batch answers `{{\"results\": [...]}}`: one such answer per \
         picture, in the order sent, or an error object for a picture that cannot be used.\n\n\
         **Limits and errors.** An error is JSON `{{\"error\": \"<sentence>\", \"code\": \"<stable_code>\"}}`; \
         each operation below lists its statuses and codes.\n\
         - **400**: an empty body, a body that is not a picture, or a multipart body without an `image` part.\n\
         {key_line}\
         - **408**: the body arrived too slowly ({slow_body}).\n\
         - **413**: a body over {max_body_bytes} bytes, or a batch of more than {max_batch} pictures.\n\
         - **415**: a media type or picture format other than those above.\n\
         - **422**: a picture over {max_image_pixels} pixels, or one too large to decode in the memory allowed.\n\
         - **429**: too many requests at once: retry after the `Retry-After` seconds.\n\
         - **503**: the server is shutting down; **504**: the prediction took too long.\n\n\
         **The model** is `{name}` version `{version}`{accuracy}. How a picture is turned into its \
         {h}x{w} {color} input is on `GET /model`.",
        n = spec.labels.len(),
        labels = labels_md(spec),
        fields = calibrated_fields(spec),
        name = spec.name,
        version = spec.version,
        h = spec.height,
        w = spec.width,
        color = if spec.channels() == 3 {
            "RGB"
        } else {
            "grayscale"
        },
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::Calibration;
    use crate::testing;

    const LIMITS: DocLimits = DocLimits {
        max_body_bytes: 1234,
        max_image_pixels: 5678,
        max_batch: 9,
        body_timeout: Duration::from_secs(7),
        body_min_rate: 0,
    };

    #[test]
    fn says_what_to_send_what_comes_back_and_the_limits() {
        let mut spec = testing::spec();
        spec.validation_accuracy = Some(0.9933);
        spec.description = Some("Preprocessing: decode (JPEG: DCT-domain scaling ...".into());
        let d = description(&spec, &LIMITS, false);
        for fact in [
            "`Earth`, `Jupiter`",
            "`POST /predict`",
            "part `image`",
            "raw request body",
            "`image/jpeg`",
            "`application/octet-stream`",
            "`POST /predict/batch`",
            "up to 9 pictures",
            "`prediction`",
            "`probabilities`",
            "\"results\"",
            "\"code\"",
            "**400**",
            "**408**: the body arrived too slowly (it must arrive within 7s)",
            "**413**: a body over 1234 bytes, or a batch of more than 9 pictures",
            "**415**",
            "**422**: a picture over 5678 pixels",
            "**429**",
            "`fake` version `0.0.0`, 99.33 %",
            "64x64 RGB input is on `GET /model`",
        ] {
            assert!(d.contains(fact), "{fact:?} not in\n{d}");
        }
        // The model's own text (a preprocessing formula) stays on /model; keys are off.
        for absent in ["DCT", "Preprocessing", "**401**", "`confidence`", "`known`"] {
            assert!(!d.contains(absent), "{absent:?} in\n{d}");
        }
    }

    #[test]
    fn names_the_calibrated_fields_the_model_has_and_the_key_error_when_keys_are_on() {
        let spec = testing::spec();
        let mut calibrated = spec.clone();
        calibrated.calibration = Calibration {
            temperature: Some(1.5),
            ..Calibration::default()
        };
        let d = description(&calibrated, &LIMITS, true);
        assert!(d.contains("; and `confidence`, how sure"), "{d}");
        assert!(!d.contains("`known`"), "{d}");
        assert!(d.contains("**401**"), "{d}");
        let slow = DocLimits {
            body_min_rate: 100,
            ..LIMITS
        };
        let d = description(&spec, &slow, false);
        assert!(
            d.contains("after 7s it must keep arriving at 100 bytes/s"),
            "{d}"
        );
    }
}
