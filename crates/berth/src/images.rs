//! Image commands (`pull`, `push`, `images`, `tag`, `rmi`, `image inspect`, `login`,
//! `logout`): flags and printing in Docker's words; the work is in `berth-registry`'s
//! client and `berth-image`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use crate::format::human_size;
use berth_image::{Digest, Reference};
use berth_registry::client::progress::{Event, Observer, Progress};
use berth_registry::client::{
    self, credentials, BlobStatus, Credentials, LayerStatus, LocalStore, Platform, PullOptions,
    Removal,
};
use clap::{ArgAction, Args, Subcommand};

/// Exit status of a failed image command (Docker's engine error).
const ENGINE_ERROR: i32 = 125;

/// Registry connection flags shared by pull, push and login.
#[derive(Args, Debug, Clone)]
pub struct TlsArgs {
    /// Require HTTPS and verify certificates (false: allow plain http and any certificate).
    /// Default: true, unless registries.conf or daemon.json lists the registry as insecure.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    tls_verify: Option<bool>,
}

impl TlsArgs {
    /// The flag if given, else what the registries configuration says of `domain`.
    pub fn verify(&self, domain: &str) -> Result<bool, client::Error> {
        match self.tls_verify {
            Some(v) => Ok(v),
            None => Ok(!client::registries::Insecure::load()?.contains(domain)),
        }
    }
}

/// Layer compression flags of push (podman's names).
#[derive(Args, Debug, Clone)]
pub struct CompressionArgs {
    /// Compress uncompressed layers with this format: gzip or zstd. zstd also
    /// recompresses gzip layers.
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd"])]
    compression_format: String,
    /// Compression level (gzip 0-9, default 1; zstd 1-22, default 3).
    #[arg(long)]
    compression_level: Option<i32>,
    /// Recompress layers that are already compressed.
    #[arg(long)]
    force_compression: bool,
}

impl CompressionArgs {
    fn options(&self) -> Result<client::CompressOptions, String> {
        let format = match self.compression_format.as_str() {
            "zstd" => berth_image::Compression::Zstd,
            _ => berth_image::Compression::Gzip,
        };
        if let Some(l) = self.compression_level {
            let range = berth_image::compress::level_range(format);
            if !range.contains(&l) {
                return Err(format!(
                    "--compression-level {l}: {} takes {}-{}",
                    self.compression_format,
                    range.start(),
                    range.end()
                ));
            }
        }
        Ok(client::CompressOptions {
            format,
            level: self.compression_level,
            force: self.force_compression,
        })
    }
}

/// The image subcommands, flattened into berth's top level.
#[derive(Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one invoked: building
// the whole tree cost every command ~1 ms of start-up (page faults, allocations).
#[command(defer = true)]
pub enum ImageCmd {
    #[command(flatten)]
    Shared(SharedImageCmd),
    /// List images.
    Images(ListArgs),
    /// Remove one or more images.
    Rmi(RmArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageSub),
    /// Log in to a registry.
    Login {
        /// Username.
        #[arg(short, long)]
        username: Option<String>,
        /// Password.
        #[arg(short, long)]
        password: Option<String>,
        /// Take the password from stdin.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        tls: TlsArgs,
        /// Registry (default docker.io).
        server: Option<String>,
    },
    /// Log out from a registry.
    Logout {
        /// Registry (default docker.io).
        server: Option<String>,
    },
}

