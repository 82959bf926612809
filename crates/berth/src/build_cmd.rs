//! `berth build`: flags and printing; the work is in `berth-build`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use berth_build::cache_io::{self, CacheLocation, CacheSpec};
use berth_build::executor::NamedContext;
use berth_build::remote::Fetched;
use berth_build::runner::RunOptions;
use berth_build::{BuildRequest, Executor, Network};
use berth_image::Reference;
use berth_registry::client::{self, LocalStore, PullOptions};
use clap::Args;

/// `berth build` flags (Docker's names).
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name and optionally a tag (name:tag); may be repeated.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Platform to build for (os/arch[/variant]); FROM pulls that platform's images.
    #[arg(long)]
    platform: Option<String>,
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile; `-` reads stdin).
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Set build-time variables (KEY=VALUE, or KEY to take it from the environment).
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Set the target build stage to build.
    #[arg(long)]
    target: Option<String>,
    /// Always pull the base images, even when the store has them.
    #[arg(long)]
    pull: bool,
    /// Do not use the cache for these stages (names or indexes); repeatable.
    #[arg(long = "no-cache-filter")]
    no_cache_filter: Vec<String>,
    /// Layer compression: uncompressed (default: the local store keeps layers
    /// as plain tars and `berth push` compresses them), gzip or zstd.
    #[arg(long, default_value = "uncompressed")]
    compression: String,
    /// Do not use cache when building the image.
    #[arg(long)]
    no_cache: bool,
    /// Networking mode for RUN instructions: default (berth's bridge, with NAT), host or none.
    #[arg(long, default_value = "default")]
    network: String,
    /// Suppress the build output and print the image ID on success.
    #[arg(short, long)]
    quiet: bool,
    /// Write the image ID to the file.
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Set metadata for an image (KEY=VALUE).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Type of progress output (auto, plain): both print plain step lines.
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Check the Dockerfile for errors and lint warnings without building.
    #[arg(long)]
    check: bool,
    /// Secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR.
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// SSH agent socket for RUN --mount=type=ssh: default (from SSH_AUTH_SOCK),
    /// default=SOCKET or ID=SOCKET.
    #[arg(long = "ssh")]
    ssh: Vec<String>,
    /// Output instead of the local store: type=oci|tar|docker,dest=FILE, type=local,dest=DIR,
    /// or type=registry (the same as --push).
    #[arg(short, long)]
    output: Option<String>,
    /// Push the built tags to their registries (as `berth push` does).
    #[arg(long)]
    push: bool,
    /// Export the build cache: type=local,dest=DIR or type=registry,ref=HOST/REPO:TAG
    /// (mode=min|max, ignore-error=true); repeatable.
    #[arg(long = "cache-to")]
    cache_to: Vec<String>,
    /// Import a build cache: type=local,src=DIR, type=registry,ref=HOST/REPO:TAG or a bare
    /// reference; repeatable.
    #[arg(long = "cache-from")]
    cache_from: Vec<String>,
    /// Additional build context NAME=VALUE: a directory, a git repository or archive URL, or
    /// docker-image://REF; `FROM NAME`, `COPY --from=NAME` and `RUN --mount=from=NAME` read
    /// it instead of the stage or image of that name; repeatable.
    #[arg(long = "build-context")]
    build_contexts: Vec<String>,
    /// Add a custom host-to-IP mapping for RUN (NAME:IP, NAME=IP or NAME:host-gateway).
    #[arg(long = "add-host")]
    add_hosts: Vec<String>,
    /// Size of /dev/shm in RUN (e.g. 128m).
    #[arg(long = "shm-size")]
    shm_size: Option<String>,
    /// Ulimit for RUN (NAME=SOFT[:HARD]); repeatable.
    #[arg(long = "ulimit")]
    ulimits: Vec<String>,
    /// Write the build result's metadata (image and manifest digests, names) to a JSON file.
    #[arg(long = "metadata-file")]
    metadata_file: Option<PathBuf>,
    /// Remove intermediate containers (always done; accepted for Docker's sake).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    rm: Option<bool>,
    /// Always remove intermediate containers (always done; accepted for Docker's sake).
    #[arg(long = "force-rm")]
    force_rm: bool,
    /// Load the image into the local store (the default; accepted for buildx's sake).
    #[arg(long)]
    load: bool,
    /// Provenance attestation (berth attaches none: only "false" is honoured, other values
    /// warn).
    #[arg(long, value_name = "VALUE")]
    provenance: Option<String>,
    /// SBOM attestation (berth attaches none: only "false" is honoured, other values warn).
    #[arg(long, value_name = "VALUE")]
    sbom: Option<String>,
    /// Build context: a directory, `-` for a tar archive (or a lone Dockerfile) on stdin, a
    /// git repository (URL[#ref[:subdir]]) or the URL of a tar archive or a Dockerfile.
    context: PathBuf,
}

