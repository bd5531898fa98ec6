//! Every Lua script the store sends is checked in under `scripts/generated/` exactly as Redis
//! runs it (the sources are assembled from the blocks in `scripts/` at compile time), so a
//! reader sees each whole. This fails when a copy is stale, missing or left over; to write
//! them afresh: `TOLLGATE_BLESS=1 cargo test -p tollgate-redis --test scripts`.

use std::collections::BTreeSet;
use std::path::Path;

use tollgate_redis::script::every_script;

#[test]
fn generated_scripts_are_what_redis_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/generated");
    let bless = std::env::var_os("TOLLGATE_BLESS").is_some();
    let scripts = every_script();
    let mut stale = Vec::new();
    for (name, source) in &scripts {
        let path = dir.join(name);
        if bless {
            std::fs::write(&path, source).expect("generated script written");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(source.as_str()) {
            stale.push(name.clone());
        }
    }
    let expected: BTreeSet<String> = scripts.into_iter().map(|(name, _)| name).collect();
    let left_over: Vec<String> = std::fs::read_dir(&dir)
        .expect("scripts/generated exists")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".lua") && !expected.contains(name))
        .collect();
    assert!(
        stale.is_empty() && left_over.is_empty(),
        "scripts/generated is out of date (stale or missing: {stale:?}; left over: {left_over:?}): \
         run TOLLGATE_BLESS=1 cargo test -p tollgate-redis --test scripts"
    );
}
