//! How busy a process kept its CPUs: user + system time over wall time. The bench shows it
//! for the load generator (and the server), so a row bound by the client is visible.

use std::time::{Duration, Instant};

/// This process's user + system CPU time so far (all threads), from `/proc/self/stat`
/// (10 ms resolution: fine for runs of seconds).
pub fn process_cpu_time() -> Duration {
    proc_cpu_time("self").unwrap_or_default()
}

/// CPU time of another process (user + system, all threads), from `/proc/PID/stat`.
pub fn pid_cpu_time(pid: u32) -> Option<Duration> {
    proc_cpu_time(&pid.to_string())
}

/// Linux reports /proc times in USER_HZ, which is 100 on every architecture it exports to
/// user space as ticks (x86, arm, ...): the ABI fixes it, whatever the kernel's HZ.
const USER_HZ: u64 = 100;

fn proc_cpu_time(pid: &str) -> Option<Duration> {
    let ticks = stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    Some(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// utime + stime (clock ticks) of a `/proc/PID/stat` line.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let f: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5); f[0] is field 3 (the state).
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Measures CPU use over an interval: `start`, then `busy()` as a fraction of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    cpu0: Duration,
    t0: Instant,
}

impl CpuMeter {
    /// Starts measuring this process.
    pub fn start() -> CpuMeter {
        CpuMeter { cpu0: process_cpu_time(), t0: Instant::now() }
    }

    /// CPU time since `start` over wall time since `start` (1.0 = one core busy throughout).
    pub fn busy(&self) -> f64 {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-9);
        (process_cpu_time().saturating_sub(self.cpu0)).as_secs_f64() / wall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (a (b) c) R 1 4242 4242 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 3 0 1000 0 0";
        assert_eq!(stat_cpu_ticks(line), Some(267));
        assert_eq!(stat_cpu_ticks("4242 (x) R 1 2"), None);
    }

    #[test]
    fn our_own_pid_reads_like_self_and_a_missing_pid_reads_nothing() {
        let before = process_cpu_time();
        let own = pid_cpu_time(std::process::id()).expect("/proc/PID/stat");
        let after = process_cpu_time();
        assert!(before <= own && own <= after, "{before:?} <= {own:?} <= {after:?}");
        assert!(pid_cpu_time(u32::MAX).is_none());
    }
}
