//! Loading and validating a directory of envoyproxy/ratelimit config files into the rule tree
//! that requests are matched against.
//!
//! Every `*.yaml` / `*.yml` file in the directory (not its subdirectories, not dotfiles;
//! symlinks followed, so a Kubernetes ConfigMap mount works) is one domain. Files are read in
//! name order. The checks, and their wording, are upstream's: an empty domain, a duplicate
//! domain (unless domains are merged), an empty key, a duplicate composite key, `unlimited`
//! with a unit, an unknown unit, an empty or self-referencing `replaces`, `share_threshold`
//! without a wildcard; plus unknown fields, bad types, and tollgate's own checks of the
//! `algorithm` / `burst` extension. Every message starts with the file (and line, for syntax).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Struct;
use tollgate::{Algorithm, Policy, PolicyError, PolicyName, PolicyNameError};

use crate::keys::policy_name;
use crate::stats::{RuleStats, StatsRegistry};
use crate::unit::Unit;
use crate::yaml::{self, YamlDescriptor, YamlRateLimit};

/// Why a config directory could not be loaded (or watched).
#[derive(Debug, thiserror::Error)]
pub enum EnvoyConfigError {
    /// The directory cannot be listed.
    #[error("{}: cannot read the config directory: {source}", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file cannot be read.
    #[error("{}: cannot read: {source}", file.display())]
    ReadFile {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file is not valid YAML of the expected shape (unknown field, wrong type...).
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The line (1-based; 0 when unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A file is well-formed but its rules are not valid.
    #[error("{file}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong, worded as upstream words it where upstream has the same check.
        message: String,
    },
    /// The watcher was started outside a Tokio runtime.
    #[error("the config watcher must be started inside a Tokio runtime")]
    NoRuntime,
    /// The directory cannot be watched for changes.
    #[error("{}: cannot watch for changes: {source}", dir.display())]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
}

/// A limit that counts: `requests_per_unit` per fixed window of `unit` (or another algorithm).
#[derive(Debug, Clone)]
pub struct Limit {
    /// The unit reported to Envoy.
    pub unit: Unit,
    /// The limit reported to Envoy.
    pub requests_per_unit: u32,
    /// The tollgate policy: `None` when `requests_per_unit` is 0, which rejects every hit (as
    /// upstream, where a count of 1 already exceeds 0).
    pub policy: Option<Policy>,
    /// The tollgate policy name (see [`crate::keys`]).
    pub policy_name: PolicyName,
    /// `policy` with room for one more unit (`limit + 1`, or `burst + 1` for token bucket and
    /// GCRA), on the same counter: a peek of one unit under it passes exactly when the count is
    /// not above the limit, upstream's rule for a look (`hits_addend` 0). `None` when there is
    /// no policy, or when one more unit would not be a valid policy (then a look passes when one
    /// more unit fits).
    pub look: Option<Policy>,
}

/// Why a descriptor's limit cannot be enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLimit {
    /// The policy it makes is not one.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Its policy name breaks the core's rule (never, for names [`crate::keys`] makes).
    #[error(transparent)]
    Name(#[from] PolicyNameError),
}

impl Limit {
    /// A limit of `requests_per_unit` per `unit` with `algorithm` (and `burst`), named after
    /// `rule`.
    pub fn new(
        rule: &str,
        unit: Unit,
        requests_per_unit: u32,
        algorithm: Algorithm,
        burst: Option<u64>,
    ) -> Result<Limit, InvalidLimit> {
        let policy = if requests_per_unit == 0 {
            None
        } else {
            Some(Policy::new(
                algorithm,
                u64::from(requests_per_unit),
                unit.period(),
                burst,
            )?)
        };
        let look = policy.as_ref().and_then(roomier);
        Ok(Limit {
            unit,
            requests_per_unit,
            policy,
            policy_name: policy_name(rule, unit)?,
            look,
        })
    }