/// The image commands Docker has both at the top level and under `image`
/// (`docker pull` and `docker image pull`).
#[derive(Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one invoked: building
// the whole tree cost every command ~1 ms of start-up (page faults, allocations).
#[command(defer = true)]
pub enum SharedImageCmd {
    /// Download an image from a registry.
    Pull {
        /// Set platform if the image is multi-platform (os[/arch[/variant]]).
        #[arg(long)]
        platform: Option<String>,
        /// Suppress verbose output.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        tls: TlsArgs,
        /// NAME[:TAG|@DIGEST]
        image: String,
    },
    /// Upload an image to a registry.
    Push {
        /// Suppress verbose output.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        compression: CompressionArgs,
        /// NAME[:TAG]
        image: String,
    },
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag {
        /// SOURCE_IMAGE[:TAG]
        source: String,
        /// TARGET_IMAGE[:TAG]
        target: String,
    },
    /// Save images to a tar archive (docker-archive and OCI layout at once).
    Save {
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
        /// IMAGE...
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Load images from a tar archive (docker-archive or OCI layout).
    Load {
        /// Read from this file instead of stdin.
        #[arg(short, long)]
        input: Option<std::path::PathBuf>,
        /// Suppress the load output.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Import a root filesystem tarball (plain, gzip or zstd) as a one-layer image.
    Import {
        /// Apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV, EXPOSE,
        /// LABEL, USER, WORKDIR); repeatable.
        #[arg(short, long)]
        change: Vec<String>,
        /// The platform the files are for (os/arch[/variant]); default: this host's.
        #[arg(long)]
        platform: Option<String>,
        /// File to read, or `-` for stdin.
        source: String,
        /// REPOSITORY[:TAG] to give the image.
        reference: Option<String>,
    },
    /// Show the history of an image.
    History {
        /// Only show image IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate output.
        #[arg(long)]
        no_trunc: bool,
        /// `json` for one JSON object per line.
        #[arg(long)]
        format: Option<String>,
        /// IMAGE
        image: String,
    },
}

/// `image` subcommands.
#[derive(Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one invoked: building
// the whole tree cost every command ~1 ms of start-up (page faults, allocations).
#[command(defer = true)]
pub enum ImageSub {
    #[command(flatten)]
    Shared(SharedImageCmd),
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove one or more images.
    Rm(RmArgs),
    /// Remove unused images: dangling ones (no tag), or with `-a` every image no
    /// container uses.
    Prune {
        /// Remove all unused images, not just dangling ones.
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Provide filter values (`until=24h`, `label=KEY[=VALUE]`, `label!=KEY`).
        #[arg(long)]
        filter: Vec<String>,
    },
    /// Display detailed information on one or more images.
    Inspect {
        /// Output format: `json` (the default, an array).
        #[arg(short, long)]
        format: Option<String>,
        /// IMAGE...
        #[arg(required = true)]
        images: Vec<String>,
    },
}

/// Flags of `images` / `image ls`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Show all images (berth keeps no intermediate images, so the same as without).
    #[arg(short, long)]
    all: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Don't truncate output (full `sha256:` image IDs).
    #[arg(long)]
    no_trunc: bool,
    /// `json` for one JSON object per line, `table` (default).
    #[arg(long)]
    format: Option<String>,
    /// Filter: `dangling=true|false`, `reference=PATTERN` (`*` within a path part),
    /// `label=KEY[=VALUE]`, `before=IMAGE`, `since=IMAGE`, `until=TIME`.
    #[arg(short, long)]
    filter: Vec<String>,
    /// Only images of this REPOSITORY[:TAG].
    reference: Option<String>,
}

/// Flags of `rmi` / `image rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Remove the image even if it has several tags.
    #[arg(short, long)]
    force: bool,
    /// IMAGE...
    #[arg(required = true)]
    images: Vec<String>,
}

/// `system check`: verifies the image store; returns the exit status.
pub fn check(root: &Path) -> i32 {
    let report = match open(root).and_then(|s| s.check()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: {e}");
            return ENGINE_ERROR;
        }
    };
    if report.problems.is_empty() {
        println!(
            "OK: {} blobs, {} images, {} layer references verified",
            report.blobs, report.images, report.layers
        );
        return 0;
    }
    for p in &report.problems {
        println!("{p}");
    }
    eprintln!("{} problem(s) found", report.problems.len());
    1
}

/// Runs an image command; returns the exit status.
pub fn run(root: &Path, cmd: ImageCmd) -> i32 {
    let result = match cmd {
        ImageCmd::Shared(c) | ImageCmd::Image(ImageSub::Shared(c)) => shared(root, c),
        ImageCmd::Images(a) | ImageCmd::Image(ImageSub::Ls(a)) => list(root, &a),
        ImageCmd::Rmi(a) | ImageCmd::Image(ImageSub::Rm(a)) => rmi(root, &a),
        ImageCmd::Image(ImageSub::Inspect { format, images }) => inspect(root, &images, format),
        ImageCmd::Image(ImageSub::Prune { all, force, filter }) => prune(root, all, force, &filter),
        ImageCmd::Login {
            username,
            password,
            password_stdin,
            tls,
            server,
        } => login(server, username, password, password_stdin, &tls),
        ImageCmd::Logout { server } => logout(server),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e}");
            ENGINE_ERROR
        }
    }
}

