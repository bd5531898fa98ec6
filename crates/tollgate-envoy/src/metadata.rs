//! The response's dynamic metadata, as upstream builds it when `RESPONSE_DYNAMIC_METADATA` is on
//! ([`crate::EnvoyOptions::response_dynamic_metadata`]): the request's domain, its descriptors
//! (entries as `key=value`, a limit override, a descriptor `hitsAddend`), the request's
//! `hitsAddend` when set, and `metadata`, the `metadata:` of every rule whose descriptor passed
//! (not over the limit, not unlimited), merged in request order: maps merge key by key, and the
//! first descriptor's value wins where two set the same key. Envoy stores it under
//! `envoy.filters.http.ratelimit`; upstream's multi-service quota example routes each request to
//! the service it names (`metadata.service_with_quota.name`, the first service with quota left).

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value};

/// The dynamic metadata of `request`, given the rule metadata of the descriptors that passed
/// (`None` for a passed descriptor whose rule has none), in request order.
pub fn response<'a>(
    request: &RateLimitRequest,
    passed: impl IntoIterator<Item = Option<&'a Struct>>,
) -> Struct {
    let mut fields = Struct::default();
    insert(
        &mut fields,
        "domain",
        Kind::StringValue(request.domain.clone()),
    );
    let descriptors = request.descriptors.iter().map(descriptor).collect();
    insert(
        &mut fields,
        "descriptors",
        Kind::ListValue(ListValue {
            values: descriptors,
        }),
    );
    if request.hits_addend != 0 {
        insert(
            &mut fields,
            "hitsAddend",
            Kind::NumberValue(f64::from(request.hits_addend)),
        );
    }
    let mut merged = Struct::default();
    for metadata in passed.into_iter().flatten() {
        merge(&mut merged, metadata);
    }
    if !merged.fields.is_empty() {
        insert(&mut fields, "metadata", Kind::StructValue(merged));
    }
    fields
}

/// One request descriptor: `entries` (`key=value`), `limit` (its override, in protobuf text
/// form), `hitsAddend` (when the descriptor sets one).
fn descriptor(descriptor: &RateLimitDescriptor) -> Value {
    let mut fields = Struct::default();
    let entries = descriptor
        .entries
        .iter()
        .map(|e| value(Kind::StringValue(format!("{}={}", e.key, e.value))))
        .collect();
    insert(
        &mut fields,
        "entries",
        Kind::ListValue(ListValue { values: entries }),
    );
    if let Some(limit) = &descriptor.limit {
        let unit = RateLimitUnit::try_from(limit.unit).map_or("UNKNOWN", |u| u.as_str_name());
        let text = format!("requests_per_unit:{} unit:{unit}", limit.requests_per_unit);
        insert(&mut fields, "limit", Kind::StringValue(text));
    }
    if let Some(hits) = &descriptor.hits_addend {
        insert(
            &mut fields,
            "hitsAddend",
            Kind::NumberValue(hits.value as f64),
        );
    }
    value(Kind::StructValue(fields))
}

/// Merge `from` into `into`: maps merge key by key; elsewhere what `into` holds stays.
fn merge(into: &mut Struct, from: &Struct) {
    for (key, item) in &from.fields {
        match into.fields.get_mut(key) {
            None => {
                into.fields.insert(key.clone(), item.clone());
            }
            Some(Value {
                kind: Some(Kind::StructValue(held)),
            }) => {
                if let Some(Kind::StructValue(more)) = &item.kind {
                    merge(held, more);
                }
            }
            Some(_) => {}
        }
    }
}

fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

fn insert(fields: &mut Struct, key: &str, kind: Kind) {
    fields.fields.insert(key.to_owned(), value(kind));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Kind)]) -> Struct {
        let mut s = Struct::default();
        for (k, v) in pairs {
            insert(&mut s, k, v.clone());
        }
        s
    }

    #[test]
    fn maps_merge_and_the_first_value_wins() {
        let one = map(&[(
            "service_with_quota",
            Kind::StructValue(map(&[("name", Kind::StringValue("service_1".into()))])),
        )]);
        let two = map(&[
            (
                "service_with_quota",
                Kind::StructValue(map(&[
                    ("name", Kind::StringValue("service_2".into())),
                    ("zone", Kind::StringValue("b".into())),
                ])),
            ),
            ("other", Kind::BoolValue(true)),
        ]);
        let mut merged = Struct::default();
        merge(&mut merged, &one);
        merge(&mut merged, &two);
        let expected = map(&[
            (
                "service_with_quota",
                Kind::StructValue(map(&[
                    ("name", Kind::StringValue("service_1".into())),
                    ("zone", Kind::StringValue("b".into())),
                ])),
            ),
            ("other", Kind::BoolValue(true)),
        ]);
        assert_eq!(merged, expected);
    }
}