    /// The limit of a `shadow_mode` descriptor: its policies in the core's shadow mode
    /// ([`Policy::with_shadow`]), which decides and counts but lets through, reporting
    /// `shadow_denied`, as `shadow: true` does for the server's own policies.
    pub fn in_shadow(mut self, shadow: bool) -> Limit {
        self.policy = self.policy.map(|p| p.with_shadow(shadow));
        self.look = self.look.map(|p| p.with_shadow(shadow));
        self
    }
}

/// `policy` with room for one more unit on the same state: the windows' counts and the
/// buckets' deficits do not depend on the limit (token bucket and GCRA refill at `limit` per
/// period, so their capacity, `burst`, is the one raised).
fn roomier(policy: &Policy) -> Option<Policy> {
    let (limit, burst) = match policy.algorithm() {
        Algorithm::TokenBucket | Algorithm::Gcra => (policy.limit(), Some(policy.burst() + 1)),
        _ => (policy.limit() + 1, None),
    };
    Policy::new(policy.algorithm(), limit, policy.period(), burst).ok()
}

/// A configured `rate_limit`: where a descriptor ends.
#[derive(Debug)]
pub struct Rule {
    /// Upstream's stats key: `<domain>.<key>_<value>.<key>...` with the config's values.
    pub stats_key: Arc<str>,
    /// `rate_limit.name` (empty when unnamed).
    pub name: Arc<str>,
    /// Names of the limits this one replaces.
    pub replaces: Box<[Box<str>]>,
    /// Count, report, but answer OK.
    pub shadow_mode: bool,
    /// Over limit only when every quota-mode descriptor of the request is.
    pub quota_mode: bool,
    /// Per-value metric series.
    pub detailed_metric: bool,
    /// The limit; `None` for `unlimited: true`.
    pub limit: Option<Limit>,
    /// The descriptor's `metadata` (`None` when absent or empty), returned in the response's
    /// dynamic metadata when the descriptor passes
    /// ([`crate::EnvoyOptions::response_dynamic_metadata`]).
    pub metadata: Option<Struct>,
    /// The rule's counters.
    pub stats: Arc<RuleStats>,
}

/// One level of the descriptor tree: the rules for the next entry of a request's descriptor.
#[derive(Debug, Default)]
pub struct Node {
    /// Children by composite key: `key_value`, or `key` for a rule without a value.
    pub children: HashMap<Box<str>, Node>,
    /// Children whose composite key contains `*`, in config order (first match wins).
    pub wildcards: Vec<Wildcard>,
    /// The limit of a descriptor that ends here.
    pub rule: Option<Arc<Rule>>,
    /// `value_to_metric` of this rule.
    pub value_to_metric: bool,
    /// `share_threshold` of this (wildcard) rule.
    pub share_threshold: bool,
}

/// A composite key with `*` wildcards, split once at load time.
#[derive(Debug)]
pub struct Wildcard {
    /// The composite key as written (`key_val*`), also its key in [`Node::children`].
    pub composite: Box<str>,
    /// The literal parts between the stars.
    pub parts: Box<[Box<str>]>,
}

impl Wildcard {
    fn new(composite: &str) -> Wildcard {
        Wildcard {
            composite: composite.into(),
            parts: composite.split('*').map(Box::from).collect(),
        }
    }

