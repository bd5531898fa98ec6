//! Finding the rule of a request descriptor, with upstream's precedence.
//!
//! The entries of a descriptor walk down a domain's tree one level each. At each level the entry
//! `(key, value)` matches, in this order:
//! 1. the rule with exactly that key and value (composite key `key_value`);
//! 2. the first rule, in config order, whose value has `*` wildcards matching the value
//!    (`foo*`, `*`, `a*b`);
//! 3. the rule with that key and no value (any value).
//!
//! A rule's limit applies only if the descriptor ends at that rule's depth: a descriptor with
//! more entries than the matched path, or fewer, gets no limit from it. Unknown domains and
//! descriptors that match nothing have no limit.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use smallvec::SmallVec;

use crate::config::{Node, Rule};
use crate::stats::{RuleStats, StatsRegistry};

/// How one entry matched its level.
#[derive(Debug, Clone, Copy)]
enum How<'c> {
    /// `key_value` exactly.
    Exact,
    /// A wildcard rule, by its composite key.
    Wildcard(&'c str),
    /// `key` alone.
    KeyOnly,
}

/// The rule a descriptor matched, and how to count it.
#[derive(Debug)]
pub struct Matched<'c> {
    /// The rule.
    pub rule: &'c Arc<Rule>,
    /// Values to count under instead of the request's: `(entry index, wildcard value)` for
    /// entries matched by a `share_threshold` rule.
    pub shared: SmallVec<[(usize, &'c str); 1]>,
    /// The counters to record on (the rule's, or a detailed series).
    pub stats: Arc<RuleStats>,
}

impl Matched<'_> {
    /// The value entry `index` counts under.
    pub fn value_of<'e>(&self, index: usize, entry: &'e Entry) -> &'e str
    where
        Self: 'e,
    {
        self.shared
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(entry.value.as_str(), |(_, pattern)| pattern)
    }
}

/// The rule of `entries` in the tree rooted at `domain_root` of `domain`, if any.
pub fn lookup<'c>(
    domain: &str,
    domain_root: &'c Node,
    entries: &[Entry],
    registry: &StatsRegistry,
) -> Option<Matched<'c>> {
    let mut node = domain_root;
    let mut path: SmallVec<[(How<'c>, &'c Node); 4]> = SmallVec::new();
    let mut found = None;
    let mut composite = String::new();
    for (i, entry) in entries.iter().enumerate() {
        composite.clear();
        composite.push_str(&entry.key);
        composite.push('_');
        composite.push_str(&entry.value);
        let mut next = node
            .children
            .get(composite.as_str())
            .map(|n| (How::Exact, n));
        if next.is_none() {
            next = node
                .wildcards
                .iter()
                .find(|w| w.matches(&composite))
                .and_then(|w| {
                    let child = node.children.get(&w.composite)?;
                    Some((How::Wildcard(&w.composite), child))
                });
        }
        if next.is_none() {
            next = node
                .children
                .get(entry.key.as_str())
                .map(|n| (How::KeyOnly, n));
        }
        let Some((how, child)) = next else {
            break;
        };
        path.push((how, child));
        if i + 1 == entries.len() {
            found = child.rule.as_ref();
        }
        if child.children.is_empty() {
            break;
        }
        node = child;
    }
    let rule = found?;
    let shared: SmallVec<[(usize, &'c str); 1]> = path
        .iter()
        .enumerate()
        .filter_map(|(i, (how, child))| match how {
            How::Wildcard(pattern) if child.share_threshold => {
                let key = &entries[i].key;
                let value = pattern
                    .strip_prefix(key.as_str())
                    .and_then(|rest| rest.strip_prefix('_'))
                    .unwrap_or(pattern);
                Some((i, value))
            }
            _ => None,
        })
        .collect();
    let stats = match metric_key(domain, rule, entries, &path, &shared) {
        Some(key) => registry.detailed(&key, &rule.stats),
        None => rule.stats.clone(),
    };
    Some(Matched {
        rule,
        shared,
        stats,
    })
}

/// The stats key of a match when it is not the rule's own: upstream's `detailed_metric` key
/// (the request's values, shared wildcard patterns kept) or its `value_to_metric` key.
fn metric_key(
    domain: &str,
    rule: &Rule,
    entries: &[Entry],
    path: &[(How<'_>, &Node)],
    shared: &[(usize, &str)],
) -> Option<String> {
    if !rule.detailed_metric
        && !path
            .iter()
            .any(|(_, node)| node.value_to_metric || node.share_threshold)
    {
        // The rule's own series: no key to build.
        return None;
    }
    let mut key = String::from(domain);
    if rule.detailed_metric {
        for (i, entry) in entries.iter().enumerate() {
            key.push('.');
            key.push_str(&entry.key);
            match shared.iter().find(|(at, _)| *at == i) {
                Some((_, pattern)) => {
                    key.push('_');
                    key.push_str(pattern);
                }
                None if !entry.value.is_empty() || shared.is_empty() => {
                    key.push('_');
                    key.push_str(&entry.value);
                }
                None => {}
            }
        }
        return Some(key);
    }
    for (i, (how, node)) in path.iter().enumerate() {
        let entry = &entries[i];
        let value: &str = match how {
            How::Wildcard(pattern) => {
                if let Some((_, shared)) = shared.iter().find(|(at, _)| *at == i) {
                    shared
                } else if node.value_to_metric {
                    &entry.value
                } else {
                    pattern
                        .strip_prefix(entry.key.as_str())
                        .and_then(|rest| rest.strip_prefix('_'))
                        .unwrap_or(pattern)
                }
            }
            How::Exact => &entry.value,
            How::KeyOnly if node.value_to_metric => &entry.value,
            How::KeyOnly => "",
        };
        key.push('.');
        key.push_str(&entry.key);
        if !value.is_empty() {
            key.push('_');
            key.push_str(value);
        }
    }
    (key != *rule.stats_key).then_some(key)
}
