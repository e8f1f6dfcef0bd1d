//! glibc's malloc arenas for the standalone.
//!
//! glibc gives a thread that meets contention on the heap an arena of its own, up to eight
//! per core, and memory freed in one arena serves that arena's threads only. The standalone
//! runs every role's threads in one process, and in the full ingest benchmark its peak RSS
//! held about 100 MiB more with glibc's default arenas than with `MALLOC_ARENA_MAX=2`
//! (ARCHITECTURE.md, "Memory, per role"). glibc reads the variable only when a process
//! starts, so the standalone starts itself again with it set.

/// Starts this process again with `MALLOC_ARENA_MAX` set to the number of cores (2 at least)
/// unless it is set. Returns when it is set, or when starting again failed (said on stderr:
/// the process goes on with glibc's default arenas). Call before any thread starts.
pub fn cap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;

        const VARIABLE: &str = "MALLOC_ARENA_MAX";
        if std::env::var_os(VARIABLE).is_some() {
            return;
        }
        let arenas = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(err) => {
                eprintln!(
                    "beacon: cannot find this executable to set {VARIABLE} ({err}); going on with glibc's default arenas"
                );
                return;
            }
        };
        let err = std::process::Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .env(VARIABLE, arenas.to_string())
            .exec();
        eprintln!(
            "beacon: starting {} again with {VARIABLE}={arenas} failed ({err}); going on with glibc's default arenas",
            exe.display()
        );
    }
}
