//! The behaviour of the service as Envoy sees it, over any store. Each scenario starts its own
//! server with its own uniquely named domains, so scenarios can share a store.
//!
//! Limits use `hour` (or longer) windows so that a scenario, which takes milliseconds, does not
//! straddle a window boundary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::Store;
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use tollgate_envoy::{EnvoyOptions, ResponseHeaders};

use super::*;

const HOUR: i32 = 3;
const MINUTE: i32 = 2;

/// Exact key + value: counted per window, with every status field filled in.
pub async fn exact_match<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "db.yaml",
            "domain: db-{d}\ndescriptors:\n  - key: database\n    value: users\n    rate_limit:\n      unit: hour\n      requests_per_unit: 2\n      name: users-limit\n",
        )],
        EnvoyOptions::default(),
    )
    .await;
    let users = || desc(&[("database", "users")]);
    let (code1, first) = h.one("db", users()).await;
    assert_eq!(code1, Code::Ok);
    assert_eq!(code(first.code), Code::Ok);
    let limit = first.current_limit.clone().expect("a limit");
    assert_eq!(limit.requests_per_unit, 2);
    assert_eq!(limit.unit, HOUR);
    assert_eq!(limit.name, "users-limit");
    assert_eq!(first.limit_remaining, 1);
    let reset = first.duration_until_reset.expect("a reset");
    assert!(reset.seconds > 0 && reset.seconds <= 3600, "{reset:?}");
    let (_, second) = h.one("db", users()).await;
    assert_eq!((code(second.code), second.limit_remaining), (Code::Ok, 0));
    let (overall, third) = h.one("db", users()).await;
    assert_eq!(overall, Code::OverLimit);
    assert_eq!(
        (code(third.code), third.limit_remaining),
        (Code::OverLimit, 0)
    );
    assert_eq!(rpu(&third), Some(2));
    // Another value of the same key has no rule: no limit.
    let (overall, other) = h.one("db", desc(&[("database", "orders")])).await;
    assert_eq!(
        (overall, other.current_limit, other.limit_remaining),
        (Code::Ok, None, 0)
    );
}

/// Exact beats wildcard beats key-only; each wildcard value counts on its own unless the rule
/// shares its threshold.
pub async fn wildcard_and_key_only_precedence<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "paths.yaml",
            r#"