fn shared(root: &Path, cmd: SharedImageCmd) -> CmdResult {
    match cmd {
        SharedImageCmd::Pull {
            platform,
            quiet,
            tls,
            image,
        } => pull(root, &image, platform.as_deref(), quiet, &tls),
        SharedImageCmd::Push {
            quiet,
            tls,
            compression,
            image,
        } => push(root, &image, quiet, &tls, &compression),
        SharedImageCmd::Tag { source, target } => tag(root, &source, &target),
        SharedImageCmd::History {
            quiet,
            no_trunc,
            format,
            image,
        } => history(root, &image, quiet, no_trunc, format.as_deref()),
        SharedImageCmd::Save { output, images } => save(root, output.as_deref(), &images),
        SharedImageCmd::Load { input, quiet } => load(root, input.as_deref(), quiet),
        SharedImageCmd::Import {
            change,
            platform,
            source,
            reference,
        } => import(
            root,
            change,
            platform.as_deref(),
            &source,
            reference.as_deref(),
        ),
    }
}

type CmdResult = Result<i32, Box<dyn std::error::Error>>;

/// Shows transfer progress on stderr: a bar per blob on a terminal; otherwise (logs,
/// pipes, CI) one plain line when a blob starts and one when it ends, since redrawn
/// bars would fill a log with control codes.
struct Bars {
    multi: Option<indicatif::MultiProgress>,
    bars: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
    /// `Downloading` or `Pushing`.
    verb: &'static str,
}

impl Bars {
    /// The progress sink for a transfer; none when `quiet`.
    fn progress(quiet: bool, verb: &'static str) -> Progress {
        if quiet {
            return Progress::default();
        }
        let multi = std::io::stderr()
            .is_terminal()
            .then(indicatif::MultiProgress::new);
        Progress::new(std::sync::Arc::new(Bars {
            multi,
            bars: Default::default(),
            verb,
        }))
    }
}

impl Observer for Bars {
    fn event(&self, event: Event<'_>) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        match (event, &self.multi) {
            (Event::Started { digest, total }, Some(multi)) => {
                let style = indicatif::ProgressStyle::with_template(
                    "{prefix}: {msg:12} [{bar:30}] {bytes}/{total_bytes}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> ");
                // Styled before it is added, so that its first frame is already whole.
                let bar = indicatif::ProgressBar::new(total)
                    .with_style(style)
                    .with_prefix(client::store::short_id(digest))
                    .with_message(self.verb);
                bars.insert(digest.to_string(), multi.add(bar));
            }
            (Event::Started { digest, total }, None) => eprintln!(
                "{}: {} {}",
                client::store::short_id(digest),
                self.verb,
                human_size(total)
            ),
            (Event::Advanced { digest, bytes }, Some(_)) => {
                if let Some(bar) = bars.get(&digest.to_string()) {
                    bar.inc(bytes);
                }
            }
            (Event::Advanced { .. }, None) => {}
            (Event::Finished { digest, status }, Some(_)) => {
                if let Some(bar) = bars.get(&digest.to_string()) {
                    if let Some(len) = bar.length() {
                        bar.set_position(len);
                    }
                    bar.finish_with_message(status);
                }
            }
            // Off a terminal the end of each blob is the summary line on stdout, which
            // pull and push print as Docker does; repeating it here doubled every line
            // when both streams went to one log.
            (Event::Finished { .. }, None) => {}
        }
    }
}

pub(crate) fn open(root: &Path) -> Result<LocalStore, client::Error> {
    LocalStore::open(root)
}

fn registry_options(domain: &str, tls: &TlsArgs) -> Result<client::Options, client::Error> {
    Ok(client::Options {
        tls_verify: tls.verify(domain)?,
        credentials: credentials::lookup(&credentials::default_path(), domain)?,
        ..client::Options::default()
    })
}

fn pull(root: &Path, image: &str, platform: Option<&str>, quiet: bool, tls: &TlsArgs) -> CmdResult {
    let named = Reference::parse_name(image)?;
    if named.tag().is_none() && named.digest().is_none() && !quiet {
        println!("Using default tag: latest");
    }
    let reference = named.with_default_tag();
    let opts = PullOptions {
        registry: client::Options {
            progress: Bars::progress(quiet, "Downloading"),
            ..registry_options(reference.domain(), tls)?
        },
        platform: platform.map(Platform::parse).transpose()?,
    };
    let label = reference.tag().map_or_else(
        || {
            reference
                .digest()
                .map(|d| d.to_string())
                .unwrap_or_default()
        },
        str::to_string,
    );
    if !quiet {
        println!("{label}: Pulling from {}", reference.path());
    }
    let mut store = open(root)?;
    let report = client::pull(&mut store, &reference, &opts)?;
    if !quiet {
        for (digest, status) in &report.layers {
            let word = match status {
                LayerStatus::AlreadyExists => "Already exists",
                LayerStatus::PullComplete => "Pull complete",
            };
            println!("{}: {word}", client::store::short_id(digest));
        }
        println!("Digest: {}", report.resolved_digest);
        let status = if report.up_to_date {
            "Image is up to date for"
        } else {
            "Downloaded newer image for"
        };
        println!("Status: {status} {}", reference.familiar());
    }
    image_event(root, "pull", &reference.to_string(), &reference.to_string());
    println!("{reference}");
    Ok(0)
}

