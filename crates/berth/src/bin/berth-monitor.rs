//! berth-monitor: the steady-state loop of a detached container's monitor. `berth`
//! creates and starts the container, then execs this small binary (the container stays
//! its child) to copy output into the log, reap the container and time health probes;
//! it execs `berth` again when the container exits. Being its own binary, it keeps only
//! the loop's pages resident, not the whole CLI's.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    std::process::exit(berth_engine::monitor::loop_main(&args));
}
