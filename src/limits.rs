//! What one run may cost the machine: bounds on every size a request can name, and an
//! estimate of a run's peak memory checked before it is queued (admission control).

/// The default limit on one run's estimated peak memory: the machine's memory less a quarter
/// for the server and the operating system, shared among `workers` concurrent runs.
pub fn default_max_run_memory_bytes(workers: usize) -> u64 {
    let total = machine_memory_bytes().unwrap_or(8 << 30);
    total / 4 * 3 / workers.max(1) as u64
}

/// Physical memory, from `/proc/meminfo` (Linux); `None` elsewhere.
fn machine_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