/// `berth builder` subcommands.
#[derive(clap::Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one invoked: building
// the whole tree cost every command ~1 ms of start-up (page faults, allocations).
#[command(defer = true)]
pub enum BuilderCmd {
    /// Remove the build cache: its records, and the layers, blobs and cache mounts
    /// that no image uses.
    Prune {
        /// Do not prompt for confirmation (berth never prompts; accepted for Docker's sake).
        #[arg(short, long)]
        force: bool,
        /// Remove all unused build cache (what berth's prune always does: its cache keeps
        /// no "in use" entries).
        #[arg(short, long)]
        all: bool,
        /// `until=TIME` (or `unused-for=`): only records made before it (a duration
        /// ago such as `24h`, RFC 3339 or Unix seconds).
        #[arg(long)]
        filter: Vec<String>,
        /// Keep the newest records whose layers add up to at most this size (`10GB`).
        #[arg(long)]
        keep_storage: Option<String>,
    },
}

/// `builder prune`'s `--filter` and `--keep-storage` as the prune reads them.
fn prune_options(
    filter: &[String],
    keep_storage: Option<&str>,
) -> Result<berth_build::prune::PruneOptions, String> {
    let mut opts = berth_build::prune::PruneOptions::default();
    for f in filter {
        match crate::format::filter_kv(f)? {
            ("until" | "unused-for", v) => {
                opts.until = Some(crate::prune_filter::until_secs(v)?);
            }
            (k, _) => return Err(format!("invalid filter '{k}'")),
        }
    }
    if let Some(k) = keep_storage {
        let bytes = berth_engine::units::parse_bytes(k)?;
        opts.keep_storage = Some(bytes.max(0) as u64);
    }
    Ok(opts)
}

/// Runs `berth builder ...`; returns the exit status.
pub fn builder(root: &Path, cmd: BuilderCmd) -> i32 {
    let BuilderCmd::Prune {
        force: _,
        all: _,
        filter,
        keep_storage,
    } = cmd;
    let opts = match prune_options(&filter, keep_storage.as_deref()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return 1;
        }
    };
    let result = LocalStore::open(root)
        .map_err(anyhow::Error::from)
        .and_then(|store| {
            berth_build::prune::prune_with(&store, &opts).map_err(anyhow::Error::from)
        });
    match result {
        Ok(s) => {
            println!(
                "Deleted {} cache records, {} layers, {} blobs\nTotal reclaimed space: {} bytes",
                s.cache_records, s.layers, s.blobs, s.bytes
            );
            0
        }
        Err(e) => {
            eprintln!("ERROR: {e}");
            1
        }
    }
}

/// Runs `berth build`; returns the exit status.
pub fn run(root: &Path, args: BuildArgs) -> i32 {
    match build(root, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ERROR: {e}");
            1
        }
    }
}

