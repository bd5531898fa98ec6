//! The README shows the example program as it is.

#[test]
fn readme_embeds_the_axum_example_verbatim() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{dir}/README.md")).unwrap();
    let example = std::fs::read_to_string(format!("{dir}/examples/axum.rs")).unwrap();
    assert!(
        readme.contains(&format!("```rust,no_run\n{example}```")),
        "README.md must contain examples/axum.rs in a rust,no_run block"
    );
}
