//! Two contenders timed in alternating rounds (ABBA), in one process: drift on a shared machine
//! hits both alike. Shared by the examples that compare two paths (`#[path]` module).

/// Warm `a` and `b` once each, then time `rounds` rounds of both, the order swapped every
/// round. Answers each round's (seconds of `a`, seconds of `b`).
pub fn rounds(rounds: usize, a: &dyn Fn(), b: &dyn Fn()) -> Vec<(f64, f64)> {
    let timed = |f: &dyn Fn()| {
        let start = std::time::Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    a();
    b();
    (0..rounds)
        .map(|round| {
            if round % 2 == 0 {
                let first = timed(a);
                (first, timed(b))
            } else {
                let second = timed(b);
                (timed(a), second)
            }
        })
        .collect()
}