fn push(
    root: &Path,
    image: &str,
    quiet: bool,
    tls: &TlsArgs,
    compression: &CompressionArgs,
) -> CmdResult {
    let dest = Reference::parse(image)?;
    let compress = compression.options()?;
    let store = open(root)?;
    if !quiet {
        println!("The push refers to repository [{}]", dest.name());
    }
    let opts = client::Options {
        progress: Bars::progress(quiet, "Pushing"),
        ..registry_options(dest.domain(), tls)?
    };
    let report = client::push_with(&store, image, &dest, &opts, &compress)?;
    image_event(root, "push", &dest.to_string(), &dest.to_string());
    if !quiet {
        // Docker lists layers top first and leaves the config out.
        for (digest, status) in report.blobs.iter().skip(1).rev() {
            let word = match status {
                BlobStatus::LayerAlreadyExists => "Layer already exists".to_string(),
                BlobStatus::Mounted => format!(
                    "Mounted from {}",
                    report
                        .mounted_from
                        .as_deref()
                        .unwrap_or("another repository")
                ),
                BlobStatus::Pushed => "Pushed".to_string(),
            };
            println!("{}: {word}", client::store::short_id(digest));
        }
        println!(
            "{}: digest: {} size: {}",
            dest.tag().unwrap_or("latest"),
            report.manifest_digest,
            report.manifest_size
        );
    } else {
        println!("{dest}");
    }
    Ok(0)
}

/// One row of `images`.
struct Row {
    repository: String,
    tag: String,
    digest: String,
    id: String,
    /// `sha256:` and the whole config digest (`--no-trunc`).
    full_id: String,
    created: i64,
    size: u64,
    labels: std::collections::BTreeMap<String, String>,
}

fn rows(store: &LocalStore, filter: Option<&str>) -> Result<Vec<Row>, client::Error> {
    let filter = filter.map(Reference::parse_name).transpose()?;
    let mut out = Vec::new();
    for rec in store.meta.images()? {
        let config = store.config_json(&rec).ok();
        let labels: std::collections::BTreeMap<String, String> = config
            .as_ref()
            .and_then(|c| c["config"]["Labels"].as_object())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let created = config
            .and_then(|c| {
                c.get("created")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .and_then(|c| humantime::parse_rfc3339_weak(&c).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(rec.created_unix, |d| d.as_secs() as i64);
        let size = rec.layers.iter().map(|l| l.size).sum();
        let mut names: Vec<(String, String)> = store
            .meta
            .tags_of(&rec.manifest_digest)?
            .iter()
            .filter_map(|t| Reference::parse(t).ok())
            .filter(|r| {
                filter.as_ref().is_none_or(|f| {
                    f.name() == r.name() && f.tag().is_none_or(|t| Some(t) == r.tag())
                })
            })
            .map(|r| (r.familiar_name(), r.tag().unwrap_or("<none>").to_string()))
            .collect();
        names.dedup();
        if names.is_empty() {
            if filter.is_some() {
                continue;
            }
            names.push(("<none>".into(), "<none>".into()));
        }
        for (repository, tag) in names {
            out.push(Row {
                repository,
                tag,
                digest: rec.manifest_digest.to_string(),
                id: client::store::short_id(&rec.config_digest),
                full_id: rec.config_digest.to_string(),
                created,
                size,
                labels: labels.clone(),
            });
        }
    }
    out.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then(a.repository.cmp(&b.repository))
    });
    Ok(out)
}

/// `images --filter` terms.
#[derive(Default)]
struct Filters {
    dangling: Option<bool>,
    references: Vec<String>,
    /// `label=KEY[=VALUE]`, all must match.
    labels: Vec<String>,
    /// Created strictly before / after (seconds since the epoch): `before=IMAGE`,
    /// `until=TIME` / `since=IMAGE`.
    before: Option<i64>,
    after: Option<i64>,
}

impl Filters {
    /// `rows` are every image, for `before=`/`since=` to find theirs in.
    fn parse(terms: &[String], rows: &[Row]) -> Result<Filters, String> {
        let mut f = Filters::default();
        let created_of = |name: &str| {
            rows.iter()
                .find(|r| {
                    format!("{}:{}", r.repository, r.tag) == name
                        || (r.repository == name && r.tag == "latest")
                        || r.full_id.trim_start_matches("sha256:").starts_with(name)
                        || r.full_id == name
                })
                .map(|r| r.created)
                .ok_or_else(|| format!("No such image: {name}"))
        };
        for t in terms {
            match t.split_once('=') {
                Some(("dangling", v)) => {
                    f.dangling = Some(match v.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("invalid filter 'dangling={v}'")),
                    })
                }
                Some(("reference", v)) => f.references.push(v.to_string()),
                Some(("label", v)) => f.labels.push(v.to_string()),
                Some(("before", v)) => f.before = Some(created_of(v)?),
                Some(("since", v)) => f.after = Some(created_of(v)?),
                Some(("until", v)) => {
                    let secs = crate::prune_filter::until_secs(v)?;
                    f.before = Some(f.before.map_or(secs, |b| b.min(secs)));
                }
                _ => return Err(format!("invalid filter '{t}'")),
            }
        }
        Ok(f)
    }

    fn keep(&self, r: &Row) -> bool {
        let dangling = r.repository == "<none>";
        if self.dangling.is_some_and(|d| d != dangling) {
            return false;
        }
        if self.before.is_some_and(|b| r.created >= b) || self.after.is_some_and(|a| r.created <= a)
        {
            return false;
        }
        let labelled = |want: &String| {
            crate::format::label_matches(want, |k| r.labels.get(k).map(String::as_str))
        };
        if !self.labels.iter().all(labelled) {
            return false;
        }
        if self.references.is_empty() {
            return true;
        }
        let full = format!("{}:{}", r.repository, r.tag);
        self.references
            .iter()
            .any(|p| glob(p, &r.repository) || glob(p, &full))
    }
}

