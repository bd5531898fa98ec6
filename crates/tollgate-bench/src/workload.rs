//! What to send: how many keys, in which distribution, how many at once, for how long.

use std::str::FromStr;
use std::time::Duration;

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Key of rank k drawn with probability ∝ 1 / k^s (a few hot keys, a long tail).
    Zipf(f64),
}

impl FromStr for Distribution {
    type Err = String;

    /// `uniform`, `zipf` (s = 1.0) or `zipf:S`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "uniform" => Ok(Distribution::Uniform),
            "zipf" => Ok(Distribution::Zipf(1.0)),
            other => other
                .strip_prefix("zipf:")
                .and_then(|x| x.parse::<f64>().ok())
                .filter(|x| *x > 0.0 && x.is_finite())
                .map(Distribution::Zipf)
                .ok_or_else(|| format!("unknown distribution `{other}` (uniform, zipf, zipf:S)")),
        }
    }
}

/// The load to generate.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Distinct keys.
    pub keys: usize,
    /// How keys are drawn.
    pub distribution: Distribution,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Stop after this many timed requests…
    pub requests: u64,
    /// …or after this long, whichever comes first.
    pub duration: Option<Duration>,
    /// Cost of each request.
    pub cost: u64,
    /// Before timing, send requests to every key until it is rejected, so the timed part measures
    /// rejections.
    pub exhaust_first: bool,
    /// Seed of the key sequence.
    pub seed: u64,
    /// Prefix of every key (keeps runs apart in a shared store).
    pub key_prefix: String,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            keys: 10_000,
            distribution: Distribution::Uniform,
            concurrency: 50,
            requests: 200_000,
            duration: None,
            cost: 1,
            exhaust_first: false,
            seed: 0x5EED,
            key_prefix: "bench:".into(),
        }
    }
}

impl Workload {
    /// The key names, `key_prefix` + index.
    pub fn key_names(&self) -> Vec<String> {
        (0..self.keys.max(1))
            .map(|i| format!("{}{i}", self.key_prefix))
            .collect()
    }

    /// A key index sequence of `len` draws (repeat it for longer runs).
    pub fn sequence(&self, len: usize) -> Vec<u32> {
        let keys = self.keys.max(1);
        let mut rng = SplitMix(self.seed);
        match self.distribution {
            Distribution::Uniform => (0..len)
                .map(|_| (rng.next() % keys as u64) as u32)
                .collect(),
            Distribution::Zipf(s) => {
                let mut cdf = Vec::with_capacity(keys);
                let mut total = 0.0;
                for k in 1..=keys {
                    total += 1.0 / (k as f64).powf(s);
                    cdf.push(total);
                }
                (0..len)
                    .map(|_| {
                        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
                        cdf.partition_point(|&c| c < u).min(keys - 1) as u32
                    })
                    .collect()
            }
        }
    }
}

/// splitmix64: a fixed, fast sequence.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_is_skewed_and_uniform_is_not() {
        let w = Workload {
            keys: 1000,
            distribution: "zipf".parse().unwrap(),
            ..Workload::default()
        };
        let seq = w.sequence(100_000);
        let hot = seq.iter().filter(|&&k| k == 0).count();
        assert!(hot > 10_000, "rank 1 drawn {hot} times");
        let u = Workload {
            keys: 1000,
            ..Workload::default()
        }
        .sequence(100_000);
        let hot = u.iter().filter(|&&k| k == 0).count();
        assert!((50..200).contains(&hot), "uniform key 0 drawn {hot} times");
        assert!("zipf:0".parse::<Distribution>().is_err());
    }
}
