//! The demo, proven with real parts: `redis-server` processes from the testkit, the `demo`
//! binary cargo built, an HTTP client, and `scripts/demo.sh` itself.

mod common;
mod instances;
mod script;