fn build(root: &Path, mut args: BuildArgs) -> anyhow::Result<i32> {
    // `-`: the context is a tar archive on stdin (or stdin is the Dockerfile).
    let mut _stdin_ctx = None;
    let mut stdin_dockerfile = None;
    if args.context.as_os_str() == "-" {
        if args.file.as_deref() == Some("-") {
            anyhow::bail!("the context and the Dockerfile cannot both come from stdin");
        }
        let dir = work_dir(root, "stdin")?;
        let guard = RemoveDir(dir.clone());
        match berth_build::copy::read_stdin_context(std::io::stdin().lock(), &dir)? {
            berth_build::copy::StdinContext::Archive => {}
            berth_build::copy::StdinContext::Dockerfile(text) => stdin_dockerfile = Some(text),
        }
        args.context = dir;
        _stdin_ctx = Some(guard);
    }
    // A git repository or an archive's URL: fetched into a work directory first.
    let mut _remote_ctx = None;
    let source = args.context.to_string_lossy().into_owned();
    if berth_build::remote::is_remote(&source) {
        let dir = work_dir(root, "remote")?;
        let guard = RemoveDir(dir.clone());
        match berth_build::remote::fetch(&source, &dir).map_err(anyhow::Error::msg)? {
            Fetched::Dir(d) => {
                // In a remote context, -f names a file of the context (Docker's rule).
                if let Some(f) = args.file.as_mut().filter(|f| *f != "-") {
                    *f = d.join(f.trim_start_matches('/')).display().to_string();
                }
                args.context = d;
            }
            Fetched::Dockerfile(text) => {
                stdin_dockerfile = Some(text);
                args.context = dir;
            }
        }
        _remote_ctx = Some(guard);
    }
    // Absolute, so remembered file digests are keyed by a stable path.
    if let Ok(abs) = std::fs::canonicalize(&args.context) {
        args.context = abs;
    }
    if !args.context.is_dir() {
        anyhow::bail!(
            "unable to prepare context: path {:?} not found",
            args.context.display().to_string()
        );
    }
    if !matches!(args.progress.as_str(), "auto" | "plain" | "tty" | "quiet") {
        anyhow::bail!("invalid progress mode {:?} (auto, plain)", args.progress);
    }
    let (text, file_name, dockerfile_path) = match stdin_dockerfile {
        Some(text) => (text, "Dockerfile".to_string(), None),
        None => read_dockerfile(&args)?,
    };
    if args.check {
        return Ok(check(root, &text, &file_name, &args));
    }
    let build_args = build_args(&args.build_args);
    // BuildKit lints every build: findings are listed after it, or end it first with
    // `# check=error=true`. A parse error is left to the build to report.
    let setting = build_args
        .get("BUILDKIT_DOCKERFILE_CHECK")
        .map(String::as_str);
    let mut store = LocalStore::open(root)?;
    let (findings, fatal) = berth_build::check_against(&text, &file_name, setting, &|name| {
        local_image_env(&store, name)
    });
    let findings: Vec<_> = findings
        .into_iter()
        .filter(|d| d.rule != "ParseError")
        .collect();
    if fatal && !findings.is_empty() {
        print_findings(&findings);
        let mut rules: Vec<&str> = findings.iter().map(|d| d.rule).collect();
        rules.sort_unstable();
        rules.dedup();
        anyhow::bail!("lint violation found for rules: {}", rules.join(", "));
    }
    let epoch = build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| anyhow::anyhow!("invalid SOURCE_DATE_EPOCH {s:?}"))
        })
        .transpose()?
        .unwrap_or(0);
    let tags: Vec<Reference> = args
        .tags
        .iter()
        .map(|t| {
            Reference::parse_name(t)
                .map(Reference::with_default_tag)
                .map_err(|e| anyhow::anyhow!("invalid tag {t:?}: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let output = args.output.as_deref().map(parse_output).transpose()?;
    let push = args.push || matches!(&output, Some((k, _)) if k == "registry");
    if push && tags.is_empty() {
        anyhow::bail!("--push (or --output type=registry) needs a tag (-t HOST/REPO:TAG)");
    }
    let cache_to = parse_cache_specs(&args.cache_to, true)?;
    let cache_from = parse_cache_specs(&args.cache_from, false)?;
    let mut _remote_ctxs = Vec::new();
    for (flag, v) in [("provenance", &args.provenance), ("sbom", &args.sbom)] {
        if v.as_deref().is_some_and(|v| !matches!(v, "false" | "0")) {
            eprintln!("WARNING: berth does not attach attestations; --{flag} ignored");
        }
    }
    let req = BuildRequest {
        dockerfile: text,
        file_name,
        dockerfile_path,
        context: args.context.clone(),
        build_args,
        target: args.target.clone(),
        no_cache: args.no_cache,
        pull: args.pull,
        no_cache_filter: args
            .no_cache_filter
            .iter()
            .flat_map(|f| f.split(',').map(str::to_string))
            .collect(),
        compression: match args.compression.as_str() {
            "uncompressed" => berth_image::Compression::None,
            "gzip" => berth_image::Compression::Gzip,
            "zstd" => berth_image::Compression::Zstd,
            other => {
                anyhow::bail!("unsupported --compression {other:?} (uncompressed, gzip, zstd)")
            }
        },
        network: args
            .network
            .parse::<Network>()
            .map_err(anyhow::Error::msg)?,
        labels: key_values(&args.labels),
        epoch,
        secrets: secrets(&args.secrets)?,
        ssh: ssh_sockets(&args.ssh)?,
        platform: args.platform.clone(),
        named_contexts: named_contexts(root, &args.build_contexts, &mut _remote_ctxs)?,
        run_options: run_options(root, &args)?,
    };
    let mut progress: Box<dyn Write> = if args.quiet {
        Box::new(std::io::sink())
    } else {
        // One write per line: stages built in parallel processes share stderr, and an
        // unbuffered `writeln!` is several writes that could interleave mid-line.
        Box::new(std::io::LineWriter::with_capacity(
            64 << 10,
            std::io::stderr(),
        ))
    };
    if !req.no_cache {
        import_caches(&store, &cache_from, &mut progress);
    }
    let built = {
        let mut exec = Executor::new(&mut store, root, &req, &mut progress)?;
        exec.build(&mut pull)?
    };
    let id = built.image.config_digest.to_string();
    match output {
        Some((kind, Some(dest))) if kind == "oci" => {
            let name = tags.first().map(|t| t.to_string());
            berth_build::export::to_oci_archive(&store, &built.image, name.as_deref(), &dest)?;
            let _ = writeln!(progress, "#0 exporting to oci image format {dest} done");
        }
        Some((kind, Some(dest))) if kind == "tar" || kind == "local" => {
            berth_build::export::to_files(&store, &built.image, &dest, kind == "tar")?;
            let _ = writeln!(progress, "#0 exporting to {kind} {dest} done");
        }
        Some((kind, dest)) => {
            // type=docker (and registry): the image goes to the store as
            // usual; a docker archive is then written from there.
            to_store(&mut store, &built, &tags, &mut progress)?;
            if let (true, Some(dest)) = (kind == "docker", dest) {
                save_docker_archive(&store, &id, &tags, &dest)?;
                let _ = writeln!(progress, "#0 exporting to docker image format {dest} done");
            }
        }
        None => to_store(&mut store, &built, &tags, &mut progress)?,
    }
    if push {
        for t in &tags {
            let report = client::push(&store, &t.to_string(), t, &registry_options(t.domain())?)
                .map_err(|e| anyhow::anyhow!("push {t}: {e}"))?;
            let _ = writeln!(
                progress,
                "#0 pushing {t} done (digest: {})",
                report.manifest_digest
            );
        }
    }
    export_caches(&mut store, &built, &cache_to, &mut progress)?;
    if let Some(f) = &args.metadata_file {
        write_metadata(f, &built.image, &tags)?;
    }
    if let Some(f) = &args.iidfile {
        std::fs::write(f, &id).map_err(|e| anyhow::anyhow!("write {}: {e}", f.display()))?;
    }
    if args.quiet {
        println!("{id}");
    } else {
        print_findings(&findings);
    }
    Ok(0)
}

/// BuildKit's summary of a build's check findings.
fn print_findings(findings: &[berth_build::Diagnostic]) {
    if findings.is_empty() {
        return;
    }
    let n = findings.len();
    let plural = if n == 1 { "warning" } else { "warnings" };
    eprintln!(" {n} {plural} found (use berth build --check to expand):");
    for d in findings {
        eprintln!(" - {}: {} (line {})", d.rule, d.message, d.line);
    }
}

/// A fresh directory under the store's build work area, named after `what` and this
/// process.
fn work_dir(root: &Path, what: &str) -> anyhow::Result<PathBuf> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = root
        .join("build/work")
        .join(format!("{what}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// `--build-context NAME=VALUE`s by context key; remote ones are fetched into directories
/// that `guards` removes.
fn named_contexts(
    root: &Path,
    list: &[String],
    guards: &mut Vec<RemoveDir>,
) -> anyhow::Result<BTreeMap<String, NamedContext>> {
    let mut out = BTreeMap::new();
    for item in list {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("invalid --build-context {item:?} (NAME=VALUE)"))?;
        if !berth_build::stages::is_image_reference(name) || name.contains('@') {
            anyhow::bail!("invalid context name {name:?} in --build-context {item:?}");
        }
        let ctx = if let Some(r) = value.strip_prefix("docker-image://") {
            Reference::parse_name(r)
                .map_err(|e| anyhow::anyhow!("invalid --build-context {item:?}: {e}"))?;
            NamedContext::Image(r.to_string())
        } else if berth_build::remote::is_remote(value) {
            let dir = work_dir(root, "named")?;
            guards.push(RemoveDir(dir.clone()));
            match berth_build::remote::fetch(value, &dir)
                .map_err(|e| anyhow::anyhow!("--build-context {item:?}: {e}"))?
            {
                Fetched::Dir(d) => NamedContext::Dir(d),
                Fetched::Dockerfile(_) => anyhow::bail!(
                    "--build-context {item:?}: {value} is neither an archive nor a git repository"
                ),
            }
        } else if value.contains("://") {
            anyhow::bail!(
                "--build-context {item:?}: unsupported source (a directory, docker-image://, \
                 a git repository or an archive's URL)"
            );
        } else {
            let dir = std::fs::canonicalize(value)
                .map_err(|e| anyhow::anyhow!("--build-context {item:?}: {value}: {e}"))?;
            if !dir.is_dir() {
                anyhow::bail!("--build-context {item:?}: {value} is not a directory");
            }
            NamedContext::Dir(dir)
        };
        let key = berth_build::stages::context_key(name);
        if out.insert(key, ctx).is_some() {
            anyhow::bail!("--build-context {name:?} is given twice");
        }
    }
    Ok(out)
}

/// `--add-host`, `--shm-size` and `--ulimit` for every RUN.
fn run_options(root: &Path, args: &BuildArgs) -> anyhow::Result<RunOptions> {
    let mut extra_hosts = Vec::new();
    for h in &args.add_hosts {
        let (name, mut ip) = berth_engine::net::parse_add_host(h)?;
        if ip == berth_engine::net::HOST_GATEWAY {
            ip = berth_engine::net::host_gateway(root)?;
        }
        extra_hosts.push((name, ip));
    }
    let shm_size = match &args.shm_size {
        Some(s) => match berth_engine::units::parse_bytes(s).map_err(anyhow::Error::msg)? {
            n if n > 0 => Some(n as u64),
            _ => anyhow::bail!("invalid --shm-size {s:?}: must be greater than 0"),
        },
        None => None,
    };
    let mut ulimits = Vec::new();
    for u in &args.ulimits {
        let (name, soft, hard) = berth_engine::spec::parse_ulimit(u)?;
        // -1 is unlimited (RLIM_INFINITY, all ones).
        ulimits.push((name, soft as u64, hard as u64));
    }
    Ok(RunOptions {
        extra_hosts,
        shm_size,
        ulimits,
    })
}

/// `--metadata-file`: buildx's keys for the image it built.
fn write_metadata(
    path: &Path,
    image: &berth_build::export::Image,
    tags: &[Reference],
) -> anyhow::Result<()> {
    let names: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    let mut meta = serde_json::json!({
        "containerimage.config.digest": image.config_digest.to_string(),
        "containerimage.digest": image.manifest_digest.to_string(),
        "containerimage.descriptor": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.manifest_digest.to_string(),
            "size": image.manifest.len(),
        },
    });
    if !names.is_empty() {
        meta["image.name"] = serde_json::json!(names.join(","));
    }
    let text = serde_json::to_string_pretty(&meta)?;
    std::fs::write(path, text + "\n").map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))
}

fn to_store(
    store: &mut LocalStore,
    built: &berth_build::Built,
    tags: &[Reference],
    progress: &mut dyn Write,
) -> anyhow::Result<()> {
    berth_build::export::to_store(store, &built.image, &built.config, tags)?;
    let _ = writeln!(
        progress,
        "#0 writing image {} done",
        built.image.config_digest
    );
    for t in tags {
        let _ = writeln!(progress, "#0 naming to {t} done");
    }
    Ok(())
}

/// `--output type=docker,dest=FILE`: the archive `berth save` writes (and
/// `docker load` reads), of the tags or else the bare image id.
fn save_docker_archive(
    store: &LocalStore,
    id: &str,
    tags: &[Reference],
    dest: &str,
) -> anyhow::Result<()> {
    let names: Vec<String> = if tags.is_empty() {
        vec![id.to_string()]
    } else {
        tags.iter().map(|t| t.to_string()).collect()
    };
    if dest == "-" {
        client::archive::save(store, &names, std::io::stdout().lock())?;
        return Ok(());
    }
    let f = std::fs::File::create(dest).map_err(|e| anyhow::anyhow!("create {dest}: {e}"))?;
    let mut w = std::io::BufWriter::new(f);
    client::archive::save(store, &names, &mut w)?;
    w.flush().map_err(|e| anyhow::anyhow!("write {dest}: {e}"))
}

/// Registry settings as `berth push` uses them: registries.conf decides
/// whether plain http is allowed, `berth login` gives the credentials.
fn registry_options(domain: &str) -> anyhow::Result<client::Options> {
    Ok(client::Options {
        tls_verify: !client::registries::Insecure::load()?.contains(domain),
        credentials: client::credentials::lookup(&client::credentials::default_path(), domain)?,
        ..client::Options::default()
    })
}

fn parse_cache_specs(list: &[String], export: bool) -> anyhow::Result<Vec<CacheSpec>> {
    list.iter()
        .map(|s| CacheSpec::parse(s, export).map_err(anyhow::Error::from))
        .collect()
}

fn cache_options(location: &CacheLocation) -> anyhow::Result<client::Options> {
    match location {
        CacheLocation::Registry(r) => registry_options(r.domain()),
        CacheLocation::Local { .. } => Ok(client::Options::default()),
    }
}

fn describe(location: &CacheLocation) -> String {
    match location {
        CacheLocation::Local { dir, tag } => format!("{}:{tag}", dir.display()),
        CacheLocation::Registry(r) => r.to_string(),
    }
}

/// `--cache-from`: a cache that cannot be read is a warning, as in BuildKit
/// (the first CI run has none yet).
fn import_caches(store: &LocalStore, specs: &[CacheSpec], progress: &mut dyn Write) {
    for spec in specs {
        let what = describe(&spec.location);
        let result = cache_options(&spec.location)
            .and_then(|o| cache_io::import(store, &spec.location, &o).map_err(anyhow::Error::from));
        match result {
            Ok(n) => {
                let _ = writeln!(progress, "#0 importing cache from {what}: {n} records");
            }
            Err(e) => {
                let _ = writeln!(progress, "WARNING: cache import from {what} failed: {e}");
            }
        }
    }
}

fn export_caches(
    store: &mut LocalStore,
    built: &berth_build::Built,
    specs: &[CacheSpec],
    progress: &mut dyn Write,
) -> anyhow::Result<()> {
    for spec in specs {
        let what = describe(&spec.location);
        let steps = cache_io::select(&built.steps, spec.mode, &built.final_stages);
        let result = cache_options(&spec.location).and_then(|o| {
            cache_io::export(store, &steps, &spec.location, &o).map_err(anyhow::Error::from)
        });
        match result {
            Ok(d) => {
                let _ = writeln!(
                    progress,
                    "#0 exporting cache to {what}: {} records, manifest {d} done",
                    steps.len()
                );
            }
            Err(e) if spec.ignore_error => {
                let _ = writeln!(progress, "WARNING: cache export to {what} failed: {e}");
            }
            Err(e) => anyhow::bail!("cache export to {what}: {e}"),
        }
    }
    Ok(())
}

/// Removes a directory when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Dockerfile's text, its name in messages and its path.
fn read_dockerfile(args: &BuildArgs) -> anyhow::Result<(String, String, Option<PathBuf>)> {
    match args.file.as_deref() {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            Ok((text, "Dockerfile".into(), None))
        }
        other => {
            let path = match other {
                Some(f) => PathBuf::from(f),
                None => args.context.join("Dockerfile"),
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!("failed to read dockerfile {}: {e}", path.display())
            })?;
            let name = path
                .file_name()
                .map_or_else(|| "Dockerfile".into(), |n| n.to_string_lossy().into_owned());
            Ok((text, name, Some(path)))
        }
    }
}

