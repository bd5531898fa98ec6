//! The middleware in a real axum app on 127.0.0.1:0, driven by a real HTTP client.

mod charges;
mod common;
mod delays;
mod docs;
mod in_flight;
mod limits;
mod proxies;
mod stacks;
mod store_errors;