    /// Whether `text` matches: each `*` stands for any run of characters, possibly empty.
    pub fn matches(&self, text: &str) -> bool {
        let (first, rest) = match self.parts.split_first() {
            Some(split) => split,
            None => return text.is_empty(),
        };
        let Some(mut remaining) = text.strip_prefix(&**first) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return remaining.is_empty();
        };
        let Some(trimmed) = remaining.strip_suffix(&**last) else {
            return false;
        };
        remaining = trimmed;
        for part in middle {
            match remaining.find(&**part) {
                Some(at) => remaining = &remaining[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

/// A loaded, validated config: the rule tree of every domain.
#[derive(Debug, Default)]
pub struct Config {
    /// The root of each domain's tree.
    pub domains: HashMap<Box<str>, Node>,
}

/// One config file's name (for messages) and text.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// The name used in error messages (the path).
    pub name: String,
    /// The YAML text.
    pub text: String,
}

/// A config and the counters it needs registered once it is put in force.
#[derive(Debug)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Counters of rules new to the registry.
    pub staged: Vec<(Arc<str>, Arc<RuleStats>)>,
}

/// The config files of `dir`: `*.yaml` and `*.yml`, dotfiles skipped, sorted by name.
pub fn read_dir(dir: &Path) -> Result<Vec<ConfigFile>, EnvoyConfigError> {
    let read_dir_error = |source| EnvoyConfigError::ReadDir {
        dir: dir.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir_error)? {
        let path = entry.map_err(read_dir_error)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        // `is_file` follows symlinks: ConfigMap mounts are symlinks into `..data/`.
        if yaml && !name.starts_with('.') && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| match std::fs::read_to_string(&path) {
            Ok(text) => Ok(ConfigFile {
                name: path.display().to_string(),
                text,
            }),
            Err(source) => Err(EnvoyConfigError::ReadFile { file: path, source }),
        })
        .collect()
}

/// Build a config from files. With `merge_domains`, files naming the same domain add to it
/// (upstream's `MERGE_DOMAIN_CONFIG`); otherwise a repeated domain is an error.
pub fn load(
    files: &[ConfigFile],
    merge_domains: bool,
    registry: &StatsRegistry,
) -> Result<Loaded, EnvoyConfigError> {
    let mut builder = Builder {
        registry,
        staged: Vec::new(),
        file: "",
    };
    let mut config = Config::default();
    for file in files {
        builder.file = &file.name;
        let root = yaml::parse(&file.text).map_err(|error| syntax(&file.name, &error))?;
        if root.domain.is_empty() {
            return Err(builder.invalid("config file cannot have empty domain".into()));
        }
        let exists = config.domains.contains_key(root.domain.as_str());
        if exists && !merge_domains {
            return Err(
                builder.invalid(format!("duplicate domain '{}' in config file", root.domain))
            );
        }
        let node = config
            .domains
            .entry(root.domain.as_str().into())
            .or_default();
        builder.descriptors(node, &format!("{}.", root.domain), &root.descriptors)?;
    }
    Ok(Loaded {
        config,
        staged: builder.staged,
    })
}

fn syntax(file: &str, error: &serde_saphyr::Error) -> EnvoyConfigError {
    use serde_saphyr::MessageFormatter;
    EnvoyConfigError::Syntax {
        file: file.to_owned(),
        line: error.location().map_or(0, |l| l.line() as usize),
        message: serde_saphyr::UserMessageFormatter
            .format_message(error)
            .into_owned(),
    }
}

/// Turns YAML descriptors into tree nodes, file by file.
struct Builder<'a> {
    registry: &'a StatsRegistry,
    staged: Vec<(Arc<str>, Arc<RuleStats>)>,
    file: &'a str,
}

impl Builder<'_> {
    fn invalid(&self, message: String) -> EnvoyConfigError {
        EnvoyConfigError::Invalid {
            file: self.file.to_owned(),
            message,
        }
    }

    /// Add `descriptors` under `node`, whose stats key prefix is `parent` (`domain.` or
    /// `domain.key_value.`).
    fn descriptors(
        &mut self,
        node: &mut Node,
        parent: &str,
        descriptors: &[YamlDescriptor],
    ) -> Result<(), EnvoyConfigError> {
        for descriptor in descriptors {
            if descriptor.key.is_empty() {
                return Err(self.invalid("descriptor has empty key".into()));
            }
            let composite = if descriptor.value.is_empty() {
                descriptor.key.clone()
            } else {
                format!("{}_{}", descriptor.key, descriptor.value)
            };
            let path = format!("{parent}{composite}");
            if node.children.contains_key(composite.as_str()) {
                return Err(self.invalid(format!("duplicate descriptor composite key '{path}'")));
            }
            let wildcard = composite.contains('*');
            if descriptor.share_threshold && !wildcard {
                return Err(self.invalid(format!(
                    "share_threshold can only be used with wildcard values (containing '*'), but found key '{composite}'"
                )));
            }
            let rule = match &descriptor.rate_limit {
                Some(rate_limit) => Some(Arc::new(self.rule(&path, descriptor, rate_limit)?)),
                None => None,
            };
            let mut child = Node {
                rule,
                value_to_metric: descriptor.value_to_metric,
                share_threshold: descriptor.share_threshold,
                ..Node::default()
            };
            self.descriptors(&mut child, &format!("{path}."), &descriptor.descriptors)?;
            if wildcard {
                node.wildcards.push(Wildcard::new(&composite));
            }
            node.children.insert(composite.into(), child);
        }
        Ok(())
    }