/// Go's `path.Match` subset Docker's reference filter uses: `*` and `?` within a
/// `/`-separated part.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != '/')
                .any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => t.first().is_some_and(|c| *c != '/') && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(&p, &t)
}

fn list(root: &Path, a: &ListArgs) -> CmdResult {
    let _ = a.all;
    let store = open(root)?;
    let all = rows(&store, a.reference.as_deref())?;
    let filters = if a.filter.is_empty() {
        Filters::default()
    } else {
        Filters::parse(&a.filter, &rows(&store, None)?)?
    };
    let mut rows: Vec<Row> = all.into_iter().filter(|r| filters.keep(r)).collect();
    if a.no_trunc {
        for r in &mut rows {
            r.id = r.full_id.clone();
        }
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for r in rows.iter().filter(|r| seen.insert(r.id.clone())) {
            writeln!(out, "{}", r.id)?;
        }
        return Ok(0);
    }
    match a.format.as_deref() {
        Some("json") => {
            for r in &rows {
                writeln!(out, "{}", row_json(r))?;
            }
            return Ok(0);
        }
        // A Go template (`table …` prints a header first), as `docker images --format`.
        Some(t) if t != "table" => {
            let json: Vec<serde_json::Value> = rows.iter().map(row_json).collect();
            crate::format::template_rows(&mut out, t, &json)?;
            return Ok(0);
        }
        _ => {}
    }
    let mut table = vec![header(a.digests)];
    for r in &rows {
        let mut cells = vec![r.repository.clone(), r.tag.clone()];
        if a.digests {
            cells.push(r.digest.clone());
        }
        cells.extend([r.id.clone(), since(r.created), human_size(r.size)]);
        table.push(cells);
    }
    crate::format::table(&mut out, &table)?;
    Ok(0)
}

fn header(digests: bool) -> Vec<String> {
    let mut h = vec!["REPOSITORY", "TAG"];
    if digests {
        h.push("DIGEST");
    }
    h.extend(["IMAGE ID", "CREATED", "SIZE"]);
    h.into_iter().map(str::to_string).collect()
}

fn row_json(r: &Row) -> serde_json::Value {
    serde_json::json!({
        "Containers": "N/A",
        "CreatedAt": created_at(r.created),
        "CreatedSince": since(r.created),
        "Digest": r.digest,
        "ID": r.id,
        "Repository": r.repository,
        "SharedSize": "N/A",
        "Size": human_size(r.size),
        "Tag": r.tag,
        "UniqueSize": "N/A",
        "VirtualSize": human_size(r.size),
    })
}

/// `2024-01-02 03:04:05 +0000 UTC`, Go's default time format as Docker prints it.
fn created_at(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} +0000 UTC", s.trim_end_matches('Z').replace('T', " "))
}