domain: paths-{d}
descriptors:
  - key: path
    value: /api/admin
    rate_limit: { unit: hour, requests_per_unit: 1 }
  - key: path
    value: /api/*
    rate_limit: { unit: hour, requests_per_unit: 2 }
  - key: path
    value: /files/*.pdf
    share_threshold: true
    rate_limit: { unit: hour, requests_per_unit: 3 }
  - key: path
    rate_limit: { unit: hour, requests_per_unit: 5 }
  - key: any
    value: "*"
    rate_limit: { unit: hour, requests_per_unit: 4 }
"#,
        )],
        EnvoyOptions::default(),
    )
    .await;
    let path = |p: &str| desc(&[("path", p)]);
    assert_eq!(rpu(&h.one("paths", path("/api/admin")).await.1), Some(1));
    assert_eq!(rpu(&h.one("paths", path("/api/users")).await.1), Some(2));
    assert_eq!(rpu(&h.one("paths", path("/files/a.pdf")).await.1), Some(3));
    assert_eq!(rpu(&h.one("paths", path("/files/a.txt")).await.1), Some(5));
    assert_eq!(rpu(&h.one("paths", path("/other")).await.1), Some(5));
    assert_eq!(rpu(&h.one("paths", desc(&[("any", "")])).await.1), Some(4));
    // Each value under a wildcard has its own counter...
    let (_, users) = h.one("paths", path("/api/users")).await;
    assert_eq!(users.limit_remaining, 0);
    let (_, orders) = h.one("paths", path("/api/orders")).await;
    assert_eq!(orders.limit_remaining, 1);
    // ... unless the rule shares it: a.pdf used one, b.pdf and c.pdf take the rest.
    assert_eq!(
        h.one("paths", path("/files/b.pdf")).await.1.limit_remaining,
        1
    );
    assert_eq!(
        h.one("paths", path("/files/c.pdf")).await.1.limit_remaining,
        0
    );
    let (overall, _) = h.one("paths", path("/files/d.pdf")).await;
    assert_eq!(overall, Code::OverLimit);
    // Key-only rules count per value too.
    assert_eq!(h.one("paths", path("/x")).await.1.limit_remaining, 4);
    assert_eq!(h.one("paths", path("/y")).await.1.limit_remaining, 4);
    let shared = format!(
        "tollgate_envoy_rule_total_hits_total{{rule=\"{}.path_/files/*.pdf\"}}",
        h.domain("paths")
    );
    assert_eq!(h.metric(&shared), Some(4));
}

/// A limit applies only where the descriptor ends: at the rule's depth.
pub async fn nested_depth<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "msg.yaml",
            r#"
domain: msg-{d}
descriptors:
  - key: message_type
    value: marketing
    rate_limit: { unit: hour, requests_per_unit: 7 }
    descriptors:
      - key: to_number
        rate_limit: { unit: day, requests_per_unit: 2 }
  - key: to_number
    rate_limit: { unit: day, requests_per_unit: 100 }
  - key: tenant
    descriptors:
      - key: user
        rate_limit: { unit: hour, requests_per_unit: 3 }
"#,
        )],
        EnvoyOptions::default(),
    )
    .await;
    let marketing = desc(&[("message_type", "marketing")]);
    assert_eq!(rpu(&h.one("msg", marketing).await.1), Some(7));
    let to = |n: &str| desc(&[("message_type", "marketing"), ("to_number", n)]);
    let (_, status) = h.one("msg", to("123")).await;
    assert_eq!((rpu(&status), status.limit_remaining), (Some(2), 1));
    assert_eq!(status.current_limit.map(|l| l.unit), Some(4));
    assert_eq!(h.one("msg", to("123")).await.1.limit_remaining, 0);
    assert_eq!(h.one("msg", to("123")).await.0, Code::OverLimit);
    assert_eq!(h.one("msg", to("456")).await.0, Code::Ok);
    // The top-level rule for the same key is a different descriptor and a different counter.
    let (_, alone) = h.one("msg", desc(&[("to_number", "123")])).await;
    assert_eq!((rpu(&alone), alone.limit_remaining), (Some(100), 99));
    // Deeper than any rule, or stopping above one: no limit.
    let deeper = desc(&[
        ("message_type", "marketing"),
        ("to_number", "1"),
        ("x", "y"),
    ]);
    assert_eq!(h.one("msg", deeper).await.1.current_limit, None);
    assert_eq!(
        h.one("msg", desc(&[("tenant", "t")])).await.1.current_limit,
        None
    );
    let user = desc(&[("tenant", "t"), ("user", "u")]);
    assert_eq!(rpu(&h.one("msg", user).await.1), Some(3));
    // An unknown first entry stops the walk.
    let unknown = desc(&[("nope", "x"), ("user", "u")]);
    assert_eq!(h.one("msg", unknown).await.1.current_limit, None);
}

/// Shadow mode: counted and reported, but always OK.
pub async fn shadow_mode<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "s.yaml",
            "domain: s-{d}\ndescriptors:\n  - key: k\n    shadow_mode: true\n    rate_limit: { unit: hour, requests_per_unit: 1 }\n",
        )],
        EnvoyOptions::default(),
    )
    .await;
    for expected_remaining in [0, 0, 0] {
        let (overall, status) = h.one("s", desc(&[("k", "v")])).await;
        assert_eq!((overall, code(status.code)), (Code::Ok, Code::Ok));
        assert_eq!(status.limit_remaining, expected_remaining);
    }
    let rule = format!("{{rule=\"{}.k\"}}", h.domain("s"));
    assert_eq!(
        h.metric(&format!("tollgate_envoy_rule_total_hits_total{rule}")),
        Some(3)
    );
    assert_eq!(
        h.metric(&format!("tollgate_envoy_rule_over_limit_total{rule}")),
        Some(2)
    );
    assert_eq!(
        h.metric(&format!("tollgate_envoy_rule_shadow_mode_total{rule}")),
        Some(2)
    );
    assert_eq!(
        h.metric(&format!("tollgate_envoy_rule_within_limit_total{rule}")),
        Some(1)
    );
}

/// `replaces`: a matched rule drops the limits it names, which then count nothing.
pub async fn replaces<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "r.yaml",
            r#"
domain: r-{d}
descriptors:
  - key: category
    value: read
    rate_limit: { unit: hour, requests_per_unit: 2, name: read }
  - key: endpoint
    value: /search
    rate_limit:
      unit: hour
      requests_per_unit: 10
      replaces:
        - name: read
"#,
        )],
        EnvoyOptions::default(),
    )
    .await;
    let both = || {
        vec![
            desc(&[("category", "read")]),
            desc(&[("endpoint", "/search")]),
        ]
    };
    for remaining in [9, 8, 7] {
        let response = h
            .call(request(&h.domain("r"), both(), 0))
            .await
            .expect("call");
        assert_eq!(code(response.overall_code), Code::Ok);
        assert_eq!(response.statuses[0].current_limit, None, "replaced");
        assert_eq!(response.statuses[1].limit_remaining, remaining);
    }
    // The replaced limit was never counted.
    let (_, read) = h.one("r", desc(&[("category", "read")])).await;
    assert_eq!((rpu(&read), read.limit_remaining), (Some(2), 1));
}

/// Upstream's quota example (`quota_mode: true`, 2 per unit; an hour here, so no window edge
/// falls inside the test) in its request-then-stream-done flow: `hits_addend` 0 when the request
/// starts, 1 when its stream is done (`apply_on_stream_done`). Every answer is upstream's, whose
/// counter takes every hit: the third request still starts (the count, 2, is not above the
/// limit) and its completion goes over; that hit is counted, so the fourth request is refused
/// at its start, and so is every later one. An untouched counter reports the time to the
/// window's end.
pub async fn quota_flow<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "q.yaml",
            "domain: q-{d}
descriptors:
  - key: model
    value: gpt
    quota_mode: true
    rate_limit: { unit: hour, requests_per_unit: 2 }
",
        )],
        EnvoyOptions::default(),
    )
    .await;
    let domain = h.domain("q");
    let fresh = h
        .call(request(&domain, vec![desc_hits(&[("model", "gpt")], 0)], 0))
        .await
        .unwrap();
    let until_reset = fresh.statuses[0]
        .duration_until_reset
        .as_ref()
        .map(|d| d.seconds)
        .unwrap_or_default();
    assert!(
        (1..=3600).contains(&until_reset),
        "untouched: {until_reset}"
    );
    let mut answers = Vec::new();
    for _ in 0..5 {
        for hits in [0, 1] {
            let r = h
                .call(request(
                    &domain,
                    vec![desc_hits(&[("model", "gpt")], hits)],
                    0,
                ))
                .await
                .unwrap();
            let status = &r.statuses[0];
            let reset = status
                .duration_until_reset
                .as_ref()
                .map_or(0, |d| d.seconds);
            assert!((1..=3600).contains(&reset), "reset {reset}");
            answers.push((hits, code(r.overall_code), status.limit_remaining));
        }
    }
    use Code::{Ok, OverLimit as Over};
    assert_eq!(
        answers,
        [
            (0, Ok, 2),
            (1, Ok, 1),
            (0, Ok, 1),
            (1, Ok, 0),
            (0, Ok, 0),
            (1, Over, 0),
            (0, Over, 0),
            (1, Over, 0),
            (0, Over, 0),
            (1, Over, 0),
        ]
    );
}

/// The string at `path` in a protobuf `Struct`.
fn text(
    fields: &tollgate_envoy::envoy_types::pb::google::protobuf::Struct,
    path: &[&str],
) -> Option<String> {
    use tollgate_envoy::envoy_types::pb::google::protobuf::value::Kind;
    let (last, parents) = path.split_last()?;
    let mut at = fields;
    for key in parents {
        match &at.fields.get(*key)?.kind {
            Some(Kind::StructValue(inner)) => at = inner,
            _ => return None,
        }
    }
    match &at.fields.get(*last)?.kind {
        Some(Kind::StringValue(value)) => Some(value.clone()),
        _ => None,
    }
}

/// Upstream's multi-service quota example (service_1: 1, service_2: 2, both `quota_mode`, each
/// with `metadata: {service_with_quota: {name}}`): each request starts with a look at both
/// services (`hits_addend` 0); Envoy routes it to the service named by the response's dynamic
/// metadata (`metadata.service_with_quota.name`: the first service with quota left) and, when
/// its stream is done, charges that service's own counter (`hits_addend` 1). As upstream's
/// integration test: service_1 serves two requests, service_2 three, the sixth is refused; and a
/// request naming both services charges each its own counter.
pub async fn multi_service_quota<S: Store>(store: Arc<S>) {
    let services_file = |name: &str| {
        format!(
            "domain: {name}-{{d}}
descriptors:
  - key: service
    value: service_1
    quota_mode: true
    rate_limit: {{ unit: hour, requests_per_unit: 1 }}
    metadata:
      service_with_quota:
        name: service_1
  - key: service
    value: service_2
    quota_mode: true
    rate_limit: {{ unit: hour, requests_per_unit: 2 }}
    metadata:
      service_with_quota:
        name: service_2
"
        )
    };
    let options = EnvoyOptions {
        response_dynamic_metadata: true,
        ..EnvoyOptions::default()
    };
    let h = start(
        store,
        &[
            ("m.yaml", &services_file("m")),
            ("n.yaml", &services_file("n")),
        ],
        options,
    )
    .await;
    let domain = h.domain("m");
    let services = ["service_1", "service_2"];
    let mut served = Vec::new();
    for _ in 0..6 {
        let looks = services
            .iter()
            .map(|s| desc_hits(&[("service", s)], 0))
            .collect();
        let start = h.call(request(&domain, looks, 0)).await.unwrap();
        let metadata = start.dynamic_metadata.expect("dynamic metadata");
        if code(start.overall_code) == Code::OverLimit {
            // No descriptor passed: no rule metadata.
            assert!(!metadata.fields.contains_key("metadata"), "{metadata:?}");
            served.push("refused");
            continue;
        }
        assert_eq!(
            text(&metadata, &["domain"]).as_deref(),
            Some(domain.as_str())
        );
        let service = text(&metadata, &["metadata", "service_with_quota", "name"])
            .expect("the service with quota, when the request is OK");
        let service = services
            .into_iter()
            .find(|s| *s == service)
            .expect("a configured service");
        served.push(service);
        h.call(request(
            &domain,
            vec![desc_hits(&[("service", service)], 1)],
            0,
        ))
        .await
        .unwrap();
    }
    assert_eq!(
        served,
        [
            "service_1",
            "service_1",
            "service_2",
            "service_2",
            "service_2",
            "refused"
        ]
    );

    // One request naming both services charges each its own counter (a fresh domain).
    let domain = h.domain("n");
    let both = || {
        vec![
            desc(&[("service", "service_1")]),
            desc(&[("service", "service_2")]),
        ]
    };
    let look = async || {
        let looks = services
            .iter()
            .map(|s| desc_hits(&[("service", s)], 0))
            .collect();
        let r = h.call(request(&domain, looks, 0)).await.unwrap();
        r.statuses
            .iter()
            .map(|s| (code(s.code), s.limit_remaining))
            .collect::<Vec<_>>()
    };
    let r = h.call(request(&domain, both(), 0)).await.unwrap();
    assert_eq!(code(r.overall_code), Code::Ok);
    assert_eq!(look().await, [(Code::Ok, 0), (Code::Ok, 1)]);
    // service_1 goes over (and is charged), service_2 still has quota: OK.
    let r = h.call(request(&domain, both(), 0)).await.unwrap();
    assert_eq!(code(r.overall_code), Code::Ok);
    assert_eq!(look().await, [(Code::OverLimit, 0), (Code::Ok, 0)]);
    // Both over: refused.
    let r = h.call(request(&domain, both(), 0)).await.unwrap();
    assert_eq!(code(r.overall_code), Code::OverLimit);
    assert_eq!(look().await, [(Code::OverLimit, 0), (Code::OverLimit, 0)]);
}

/// `is_negative_hits` gives hits back, as upstream (envoyproxy/ratelimit#1140): the count goes
/// down, never below zero, and the answer is OK with what is left, even while the count is
/// still over the limit. Without its own `hits_addend` a descriptor gives back the request's
/// (0 meaning 1). A sliding log gives nothing back and answers OK with what is left.
pub async fn negative_hits<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "n.yaml",
            r#"
domain: n-{d}
descriptors:
  - key: k
    rate_limit: { unit: hour, requests_per_unit: 50 }
  - key: quota
    quota_mode: true
    rate_limit: { unit: hour, requests_per_unit: 2 }
  - key: bucket
    rate_limit: { unit: hour, requests_per_unit: 10, algorithm: token-bucket }
  - key: log
    rate_limit: { unit: hour, requests_per_unit: 3, algorithm: sliding-log }
"#,
        )],
        EnvoyOptions::default(),
    )
    .await;
    let domain = h.domain("n");
    let status = async |descriptor, hits| {
        let r = h
            .call(request(&domain, vec![descriptor], hits))
            .await
            .unwrap();
        let s = &r.statuses[0];
        assert!(s.duration_until_reset.is_some(), "{s:?}");
        (code(r.overall_code), s.limit_remaining)
    };
    let k = || &[("k", "a")][..];
    // Upstream's integration test: take 5 of 50, give 3 back, take 1.
    assert_eq!(status(desc(k()), 5).await, (Code::Ok, 45));
    assert_eq!(status(desc_refund(k(), Some(3)), 0).await, (Code::Ok, 48));
    assert_eq!(status(desc(k()), 1).await, (Code::Ok, 47));
    // Without its own hits_addend: the request's, 0 meaning 1.
    assert_eq!(status(desc_refund(k(), None), 2).await, (Code::Ok, 49));
    assert_eq!(status(desc_refund(k(), None), 0).await, (Code::Ok, 50));
    // Never below zero: the next 50 still fit, the 51st does not.
    assert_eq!(
        status(desc_refund(k(), Some(1000)), 0).await,
        (Code::Ok, 50)
    );
    assert_eq!(status(desc(k()), 50).await, (Code::Ok, 0));
    assert_eq!(status(desc(k()), 1).await, (Code::OverLimit, 0));
    // An untouched counter: nothing to give back, everything left.
    assert_eq!(
        status(desc_refund(&[("k", "b")], Some(7)), 0).await,
        (Code::Ok, 50)
    );

    // A quota counter charged past its limit: a refund is OK while still over, and the count
    // it leaves decides the next look.
    let q = || &[("quota", "a")][..];
    for _ in 0..4 {
        status(desc(q()), 0).await;
    }
    assert_eq!(status(desc_hits(q(), 0), 0).await, (Code::OverLimit, 0));
    assert_eq!(status(desc_refund(q(), Some(1)), 0).await, (Code::Ok, 0));
    assert_eq!(status(desc_hits(q(), 0), 0).await, (Code::OverLimit, 0));
    assert_eq!(status(desc_refund(q(), Some(1)), 0).await, (Code::Ok, 0));
    assert_eq!(status(desc_hits(q(), 0), 0).await, (Code::Ok, 0));
    assert_eq!(status(desc_refund(q(), Some(1)), 0).await, (Code::Ok, 1));

    // Any tollgate algorithm with a count to lower: a token bucket gets its tokens back.
    let b = || &[("bucket", "a")][..];
    assert_eq!(status(desc(b()), 6).await, (Code::Ok, 4));
    assert_eq!(status(desc_refund(b(), Some(4)), 0).await, (Code::Ok, 8));

    // A sliding log keeps no count to lower: nothing is given back.
    let l = || &[("log", "a")][..];
    assert_eq!(status(desc(l()), 3).await, (Code::Ok, 0));
    assert_eq!(status(desc_refund(l(), Some(2)), 0).await, (Code::Ok, 0));
    assert_eq!(status(desc(l()), 1).await, (Code::OverLimit, 0));

    let rule = format!("{{rule=\"{domain}.k\"}}");
    assert_eq!(
        h.metric(&format!(
            "tollgate_envoy_rule_total_negative_hits_total{rule}"
        )),
        Some(3 + 2 + 1 + 1000 + 7)
    );
    assert_eq!(
        h.metric(&format!("tollgate_envoy_rule_total_hits_total{rule}")),
        Some(5 + 1 + 50 + 1)
    );
}

/// `hits_addend` of the request (0 means 1) and of a descriptor (0 only looks).
pub async fn hits_addend<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "h.yaml",
            "domain: h-{d}\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 5 }\n",
        )],
        EnvoyOptions::default(),
    )
    .await;
    let domain = h.domain("h");
    let call = |descriptor, hits| h.call(request(&domain, vec![descriptor], hits));
    let status = |r: RateLimitResponse| (code(r.overall_code), r.statuses[0].limit_remaining);
    assert_eq!(
        status(call(desc(&[("k", "a")]), 0).await.unwrap()),
        (Code::Ok, 4)
    );
    assert_eq!(
        status(call(desc(&[("k", "a")]), 3).await.unwrap()),
        (Code::Ok, 1)
    );
    // Over: reported as upstream reports it (nothing left), but nothing is consumed: the one
    // unit left still serves the next hit.
    assert_eq!(
        status(call(desc(&[("k", "a")]), 2).await.unwrap()),
        (Code::OverLimit, 0)
    );
    // The descriptor's own hits_addend wins over the request's.
    assert_eq!(
        status(call(desc_hits(&[("k", "a")], 1), 4).await.unwrap()),
        (Code::Ok, 0)
    );
    // A descriptor hits_addend of 0 only looks.
    assert_eq!(
        status(call(desc_hits(&[("k", "b")], 0), 0).await.unwrap()),
        (Code::Ok, 5)
    );
    // As upstream: a look is over only when the count is above the limit, which a count that
    // takes no rejected hit never is.
    assert_eq!(
        status(call(desc_hits(&[("k", "a")], 0), 0).await.unwrap()),
        (Code::Ok, 0)
    );
    // More than the limit at once is over the limit, not an error, and takes nothing; on a
    // counter nothing has touched, as upstream, the reset is the time to the window's end.
    let over = call(desc(&[("k", "c")]), 6).await.unwrap();
    let reset = over.statuses[0]
        .duration_until_reset
        .as_ref()
        .map_or(0, |d| d.seconds);
    assert!((1..=3600).contains(&reset), "reset {reset}");
    assert_eq!(status(over), (Code::OverLimit, 0));
    assert_eq!(
        status(call(desc_hits(&[("k", "c")], 100), 0).await.unwrap()),
        (Code::OverLimit, 0)
    );
    assert_eq!(
        status(call(desc_hits(&[("k", "c")], 0), 0).await.unwrap()),
        (Code::Ok, 5)
    );
    let rule = format!("{{rule=\"{domain}.k\"}}");
    assert_eq!(
        h.metric(&format!("tollgate_envoy_rule_total_hits_total{rule}")),
        Some(1 + 3 + 2 + 1 + 6 + 100)
    );
    assert_eq!(
        h.metric(&format!("tollgate_envoy_rule_within_limit_total{rule}")),
        Some(5)
    );
    assert_eq!(
        h.metric(&format!("tollgate_envoy_rule_over_limit_total{rule}")),
        Some(2 + 6 + 100)
    );
    // Limit 5: the threshold is 4, so only the 5th hit was near the limit.
    assert_eq!(
        h.metric(&format!("tollgate_envoy_rule_near_limit_total{rule}")),
        Some(1)
    );
}

/// A request's limit override replaces the configured limit (and works without one).
pub async fn limit_override<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "o.yaml",
            "domain: o-{d}\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 100 }\n  - key: g\n    rate_limit: { unit: hour, requests_per_unit: 100, algorithm: gcra }\n",
        )],
        EnvoyOptions::default(),
    )
    .await;
    let (_, first) = h.one("o", desc_override(&[("k", "v")], 1, MINUTE)).await;
    let limit = first.current_limit.clone().expect("the override");
    assert_eq!(
        (limit.requests_per_unit, limit.unit, first.limit_remaining),
        (1, MINUTE, 0)
    );
    assert!(first.duration_until_reset.expect("reset").seconds <= 60);
    let (overall, _) = h.one("o", desc_override(&[("k", "v")], 1, MINUTE)).await;
    assert_eq!(overall, Code::OverLimit);
    // A descriptor no rule matches still gets the override.
    let (_, other) = h.one("o", desc_override(&[("zzz", "v")], 3, HOUR)).await;
    assert_eq!((rpu(&other), other.limit_remaining), (Some(3), 2));
    // The configured limit is untouched.
    assert_eq!(h.one("o", desc(&[("k", "v")])).await.1.limit_remaining, 99);
    // The override keeps the matched rule's algorithm: GCRA at 2 per minute is full again 30 s
    // after one hit (a fixed window would report the rest of its minute).
    let (_, gcra) = h.one("o", desc_override(&[("g", "v")], 2, MINUTE)).await;
    assert_eq!(gcra.limit_remaining, 1);
    assert_eq!(gcra.duration_until_reset.expect("reset").seconds, 30);
    // An unknown unit is a bad request.
    let bad = h
        .call(request(
            &h.domain("o"),
            vec![desc_override(&[("k", "v")], 1, 0)],
            0,
        ))
        .await;
    assert_eq!(
        bad.expect_err("unknown unit").code(),
        tonic::Code::InvalidArgument
    );
}

/// Several descriptors: statuses in request order, each counted on its own, one over is over.
pub async fn several_descriptors<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "m.yaml",
            r#"
domain: m-{d}
descriptors:
  - key: user
    rate_limit: { unit: hour, requests_per_unit: 1 }
  - key: ip
    rate_limit: { unit: hour, requests_per_unit: 10 }
  - key: free
    rate_limit: { unlimited: true }
"#,
        )],
        EnvoyOptions::default(),
    )
    .await;
    let descriptors = || {
        vec![
            desc(&[("ip", "1.2.3.4")]),
            desc(&[("unknown", "x")]),
            desc(&[("user", "alice")]),
            desc(&[("free", "x")]),
        ]
    };
    let first = h
        .call(request(&h.domain("m"), descriptors(), 0))
        .await
        .unwrap();
    assert_eq!(code(first.overall_code), Code::Ok);
    let remaining: Vec<u32> = first.statuses.iter().map(|s| s.limit_remaining).collect();
    assert_eq!(remaining, [9, 0, 0, u32::MAX]);
    let second = h
        .call(request(&h.domain("m"), descriptors(), 0))
        .await
        .unwrap();
    assert_eq!(code(second.overall_code), Code::OverLimit);
    let codes: Vec<Code> = second.statuses.iter().map(|s| code(s.code)).collect();
    assert_eq!(codes, [Code::Ok, Code::Ok, Code::OverLimit, Code::Ok]);
    // Not all-or-nothing: the ip descriptor counted although user was over.
    assert_eq!(second.statuses[0].limit_remaining, 8);
    assert_eq!(
        second.statuses[3].current_limit, None,
        "unlimited reports no limit"
    );
}

/// Unknown domains and descriptors are OK with no limit; malformed requests are refused.
pub async fn unknown_and_invalid<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[("u.yaml", "domain: u-{d}\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 1 }\n")],
        EnvoyOptions::default(),
    )
    .await;
    for _ in 0..3 {
        let response = h
            .call(request("no-such-domain", vec![desc(&[("k", "v")])], 0))
            .await
            .unwrap();
        assert_eq!(code(response.overall_code), Code::Ok);
        assert_eq!(response.statuses[0].current_limit, None);
        let (overall, status) = h.one("u", desc(&[("other", "v")])).await;
        assert_eq!((overall, status.current_limit), (Code::Ok, None));
    }
    assert_eq!(h.metric("tollgate_envoy_unknown_domain_total"), Some(3));
    let empty_domain = h.call(request("", vec![desc(&[("k", "v")])], 0)).await;
    assert_eq!(
        empty_domain.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let no_descriptors = h.call(request(&h.domain("u"), vec![], 0)).await;
    assert_eq!(
        no_descriptors.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        h.metric("tollgate_envoy_request_errors_total{kind=\"invalid_argument\"}"),
        Some(2)
    );
}

/// `unlimited` answers OK with the largest remaining and counts nothing; `requests_per_unit: 0`
/// rejects everything.
pub async fn unlimited_and_zero<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "z.yaml",
            r#"
domain: z-{d}
descriptors:
  - key: internal
    rate_limit: { unlimited: true, name: internal }
  - key: blocked
    rate_limit: { unit: second, requests_per_unit: 0 }
"#,
        )],
        EnvoyOptions::default(),
    )
    .await;
    for _ in 0..3 {
        let (overall, status) = h.one("z", desc(&[("internal", "x")])).await;
        assert_eq!(
            (overall, status.limit_remaining, status.current_limit),
            (Code::Ok, u32::MAX, None)
        );
        let (overall, status) = h.one("z", desc(&[("blocked", "x")])).await;
        assert_eq!((overall, rpu(&status)), (Code::OverLimit, Some(0)));
    }
}

/// The tollgate extension: another algorithm per rule.
pub async fn algorithm_extension<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "g.yaml",
            "domain: g-{d}\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 2, algorithm: gcra, burst: 3 }\n",
        )],
        EnvoyOptions::default(),
    )
    .await;
    let remaining: Vec<(Code, u32)> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            let (overall, status) = h.one("g", desc(&[("k", "v")])).await;
            out.push((overall, status.limit_remaining));
        }
        out
    };
    assert_eq!(
        remaining,
        [
            (Code::Ok, 2),
            (Code::Ok, 1),
            (Code::Ok, 0),
            (Code::OverLimit, 0)
        ]
    );
}

/// Quota mode: over limit only when every quota descriptor is.
pub async fn quota_mode<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "q.yaml",
            r#"
domain: q-{d}
descriptors:
  - key: a
    quota_mode: true
    rate_limit: { unit: hour, requests_per_unit: 1 }
  - key: b
    quota_mode: true
    rate_limit: { unit: hour, requests_per_unit: 2 }
"#,
        )],
        EnvoyOptions::default(),
    )
    .await;
    let both = || vec![desc(&[("a", "x")]), desc(&[("b", "x")])];
    let overall = |r: RateLimitResponse| code(r.overall_code);
    assert_eq!(
        overall(h.call(request(&h.domain("q"), both(), 0)).await.unwrap()),
        Code::Ok
    );
    // a is over, b is not: still OK.
    assert_eq!(
        overall(h.call(request(&h.domain("q"), both(), 0)).await.unwrap()),
        Code::Ok
    );
    // Both over.
    assert_eq!(
        overall(h.call(request(&h.domain("q"), both(), 0)).await.unwrap()),
        Code::OverLimit
    );
}

/// Optional RateLimit response headers describe the tightest descriptor.
pub async fn response_headers<S: Store>(store: Arc<S>) {
    let options = EnvoyOptions {
        response_headers: ResponseHeaders::Draft,
        ..EnvoyOptions::default()
    };
    let h = start(
        store,
        &[(
            "hd.yaml",
            r#"
domain: hd-{d}
descriptors:
  - key: wide
    rate_limit: { unit: hour, requests_per_unit: 100 }
  - key: narrow
    rate_limit: { unit: hour, requests_per_unit: 3, name: narrow }
"#,
        )],
        options,
    )
    .await;
    let response = h
        .call(request(
            &h.domain("hd"),
            vec![desc(&[("wide", "x")]), desc(&[("narrow", "x")])],
            0,
        ))
        .await
        .unwrap();
    let headers: Vec<(String, String)> = response
        .response_headers_to_add
        .iter()
        .map(|hv| (hv.key.clone(), hv.value.clone()))
        .collect();
    assert_eq!(
        headers[0],
        ("RateLimit-Policy".into(), "\"narrow\";q=3;w=3600".into())
    );
    assert_eq!(headers[1].0, "RateLimit");
    assert!(headers[1].1.starts_with("\"narrow\";r=2;t="), "{headers:?}");
}

/// Hot reload: a valid change takes effect, an invalid one keeps the config in force.
pub async fn reload<S: Store>(store: Arc<S>) {
    let options = EnvoyOptions {
        reload_debounce: Duration::from_millis(50),
        ..EnvoyOptions::default()
    };
    let file = |rpu: &str| {
        format!(
            "domain: rl-{{d}}\ndescriptors:\n  - key: k\n    rate_limit: {{ unit: hour, requests_per_unit: {rpu} }}\n"
        )
    };
    let mut h = start(store, &[("rl.yaml", &file("5"))], options).await;
    h.watch();
    assert_eq!(rpu(&h.one("rl", desc(&[("k", "v")])).await.1), Some(5));
    h.write("rl.yaml", &file("7"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status) = h.one("rl", desc(&[("k", "probe")])).await;
        if rpu(&status) == Some(7) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the valid change never took effect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The count survives a change of requests_per_unit: 1 earlier hit of 7.
    let (_, status) = h.one("rl", desc(&[("k", "v")])).await;
    assert_eq!(status.limit_remaining, 5);
    // An invalid file: logged, counted, and the config in force stays.
    let errors = || {
        h.metric("tollgate_envoy_config_load_error_total")
            .unwrap_or(0)
    };
    assert_eq!(errors(), 0);
    h.write("rl.yaml", "domain: rl-{d}\ndescriptors:\n  - key: k\n    rate_limit: { unit: fortnight, requests_per_unit: 1 }\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while errors() == 0 {
        assert!(
            Instant::now() < deadline,
            "the invalid change was never seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, status) = h.one("rl", desc(&[("k", "v")])).await;
    assert_eq!((rpu(&status), status.limit_remaining), (Some(7), 4));
    // Fixing the file and adding another: the new domain is loaded.
    h.write("rl.yaml", &file("7"));
    h.write("new.yaml", "domain: new-{d}\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 1 }\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while h
        .one("new", desc(&[("k", "v")]))
        .await
        .1
        .current_limit
        .is_none()
    {
        assert!(Instant::now() < deadline, "the new file was never loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// gRPC health: the server, the rate limit service and upstream's name are SERVING, and
/// NOT_SERVING once told to stop.
pub async fn health<S: Store>(store: Arc<S>) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let h = start(store, &[], EnvoyOptions::default()).await;
    let mut client = HealthClient::new(h.channel.clone());
    for service in ["", tollgate_envoy::RATE_LIMIT_SERVICE, "ratelimit"] {
        let response = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            response.status,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let unknown = client
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
    h.service.set_serving(false).await;
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(response.status, ServingStatus::NotServing as i32);
}

/// `detailed_metric` and `value_to_metric` name series after the request's values, as upstream.
pub async fn detailed_metrics<S: Store>(store: Arc<S>) {
    let h = start(
        store,
        &[(
            "dm.yaml",
            r#"
domain: dm-{d}
descriptors:
  - key: user
    detailed_metric: true
    rate_limit: { unit: hour, requests_per_unit: 10 }
  - key: route
    value: api*
    value_to_metric: true
    descriptors:
      - key: method
        rate_limit: { unit: hour, requests_per_unit: 10 }
  - key: plain
    rate_limit: { unit: hour, requests_per_unit: 10 }
"#,
        )],
        EnvoyOptions::default(),
    )
    .await;
    let d = h.domain("dm");
    h.one("dm", desc(&[("user", "alice")])).await;
    h.one("dm", desc(&[("user", "alice")])).await;
    h.one("dm", desc(&[("route", "api/v1"), ("method", "GET")]))
        .await;
    h.one("dm", desc(&[("plain", "x")])).await;
    h.one("dm", desc(&[("plain", "y")])).await;
    let hits = |rule: &str| {
        h.metric(&format!(
            "tollgate_envoy_rule_total_hits_total{{rule=\"{d}.{rule}\"}}"
        ))
    };
    assert_eq!(hits("user_alice"), Some(2));
    assert_eq!(hits("user"), Some(0), "the rule's own series stays");
    assert_eq!(hits("route_api/v1.method"), Some(1));
    assert_eq!(hits("plain"), Some(2));
    assert_eq!(hits("plain_x"), None);
}