    /// Validate one `rate_limit` block of the rule at `path`.
    fn rule(
        &mut self,
        path: &str,
        descriptor: &YamlDescriptor,
        rate_limit: &YamlRateLimit,
    ) -> Result<Rule, EnvoyConfigError> {
        let unit = Unit::from_config(&rate_limit.unit);
        let limit = if rate_limit.unlimited {
            if unit.is_some() {
                return Err(
                    self.invalid("should not specify rate limit unit when unlimited".into())
                );
            }
            if rate_limit.algorithm.is_some() || rate_limit.burst.is_some() {
                return Err(self.invalid(format!(
                    "descriptor '{path}': should not specify algorithm or burst when unlimited"
                )));
            }
            None
        } else {
            let Some(unit) = unit else {
                return Err(self.invalid(format!("invalid rate limit unit '{}'", rate_limit.unit)));
            };
            let algorithm = match &rate_limit.algorithm {
                Some(name) => name
                    .parse::<Algorithm>()
                    .map_err(|e| self.invalid(format!("descriptor '{path}': {e}")))?,
                None => Algorithm::FixedWindow,
            };
            let limit = Limit::new(
                path,
                unit,
                rate_limit.requests_per_unit,
                algorithm,
                rate_limit.burst,
            )
            .map_err(|e| self.invalid(format!("descriptor '{path}': {e}")))?;
            Some(limit.in_shadow(descriptor.shadow_mode))
        };
        let mut replaces = Vec::with_capacity(rate_limit.replaces.len());
        for replaced in &rate_limit.replaces {
            if replaced.name.is_empty() {
                return Err(self.invalid("should not have an empty replaces entry".into()));
            }
            if replaced.name == rate_limit.name {
                return Err(
                    self.invalid("replaces should not contain name of same descriptor".into())
                );
            }
            replaces.push(replaced.name.as_str().into());
        }
        let stats_key: Arc<str> = Arc::from(path);
        let stats = self.registry.staged(path);
        self.staged.push((stats_key.clone(), stats.clone()));
        Ok(Rule {
            stats_key,
            name: Arc::from(rate_limit.name.as_str()),
            replaces: replaces.into(),
            shadow_mode: descriptor.shadow_mode,
            quota_mode: descriptor.quota_mode,
            detailed_metric: descriptor.detailed_metric,
            limit,
            metadata: descriptor
                .metadata
                .as_ref()
                .filter(|m| !m.0.fields.is_empty())
                .map(|m| m.0.clone()),
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_globs() {
        let w = |pattern: &str, text: &str| Wildcard::new(pattern).matches(text);
        assert!(w("path_/api/*", "path_/api/users"));
        assert!(w("path_/api/*", "path_/api/"));
        assert!(!w("path_/api/*", "path_/apx/users"));
        assert!(w("key_*", "key_"));
        assert!(w("p_a*b*c", "p_aXbYc"));
        assert!(w("p_a*b*c", "p_abc"));
        assert!(!w("p_a*b*c", "p_acb"));
        assert!(!w("p_ab*ba", "p_aba"), "prefix and suffix may not overlap");
        assert!(w("p_*.pdf", "p_x.pdf"));
        assert!(!w("p_*.pdf", "p_x.pdfs"));
        assert!(w("exact", "exact"));
        assert!(!w("exact", "exactly"));
    }
}
