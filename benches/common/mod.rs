//! What the benches share.

/// CPU seconds used so far by all threads of this process (the software
/// adapter's worker threads included); 0 where /proc is not available.
pub fn cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let mut ns = 0u64;
    for e in dir.flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
            ns += s.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    ns as f64 * 1e-9
}
