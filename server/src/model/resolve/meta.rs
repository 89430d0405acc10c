//! Reading the model's `celestial.*` metadata: the override ladder ([`Meta::ladder`]) and the
//! parsers of its values, each failure a [`ModelError::BadMetadata`] naming the key.

use std::collections::HashMap;
use std::str::FromStr;

use crate::model::kinds::MetadataName;
use crate::model::spec::ModelError;

/// The model's `celestial.*` metadata.
pub(super) struct Meta<'a>(pub(super) &'a HashMap<String, String>);

impl Meta<'_> {
    /// The trimmed value of `celestial.{key}`; an empty value counts as absent.
    pub(super) fn get(&self, key: &str) -> Option<String> {
        self.0
            .get(&format!("celestial.{key}"))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// The override ladder, written once: `flag` when given, else the metadata value of `key`
    /// read by `parse(key, value)`, else `None` (the caller's default).
    pub(super) fn ladder<T>(
        &self,
        flag: Option<T>,
        key: &str,
        parse: impl FnOnce(&str, &str) -> Result<T, ModelError>,
    ) -> Result<Option<T>, ModelError> {
        match flag {
            Some(v) => Ok(Some(v)),
            None => self.get(key).map(|v| parse(key, &v)).transpose(),
        }
    }
}

/// A metadata value as it is.
pub(super) fn text(_key: &str, v: &str) -> Result<String, ModelError> {
    Ok(v.to_string())
}

/// A metadata value that parses as `T`, else "`expected`".
pub(super) fn number<T: FromStr>(
    expected: &'static str,
) -> impl FnOnce(&str, &str) -> Result<T, ModelError> {
    move |key, v| v.parse().map_err(|_| bad(key, v, expected))
}

/// A metadata value that names one of `T`'s variants.
pub(super) fn kind<T: MetadataName>(key: &str, v: &str) -> Result<T, ModelError> {
    T::from_metadata(v).ok_or_else(|| bad(key, v, T::EXPECTED))
}

/// The refusal of `value` for `celestial.{key}`, saying why.
pub(super) fn bad(key: &str, value: &str, reason: &str) -> ModelError {
    ModelError::BadMetadata {
        key: format!("celestial.{key}"),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Comma-separated numbers.
pub(super) fn floats(key: &str, s: &str) -> Result<Vec<f32>, ModelError> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<f32>()
                .map_err(|_| bad(key, s, "expected comma-separated numbers"))
        })
        .collect()
}

/// Exactly three values, as an array.
pub(super) fn three(v: &[f32]) -> Option<[f32; 3]> {
    <[f32; 3]>::try_from(v).ok()
}
