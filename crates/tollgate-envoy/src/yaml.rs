//! The config file as written: envoyproxy/ratelimit's YAML format, read with serde.
//!
//! Every struct denies unknown fields, so a typo is an error that names the file and line rather
//! than a silently ignored rule. The accepted fields are upstream's (`domain`, `descriptors`,
//! `key`, `value`, `rate_limit`, `shadow_mode`, `quota_mode`, `detailed_metric`,
//! `value_to_metric`, `share_threshold`, `metadata`; `unit`, `requests_per_unit`, `unlimited`,
//! `name`, `replaces`) plus two tollgate extensions inside `rate_limit`: `algorithm` and
//! `burst`. Semantic checks (units, duplicates, `unlimited` with a unit) are in
//! [`crate::config`], which words them as upstream does.

use std::fmt;

use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// One file: one domain and its descriptors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YamlRoot {
    /// The domain, unique across files.
    #[serde(default, deserialize_with = "scalar_string")]
    pub domain: String,
    /// The top-level descriptors.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub descriptors: Vec<YamlDescriptor>,
}

/// One descriptor rule: a key, an optional value, an optional limit, nested rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YamlDescriptor {
    /// The entry key (required, non-empty).
    #[serde(default, deserialize_with = "scalar_string")]
    pub key: String,
    /// The entry value; empty or absent matches any value ("key only"). May contain `*`.
    #[serde(default, deserialize_with = "scalar_string")]
    pub value: String,
    /// The limit applied when a request's descriptor ends at this rule.
    #[serde(default)]
    pub rate_limit: Option<YamlRateLimit>,
    /// Nested rules for the next entry of a descriptor.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub descriptors: Vec<YamlDescriptor>,
    /// Count and report, but always answer OK.
    #[serde(default)]
    pub shadow_mode: bool,
    /// Over limit only when every quota-mode descriptor of the request is over limit.
    #[serde(default)]
    pub quota_mode: bool,
    /// Per-value metric series instead of one per rule.
    #[serde(default)]
    pub detailed_metric: bool,
    /// Put the request's value in the metric name for key-only and wildcard rules.
    #[serde(default)]
    pub value_to_metric: bool,
    /// Every value matching this wildcard shares one counter.
    #[serde(default)]
    pub share_threshold: bool,
    /// Returned in the response's dynamic metadata when the descriptor passes, if
    /// [`crate::EnvoyOptions::response_dynamic_metadata`] is on (upstream's
    /// `RESPONSE_DYNAMIC_METADATA`).
    #[serde(default)]
    pub metadata: Option<YamlMetadata>,
}

/// A descriptor's `metadata`: a map of anything YAML holds, as a protobuf `Struct` (numbers are
/// doubles, as upstream's `structpb` makes them).
#[derive(Debug, Default)]
pub struct YamlMetadata(pub Struct);

impl<'de> Deserialize<'de> for YamlMetadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_any(AnyValue)?.kind {
            Some(Kind::StructValue(fields)) => Ok(YamlMetadata(fields)),
            Some(Kind::NullValue(_)) | None => Ok(YamlMetadata::default()),
            Some(_) => Err(de::Error::custom("metadata must be a map")),
        }
    }
}

/// Any YAML value as a protobuf `Value`.
struct AnyValue;

fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

impl<'de> Visitor<'de> for AnyValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(value(Kind::BoolValue(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(value(Kind::NumberValue(v as f64)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(value(Kind::NumberValue(v as f64)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(value(Kind::NumberValue(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(value(Kind::StringValue(v.to_owned())))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(value(Kind::NullValue(0)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(value(Kind::NullValue(0)))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(AnyValue)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::new();
        while let Some(item) = seq.next_element_seed(AnySeed)? {
            values.push(item);
        }
        Ok(value(Kind::ListValue(ListValue { values })))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Struct::default();
        while let Some(key) = map.next_key::<String>()? {
            let item = map.next_value_seed(AnySeed)?;
            fields.fields.insert(key, item);
        }
        Ok(value(Kind::StructValue(fields)))
    }
}

/// [`AnyValue`] as a seed, for the elements of lists and maps.
struct AnySeed;

impl<'de> de::DeserializeSeed<'de> for AnySeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(AnyValue)
    }
}

/// A `rate_limit` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YamlRateLimit {
    /// Requests per unit; 0 (or absent) limits every request.
    #[serde(default)]
    pub requests_per_unit: u32,
    /// `second`, `minute`, `hour`, `day`, `week`, `month` or `year` (any case).
    #[serde(default, deserialize_with = "scalar_string")]
    pub unit: String,
    /// No limit at all (and no unit).
    #[serde(default)]
    pub unlimited: bool,
    /// The name other rules' `replaces` refer to, reported in `current_limit.name`.
    #[serde(default, deserialize_with = "scalar_string")]
    pub name: String,
    /// Limits (by name) this one replaces when both apply to one request.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub replaces: Vec<YamlReplaces>,
    /// tollgate extension: the algorithm (`fixed-window` by default, as upstream).
    #[serde(default, deserialize_with = "optional_scalar_string")]
    pub algorithm: Option<String>,
    /// tollgate extension: capacity for `token-bucket` and `gcra`.
    #[serde(default)]
    pub burst: Option<u64>,
}

/// One `replaces` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YamlReplaces {
    /// The replaced limit's name.
    #[serde(default, deserialize_with = "scalar_string")]
    pub name: String,
}

/// A list that may be written as an empty value (`descriptors:`), which YAML reads as null.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// A string written as any scalar: upstream's YAML reader takes `value: 123` or `value: true`
/// as the text `123` / `true`, so configs that rely on it keep working. Null is empty.
fn scalar_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(optional_scalar_string(deserializer)?.unwrap_or_default())
}

fn optional_scalar_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    deserializer.deserialize_any(ScalarString)
}

struct ScalarString;

impl<'de> Visitor<'de> for ScalarString {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or another scalar")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ScalarString)
    }
}

/// Read one file's text. The error keeps serde-saphyr's location for the caller to report.
pub fn parse(text: &str) -> Result<YamlRoot, serde_saphyr::Error> {
    serde_saphyr::from_str(text)
}