/// Docker's `HumanDuration` + " ago".
fn since(unix: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let secs = (now - unix).max(0);
    let (mins, hours) = (secs / 60, secs / 3600);
    let text = match () {
        _ if secs < 1 => "Less than a second".to_string(),
        _ if secs == 1 => "1 second".to_string(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if mins == 1 => "About a minute".to_string(),
        _ if mins < 60 => format!("{mins} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    };
    format!("{text} ago")
}

fn history(
    root: &Path,
    image: &str,
    quiet: bool,
    no_trunc: bool,
    format: Option<&str>,
) -> CmdResult {
    let store = open(root)?;
    let rec = store.find(image)?;
    let steps = store.history(&rec)?;
    let id = |d: &Option<berth_image::Digest>| match d {
        Some(d) if no_trunc => d.to_string(),
        Some(d) => client::store::short_id(d),
        None => "<missing>".to_string(),
    };
    let created = |c: &Option<String>| {
        c.as_deref()
            .and_then(|c| humantime::parse_rfc3339_weak(c).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or_else(|| "N/A".to_string(), |d| since(d.as_secs() as i64))
    };
    let mut out = std::io::stdout().lock();
    if quiet {
        for s in &steps {
            writeln!(out, "{}", id(&s.id))?;
        }
        return Ok(0);
    }
    if format == Some("json") {
        for s in &steps {
            let v = serde_json::json!({
                "ID": id(&s.id), "CreatedSince": created(&s.created), "CreatedBy": s.created_by,
                "Size": human_size(s.size), "Comment": s.comment,
            });
            writeln!(out, "{v}")?;
        }
        return Ok(0);
    }
    let mut table = vec![["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
        .map(str::to_string)
        .to_vec()];
    for s in &steps {
        let by = if no_trunc || s.created_by.chars().count() <= 45 {
            s.created_by.clone()
        } else {
            s.created_by.chars().take(44).collect::<String>() + "…"
        };
        table.push(vec![
            id(&s.id),
            created(&s.created),
            by,
            human_size(s.size),
            s.comment.clone(),
        ]);
    }
    crate::format::table(&mut out, &table)?;
    Ok(0)
}

fn tag(root: &Path, source: &str, target: &str) -> CmdResult {
    let target = Reference::parse(target)?;
    let mut store = open(root)?;
    store.tag(source, &target)?;
    let id = store
        .find(source)
        .map(|r| r.config_digest.to_string())
        .unwrap_or_default();
    image_event(root, "tag", &id, &target.to_string());
    Ok(0)
}

/// Records an image event (`berth events`): `id` is the image, `name` its reference.
fn image_event(root: &Path, action: &str, id: &str, name: &str) {
    let attrs = [("name".to_string(), name.to_string())].into();
    berth_engine::events::record(root, "image", action, id, attrs);
}

/// Events for what a removal did: `untag` per reference, `delete` per image.
pub(crate) fn removal_events(root: &Path, removed: &[Removal]) {
    for r in removed {
        match r {
            Removal::Untagged(t) => image_event(root, "untag", &t.to_string(), &t.to_string()),
            Removal::Deleted(d) => image_event(root, "delete", &d.to_string(), &d.to_string()),
        }
    }
}

fn rmi(root: &Path, a: &RmArgs) -> CmdResult {
    let mut store = open(root)?;
    let in_use = images_in_use(root)?;
    let mut code = 0;
    for name in &a.images {
        if !a.force {
            if let Some(msg) = used_by_container(&store, name, &in_use) {
                eprintln!("Error response from daemon: {msg}");
                code = 1;
                continue;
            }
        }
        match store.remove(name, a.force) {
            Ok(events) => {
                removal_events(root, &events);
                for e in events {
                    match e {
                        Removal::Untagged(r) => println!("Untagged: {r}"),
                        Removal::Deleted(d) => println!("Deleted: {d}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// Config digests of images some container uses, each with one such container's id.
fn images_in_use(
    root: &Path,
) -> Result<std::collections::HashMap<Digest, String>, Box<dyn std::error::Error>> {
    let engine = berth_engine::Engine::open(root)?;
    let mut out = std::collections::HashMap::new();
    for (image, container) in engine.in_use_images()? {
        if let Ok(d) = image.parse::<Digest>() {
            out.entry(d).or_insert(container);
        }
    }
    Ok(out)
}

/// Docker's refusal to delete an image a container still uses: removing one of several
/// tags is fine; removing the last reference (or by id) is not.
fn used_by_container(
    store: &LocalStore,
    name: &str,
    in_use: &std::collections::HashMap<Digest, String>,
) -> Option<String> {
    let rec = store.find(name).ok()?;
    let container = in_use.get(&rec.config_digest)?;
    let tags = store.meta.tags_of(&rec.manifest_digest).unwrap_or_default();
    let by_id = rec
        .config_digest
        .hex()
        .starts_with(name.trim_start_matches("sha256:"));
    if tags.len() > 1 && !by_id {
        return None;
    }
    Some(format!(
        "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
        &container[..12.min(container.len())],
        &rec.config_digest.hex()[..12]
    ))
}

fn import(
    root: &Path,
    changes: Vec<String>,
    platform: Option<&str>,
    source: &str,
    reference: Option<&str>,
) -> CmdResult {
    let opts = client::import::ImportOptions {
        changes,
        reference: reference.map(Reference::parse_name).transpose()?,
        source: source.to_string(),
        platform: platform.map(Platform::parse).transpose()?,
    };
    let mut store = open(root)?;
    let id = if source == "-" {
        client::import::import(&mut store, std::io::stdin().lock(), &opts)?
    } else {
        let f = std::fs::File::open(source).map_err(|e| format!("open {source}: {e}"))?;
        client::import::import(&mut store, f, &opts)?
    };
    let name = reference.unwrap_or_default();
    image_event(root, "import", &id.to_string(), name);
    println!("{id}");
    Ok(0)
}

fn prune(root: &Path, all: bool, force: bool, filter: &[String]) -> CmdResult {
    let filter = crate::prune_filter::PruneFilter::parse(filter, true)?;
    if !force {
        let what = if all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let mut store = open(root)?;
    let in_use: std::collections::HashSet<Digest> = images_in_use(root)?.into_keys().collect();
    let eligible = prunable_images(&store, &filter)?;
    let report = store.prune_where(all, &in_use, |r| eligible.contains(&r.manifest_digest))?;
    removal_events(root, &report.removed);
    let mut out = std::io::stdout().lock();
    if !report.removed.is_empty() {
        writeln!(out, "Deleted Images:")?;
        for r in &report.removed {
            match r {
                Removal::Untagged(t) => writeln!(out, "untagged: {t}")?,
                Removal::Deleted(d) => writeln!(out, "deleted: {d}")?,
            }
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        human_size(report.reclaimed)
    )?;
    Ok(0)
}

/// The images `--filter` lets prune take: created before `until`, with the labels
/// (of their config) asked for.
pub(crate) fn prunable_images(
    store: &LocalStore,
    filter: &crate::prune_filter::PruneFilter,
) -> Result<std::collections::HashSet<Digest>, client::Error> {
    let mut out = std::collections::HashSet::new();
    for rec in store.meta.images()? {
        let labels: std::collections::BTreeMap<String, String> = if filter.needs_labels() {
            let config = store.config_json(&rec)?;
            serde_json::from_value(config["config"]["Labels"].clone()).unwrap_or_default()
        } else {
            Default::default()
        };
        if filter.allows(crate::prune_filter::unix(rec.created_unix), &labels) {
            out.insert(rec.manifest_digest.clone());
        }
    }
    Ok(out)
}

/// One image's inspect object (`berth inspect` of any kind of object).
pub(crate) fn inspect_one(
    store: &LocalStore,
    name: &str,
) -> Result<serde_json::Value, client::Error> {
    store.find(name).and_then(|rec| store.inspect(&rec))
}

fn inspect(root: &Path, images: &[String], format: Option<String>) -> CmdResult {
    let store = open(root)?;
    let mut out = Vec::new();
    let mut code = 0;
    for name in images {
        match inspect_one(&store, name) {
            Ok(v) => out.push(v),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    match format.as_deref().filter(|f| *f != "json") {
        // A template is applied to each image, one line each, as `docker inspect -f`.
        Some(t) => {
            for v in &out {
                println!("{}", crate::format::render(t, v)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(code)
}

fn save(root: &Path, output: Option<&Path>, images: &[String]) -> CmdResult {
    let store = open(root)?;
    match output {
        Some(path) => {
            // Written aside and renamed: a failed save leaves no truncated archive.
            let tmp = path.with_extension("berth-partial");
            let file = std::fs::File::create(&tmp)?;
            let result = client::archive::save(&store, images, std::io::BufWriter::new(file));
            if let Err(e) = result {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            std::fs::rename(&tmp, path)?;
        }
        None if std::io::stdout().is_terminal() => {
            return Err(
                "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
            )
        }
        None => client::archive::save(&store, images, std::io::stdout().lock())?,
    }
    Ok(0)
}

fn load(root: &Path, input: Option<&Path>, quiet: bool) -> CmdResult {
    let mut store = open(root)?;
    let loaded = match input {
        Some(p) => {
            client::archive::load(&mut store, std::io::BufReader::new(std::fs::File::open(p)?))?
        }
        None => client::archive::load(&mut store, std::io::stdin().lock())?,
    };
    // `-q` only quiets progress, which berth does not print: the names are still
    // printed, as Docker's CLI prints them.
    let _ = quiet;
    for l in loaded {
        if l.tags.is_empty() {
            println!("Loaded image ID: {}", l.id);
            image_event(root, "load", &l.id.to_string(), &l.id.to_string());
        }
        for t in l.tags {
            image_event(root, "load", &l.id.to_string(), &t.to_string());
            println!("Loaded image: {}", t.familiar());
        }
    }
    Ok(0)
}

/// `host[:port]` from what users type after `login`: a bare host or a URL.
fn server_domain(server: Option<String>) -> String {
    let s = server.unwrap_or_else(|| "docker.io".to_string());
    let s = s
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

fn login(
    server: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_stdin: bool,
    tls: &TlsArgs,
) -> CmdResult {
    let domain = server_domain(server);
    let username = match username {
        Some(u) => u,
        None => prompt("Username: ")?,
    };
    let password = match (password, password_stdin) {
        (Some(_), true) => {
            return Err("--password and --password-stdin are mutually exclusive".into())
        }
        (Some(p), false) => p,
        (None, _) => prompt(if password_stdin { "" } else { "Password: " })?,
    };
    let creds = Credentials { username, password };
    let opts = client::Options {
        tls_verify: tls.verify(&domain)?,
        credentials: Some(creds.clone()),
        ..client::Options::default()
    };
    client::login(&domain, &opts)?;
    credentials::store(&credentials::default_path(), &domain, &creds)?;
    println!("Login Succeeded");
    Ok(0)
}

fn prompt(label: &str) -> Result<String, Box<dyn std::error::Error>> {
    if !label.is_empty() {
        eprint!("{label}");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn logout(server: Option<String>) -> CmdResult {
    let domain = server_domain(server);
    if credentials::remove(&credentials::default_path(), &domain)? {
        println!("Removing login credentials for {domain}");
    } else {
        println!("Not logged in to {domain}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(1_000_000), "1MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(12_345), "12.3kB");
    }

    #[test]
    fn reference_globs() {
        assert!(glob("busy*", "busybox"));
        assert!(glob("*/busybox", "127.0.0.1:5000/busybox"));
        assert!(!glob("*", "a/b"), "* stays within one path part");
        assert!(glob("a/?", "a/b"));
        let f = Filters::parse(&["dangling=true".into()], &[]).unwrap();
        assert!(f.dangling == Some(true) && f.references.is_empty());
        assert!(Filters::parse(&["color=x".into()], &[]).is_err());
    }

    #[test]
    fn time_and_label_filters() {
        let row = |repo: &str, created: i64, label: Option<&str>| Row {
            repository: repo.into(),
            tag: "latest".into(),
            digest: String::new(),
            id: String::new(),
            full_id: format!("sha256:{repo}0"),
            created,
            size: 0,
            labels: label
                .map(|l| (l.to_string(), "1".to_string()))
                .into_iter()
                .collect(),
        };
        let rows = [
            row("old", 10, Some("tier")),
            row("mid", 20, None),
            row("new", 30, Some("tier")),
        ];
        let kept = |terms: &[&str]| -> Vec<String> {
            let terms: Vec<String> = terms.iter().map(|t| t.to_string()).collect();
            let f = Filters::parse(&terms, &rows).unwrap();
            rows.iter()
                .filter(|r| f.keep(r))
                .map(|r| r.repository.clone())
                .collect()
        };
        assert_eq!(kept(&["before=mid"]), ["old"]);
        assert_eq!(kept(&["since=mid"]), ["new"]);
        assert_eq!(kept(&["label=tier"]), ["old", "new"]);
        assert_eq!(kept(&["label=tier=1", "since=old"]), ["new"]);
        assert!(Filters::parse(&["before=nothing".into()], &rows).is_err());
    }

    #[test]
    fn server_names() {
        assert_eq!(server_domain(None), "docker.io");
        assert_eq!(
            server_domain(Some("https://index.docker.io/v1/".into())),
            "docker.io"
        );
        assert_eq!(
            server_domain(Some("127.0.0.1:5000".into())),
            "127.0.0.1:5000"
        );
        assert_eq!(created_at(0), "1970-01-01 00:00:00 +0000 UTC");
    }
}
