//! The baseline `POST /v1/check` is measured against: a trivial axum handler that parses the
//! JSON body and answers a fixed decision, with no store, headers or metrics.
//!
//! ```sh
//! cargo run --release -p tollgate-server --example baseline_axum -- 127.0.0.1:18090
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;

const DECISION: &str = r#"{"allowed":true,"policy":"api","limit":100,"remaining":99,"reset_after_ms":600,"retry_after_ms":0,"degraded":false}"#;

async fn check(body: Bytes) -> impl IntoResponse {
    let parsed = serde_json::from_slice::<serde_json::Value>(&body);
    let status = if parsed.is_ok() { 200 } else { 400 };
    (
        axum::http::StatusCode::from_u16(status).unwrap_or_default(),
        [(header::CONTENT_TYPE, "application/json")],
        DECISION,
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".to_owned());
    let app = Router::new()
        .route("/v1/check", post(check))
        .route("/hello", post(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("baseline listening on {addr}");
    axum::serve(listener, app).await
}