/// The environment variable names of an image in the local store, for the lints (which
/// pull nothing).
fn local_image_env(store: &LocalStore, name: &str) -> Option<Vec<String>> {
    let rec = store.find(name).ok()?;
    let config = store.config_json(&rec).ok()?;
    let env = config["config"]["Env"].as_array().map(|list| {
        list.iter()
            .filter_map(|e| e.as_str())
            .map(|e| e.split_once('=').map_or(e, |(k, _)| k).to_string())
            .collect()
    });
    Some(env.unwrap_or_default())
}

/// `--check`: lint rules, then the parse and stage graph; non-zero on any finding.
fn check(root: &Path, text: &str, file: &str, args: &BuildArgs) -> i32 {
    // As `docker build --check`: the warnings first, then the error that
    // stops the build, if any. A file the parser refuses comes back as a
    // ParseError finding, which is that error, not a warning.
    // The `BUILDKIT_DOCKERFILE_CHECK` build argument (`skip=…`) counts here as in a build.
    let args_given = build_args(&args.build_args);
    let setting = args_given
        .get("BUILDKIT_DOCKERFILE_CHECK")
        .map(String::as_str);
    // A check looks into an existing store and makes none.
    let store = root
        .join("berth.db")
        .exists()
        .then(|| LocalStore::open(root).ok())
        .flatten();
    let base_env = |name: &str| store.as_ref().and_then(|s| local_image_env(s, name));
    let (parse_errors, warnings): (Vec<_>, Vec<_>) =
        berth_build::check_against(text, file, setting, &base_env)
            .0
            .into_iter()
            .partition(|d| d.rule == "ParseError");
    for d in &warnings {
        eprintln!(
            "WARNING: {} - {}\n{}\n{}:{}",
            d.rule,
            d.url(),
            d.message,
            d.file,
            d.line
        );
    }
    if let Some(e) = parse_errors.first() {
        eprintln!("ERROR: {}:{}: {}", e.file, e.line, e.message);
        return 1;
    }
    if let Err(e) = plan_stages(text, file, args) {
        eprintln!("ERROR: {e}");
        return 1;
    }
    if warnings.is_empty() {
        eprintln!("Check complete, no warnings found.");
        0
    } else {
        eprintln!(
            "Check complete, {} warning(s) have been found!",
            warnings.len()
        );
        1
    }
}

