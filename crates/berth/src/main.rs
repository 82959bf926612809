//! `berth`: the user-facing CLI — flags and printing only. Image commands (pull, push,
//! images, tag, rmi, inspect, prune, history, save, load, import, login, logout), the
//! container commands (run, create, start, stop, restart, kill, rm, ps, logs, exec,
//! inspect, wait, top, stats, pause/unpause, rename, port, update, cp, diff, export,
//! attach, `container prune`), `volume ...`, `network ...`, `berth system check`,
//! `berth registry serve|gc`, the runtime (`berth runtime ...`, the same as `berth-runc`)
//! and `info`. `berth-monitor` is the detached containers' small monitor loop.
//! `berth build` and `berth builder prune` drive the Dockerfile builder. `berth compose ...`
//! runs compose projects (crate berth-compose).

#![recursion_limit = "256"]

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod attach;
mod build_cmd;
mod compose_cmd;
mod containers;
mod format;
mod fs_cmds;
mod images;
mod inspect;
mod manifest_cmd;
mod networks;
mod prune_filter;
mod registry_cmd;
mod system;
mod template;
mod volumes;

#[derive(Parser, Debug)]
#[command(name = "berth", version, about = "A daemonless container engine")]
struct Cli {
    /// Where berth keeps images, containers and volumes.
    #[arg(
        long,
        global = true,
        env = "BERTH_ROOT",
        default_value = "/var/lib/berth"
    )]
    root: PathBuf,
    /// Print debug events on stderr, each stamped with the seconds since start.
    #[arg(short = 'D', long, global = true)]
    debug: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one invoked: building
// the whole tree cost every command ~1 ms of start-up (page faults, allocations).
#[command(defer = true)]
enum Cmd {
    /// runc-compatible low-level runtime commands (state under <root>/runtime).
    Runtime {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run an OCI registry (`serve`) and collect its garbage (`gc`).
    #[command(subcommand)]
    Registry(registry_cmd::RegistryCmd),
    #[command(flatten)]
    Image(images::ImageCmd),
    #[command(flatten)]
    Containers(containers::ContainerCmd),
    /// Manage containers.
    #[command(subcommand)]
    Container(containers::ContainerSub),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volumes::VolumeCmd),
    /// Manage networks.
    #[command(subcommand)]
    Network(networks::NetworkCmd),
    /// Manage multi-platform manifest lists of pushed images.
    #[command(subcommand)]
    Manifest(manifest_cmd::ManifestCmd),
    /// Manage berth: disk usage, prune, info, store check.
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Build an image from a Dockerfile.
    Build(build_cmd::BuildArgs),
    /// Manage the build cache (`prune`).
    #[command(subcommand)]
    Builder(build_cmd::BuilderCmd),
    /// Run multi-container applications from a compose file.
    Compose(compose_cmd::ComposeArgs),
    /// Display system-wide information.
    Info {
        /// Format output: text, json or a Go-style template.
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Get real time events from containers, images, networks and volumes.
    Events(system::EventsArgs),
    /// Show the berth version information.
    Version {
        /// Format output: json or a Go-style template.
        #[arg(short, long)]
        format: Option<String>,
    },
}

fn main() {
    // The detached monitor skips clap: building the whole command tree would make every
    // monitor's resident set larger for nothing.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match &args[..] {
        [_, flag, root, cmd, id] if flag == "--root" && cmd == "container-monitor" => {
            std::process::exit(berth_engine::monitor::main(
                std::path::Path::new(root),
                &id.to_string_lossy(),
                berth_engine::monitor::report_fd(),
                None,
                None,
            ));
        }
        [_, flag, root, cmd, id, first] if flag == "--root" && cmd == "container-monitor" => {
            // `--attach-first=ROWS:COLS` (`run -it`).
            let size = first
                .to_str()
                .and_then(|f| f.strip_prefix("--attach-first="))
                .and_then(|s| s.split_once(':'))
                .map(|(r, c)| (r.parse().unwrap_or(0), c.parse().unwrap_or(0)));
            std::process::exit(berth_engine::monitor::main(
                std::path::Path::new(root),
                &id.to_string_lossy(),
                berth_engine::monitor::report_fd(),
                None,
                Some(size.unwrap_or((0, 0))),
            ));
        }
        [_, flag, root, cmd, id, exited, code, delay]
            if flag == "--root" && cmd == "container-monitor" && exited == "--exited" =>
        {
            let num = |s: &std::ffi::OsString| s.to_str().and_then(|s| s.parse::<u64>().ok());
            let code = code
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
                .unwrap_or(255);
            let delay = std::time::Duration::from_millis(num(delay).unwrap_or(100));
            std::process::exit(berth_engine::monitor::main(
                std::path::Path::new(root),
                &id.to_string_lossy(),
                None,
                Some((code, delay)),
                None,
            ));
        }
        _ => {}
    }
    drop(args);
    let cli = Cli::try_parse().unwrap_or_else(|e| exit_on_usage_error(&e));
    // Warnings from the libraries (a hosts file not updated, a bridge not deleted) reach
    // the user always; `-D` adds the timed debug events.
    berth_cli::log::Log {
        file: None,
        json: false,
    }
    .init(cli.debug);
    if prints_only(&cli.cmd) {
        // `berth images | head` should end quietly, as Docker's CLI does, not with
        // "Error: Broken pipe". Only for commands that print and run nothing: a `run`
        // that died of SIGPIPE would leave its container unmonitored.
        // SAFETY: restores the default action of one signal before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let code = match cli.cmd {
        Cmd::Runtime { args } => {
            let mut full: Vec<std::ffi::OsString> = vec!["berth runtime".into(), "--root".into()];
            full.push(cli.root.join("runtime").into_os_string());
            full.extend(args.into_iter().map(Into::into));
            berth_cli::runc::main(full)
        }
        Cmd::Build(args) => build_cmd::run(&cli.root, args),
        Cmd::Builder(cmd) => build_cmd::builder(&cli.root, cmd),
        Cmd::Compose(args) => compose_cmd::main(&cli.root, args),
        Cmd::Info { format } => system::main(&cli.root, system::SystemCmd::Info { format }),
        Cmd::Version { format } => system::version(format.as_deref()),
        Cmd::Events(a) => system::main(&cli.root, system::SystemCmd::Events(a)),
        Cmd::Registry(cmd) => registry_cmd::main(&cli.root, cmd),
        Cmd::Image(cmd) => images::run(&cli.root, cmd),
        Cmd::Containers(containers::ContainerCmd::Inspect {
            format,
            kind,
            size,
            containers: names,
        }) => inspect::any(&cli.root, &names, format.as_deref(), kind.as_deref(), size),
        Cmd::Containers(cmd) => containers::main(&cli.root, cmd),
        Cmd::Container(cmd) => containers::container_sub(&cli.root, cmd),
        Cmd::Volume(cmd) => volumes::main(&cli.root, cmd),
        Cmd::Network(cmd) => networks::main(&cli.root, cmd),
        Cmd::System(cmd) => system::main(&cli.root, cmd),
        Cmd::Manifest(cmd) => manifest_cmd::main(&cli.root, cmd),
    };
    std::process::exit(code);
}

