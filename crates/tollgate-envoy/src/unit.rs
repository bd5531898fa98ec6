//! The time units of envoyproxy/ratelimit and the window each one means.

use std::fmt;
use std::time::Duration;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as ProtoUnit;

/// A `rate_limit.unit`: the length of one fixed window.
///
/// The lengths are upstream's (`UnitToDivider`): a month is 30 days and a year 365 days, and
/// every window is aligned to the Unix epoch, so a `week` window starts on a Thursday, 00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// One second.
    Second,
    /// 60 seconds.
    Minute,
    /// 3,600 seconds.
    Hour,
    /// 86,400 seconds.
    Day,
    /// 7 days.
    Week,
    /// 30 days.
    Month,
    /// 365 days.
    Year,
}

impl Unit {
    /// Every unit, shortest first.
    pub const ALL: [Unit; 7] = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    /// The unit's length in seconds.
    pub const fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }

    /// The unit's length.
    pub const fn period(self) -> Duration {
        Duration::from_secs(self.seconds())
    }

    /// The name as written in config files, lower case (`minute`).
    pub const fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    /// Parse a config file's unit. Like upstream, the match ignores case (`MINUTE`, `Minute`).
    pub fn from_config(text: &str) -> Option<Unit> {
        Unit::ALL
            .into_iter()
            .find(|unit| unit.name().eq_ignore_ascii_case(text))
    }

    /// The unit of a protobuf enum value (`RateLimitResponse.RateLimit.Unit`, also the numbering
    /// of `envoy.type.v3.RateLimitUnit` in a request's limit override). `UNKNOWN` is `None`.
    pub fn from_proto(value: i32) -> Option<Unit> {
        match ProtoUnit::try_from(value).ok()? {
            ProtoUnit::Unknown => None,
            ProtoUnit::Second => Some(Unit::Second),
            ProtoUnit::Minute => Some(Unit::Minute),
            ProtoUnit::Hour => Some(Unit::Hour),
            ProtoUnit::Day => Some(Unit::Day),
            ProtoUnit::Week => Some(Unit::Week),
            ProtoUnit::Month => Some(Unit::Month),
            ProtoUnit::Year => Some(Unit::Year),
        }
    }

    /// The protobuf enum value reported in `current_limit.unit`.
    pub fn to_proto(self) -> i32 {
        let unit = match self {
            Unit::Second => ProtoUnit::Second,
            Unit::Minute => ProtoUnit::Minute,
            Unit::Hour => ProtoUnit::Hour,
            Unit::Day => ProtoUnit::Day,
            Unit::Week => ProtoUnit::Week,
            Unit::Month => ProtoUnit::Month,
            Unit::Year => ProtoUnit::Year,
        };
        unit as i32
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_trip_and_ignore_case() {
        for unit in Unit::ALL {
            assert_eq!(Unit::from_config(unit.name()), Some(unit));
            assert_eq!(Unit::from_config(&unit.name().to_uppercase()), Some(unit));
            assert_eq!(Unit::from_proto(unit.to_proto()), Some(unit));
        }
        assert_eq!(Unit::from_config("fortnight"), None);
        assert_eq!(Unit::from_config("unknown"), None);
        assert_eq!(Unit::from_proto(0), None);
        assert_eq!(Unit::from_proto(99), None);
        assert_eq!(Unit::Month.seconds(), 2_592_000);
        assert_eq!(Unit::Year.seconds(), 31_536_000);
    }
}