/// Validates the instructions and plans the stages the target needs, as a
/// build would before running anything.
fn plan_stages(text: &str, file: &str, args: &BuildArgs) -> anyhow::Result<()> {
    let df = berth_build::parse(text, file)?;
    let opts = berth_build::stages::BuildOptions {
        build_args: build_args(&args.build_args),
        ..Default::default()
    };
    let graph = berth_build::stages::StageGraph::new(&df, &opts, file)?;
    graph.plan(args.target.as_deref())?;
    Ok(())
}

fn build_args(list: &[String]) -> BTreeMap<String, String> {
    list.iter()
        .filter_map(|a| match a.split_once('=') {
            Some((k, v)) => Some((k.to_string(), v.to_string())),
            None => std::env::var(a).ok().map(|v| (a.clone(), v)),
        })
        .collect()
}

fn key_values(list: &[String]) -> BTreeMap<String, String> {
    list.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (a.clone(), String::new()),
        })
        .collect()
}

/// `--secret id=ID,src=FILE|env=VAR` → contents by id.
fn secrets(list: &[String]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for spec in list {
        let (mut id, mut src, mut env) = (None, None, None);
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(v.to_string()),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", _)) => {}
                _ => anyhow::bail!("unexpected field {part:?} in --secret {spec}"),
            }
        }
        let id = id
            .or_else(|| env.clone())
            .ok_or_else(|| anyhow::anyhow!("--secret {spec}: id is required"))?;
        let bytes = match (src, env) {
            (Some(f), _) => {
                std::fs::read(&f).map_err(|e| anyhow::anyhow!("read secret {id} from {f}: {e}"))?
            }
            (None, Some(v)) => std::env::var(&v)
                .map_err(|_| anyhow::anyhow!("secret {id}: environment variable {v} is not set"))?
                .into_bytes(),
            (None, None) => std::env::var(&id)
                .map_err(|_| anyhow::anyhow!("secret {id}: give src=FILE or env=VAR"))?
                .into_bytes(),
        };
        out.insert(id, bytes);
    }
    Ok(out)
}