/// Commands that only read the store and print.
fn prints_only(cmd: &Cmd) -> bool {
    use containers::ContainerCmd as C;
    use images::{ImageCmd as I, ImageSub as IS};
    match cmd {
        Cmd::Info { .. } | Cmd::Version { .. } | Cmd::Events(_) => true,
        Cmd::System(s) => matches!(
            s,
            system::SystemCmd::Df { .. } | system::SystemCmd::Info { .. }
        ),
        Cmd::Image(i) => matches!(
            i,
            I::Images(_)
                | I::Shared(images::SharedImageCmd::History { .. })
                | I::Image(IS::Shared(images::SharedImageCmd::History { .. }))
                | I::Image(IS::Ls(_))
                | I::Image(IS::Inspect { .. })
        ),
        Cmd::Volume(v) => matches!(
            v,
            volumes::VolumeCmd::Ls { .. } | volumes::VolumeCmd::Inspect { .. }
        ),
        Cmd::Network(n) => matches!(
            n,
            networks::NetworkCmd::Ls { .. } | networks::NetworkCmd::Inspect { .. }
        ),
        Cmd::Containers(c) => matches!(
            c,
            C::Ps(_)
                | C::Logs { .. }
                | C::Inspect { .. }
                | C::Top { .. }
                | C::Port { .. }
                | C::Diff { .. }
        ),
        _ => false,
    }
}

/// Prints clap's message and exits as Docker's CLI does: 0 for `--help`/`--version`, 125
/// for a bad flag or value (clap's own 2 is not a code Docker scripts expect).
fn exit_on_usage_error(e: &clap::Error) -> ! {
    let _ = e.print();
    std::process::exit(if e.use_stderr() { 125 } else { 0 })
}
