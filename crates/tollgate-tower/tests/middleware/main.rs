//! The middleware in a real axum app on 127.0.0.1:0, driven by a real HTTP client.

mod common;
mod docs;
mod limits;
mod proxies;
mod stacks;
mod store_errors;