/// `--ssh ID[=SOCKET]` → sockets by id; without a socket, `SSH_AUTH_SOCK`'s.
fn ssh_sockets(list: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for spec in list {
        let (id, socket) = match spec.split_once('=') {
            Some((id, path)) => (id.to_string(), PathBuf::from(path)),
            None => {
                let path = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| {
                    anyhow::anyhow!("--ssh {spec}: SSH_AUTH_SOCK is not set (give {spec}=SOCKET)")
                })?;
                (spec.clone(), PathBuf::from(path))
            }
        };
        if socket.as_os_str().is_empty() || id.is_empty() {
            anyhow::bail!("--ssh {spec}: expected ID or ID=SOCKET");
        }
        out.insert(id, socket);
    }
    Ok(out)
}

/// `type=oci|tar|local|docker|registry[,dest=PATH]` → (type, PATH); a bare
/// PATH is `local`. Only docker and registry go without a dest.
fn parse_output(spec: &str) -> anyhow::Result<(String, Option<String>)> {
    if !spec.contains('=') {
        return Ok(("local".into(), Some(spec.to_string())));
    }
    let mut kind = None;
    let mut dest = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_string()),
            Some(("dest", v)) => dest = Some(v.to_string()),
            _ => anyhow::bail!("unsupported --output field {part:?}"),
        }
    }
    match (kind.as_deref(), dest) {
        (Some(k @ ("oci" | "tar" | "local")), Some(d)) => Ok((k.to_string(), Some(d))),
        (Some(k @ ("oci" | "tar" | "local")), None) => {
            anyhow::bail!("--output type={k} needs dest=PATH")
        }
        (Some("docker"), d) => Ok(("docker".into(), d)),
        (Some("registry"), None) => Ok(("registry".into(), None)),
        (Some("registry"), Some(_)) => anyhow::bail!("--output type=registry takes no dest"),
        _ => anyhow::bail!(
            "--output supports type=oci, type=tar, type=local, type=docker and type=registry"
        ),
    }
}

/// Pulls a missing base image with default registry settings.
fn pull(store: &mut LocalStore, name: &str, platform: Option<&str>) -> Result<(), String> {
    let reference = Reference::parse_name(name)
        .map_err(|e| e.to_string())?
        .with_default_tag();
    let opts = PullOptions {
        registry: registry_options(reference.domain()).map_err(|e| e.to_string())?,
        platform: platform
            .map(berth_registry::client::Platform::parse)
            .transpose()
            .map_err(|e| e.to_string())?,
    };
    client::pull(store, &reference, &opts)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
