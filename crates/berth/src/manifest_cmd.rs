//! `berth manifest`: multi-platform lists of images already in a registry, as `docker
//! manifest`. Lists being made are kept as JSON under `<root>/manifests/` until pushed;
//! the work is berth-registry's (`client::index`).

use std::path::{Path, PathBuf};

use berth_image::Reference;
use berth_registry::client::index::{self, ManifestList};
use berth_registry::client::manifest::PlatformSpec;
use berth_registry::client::{self, credentials};
use clap::Subcommand;

use crate::images::TlsArgs;

type CmdResult = Result<i32, Box<dyn std::error::Error>>;

/// `manifest` subcommands.
#[derive(Subcommand, Debug)]
// Each subcommand's arguments are built only when it is the one invoked: building
// the whole tree cost every command ~1 ms of start-up (page faults, allocations).
#[command(defer = true)]
pub enum ManifestCmd {
    /// Display an image manifest or manifest list (a local list first, else the registry's).
    Inspect {
        #[command(flatten)]
        tls: TlsArgs,
        /// [MANIFEST_LIST] MANIFEST
        #[arg(required = true, num_args = 1..=2)]
        refs: Vec<String>,
    },
    /// Create a local manifest list of images already pushed, for annotating and pushing.
    Create {
        /// Amend an existing list.
        #[arg(short, long)]
        amend: bool,
        #[command(flatten)]
        tls: TlsArgs,
        /// MANIFEST_LIST
        list: String,
        /// MANIFEST...
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Set the platform of an image in a local list.
    Annotate {
        #[arg(long)]
        os: Option<String>,
        #[arg(long)]
        arch: Option<String>,
        #[arg(long)]
        variant: Option<String>,
        /// MANIFEST_LIST
        list: String,
        /// MANIFEST
        image: String,
    },
    /// Push a local manifest list to its registry.
    Push {
        /// Remove the local list after the push.
        #[arg(short, long)]
        purge: bool,
        #[command(flatten)]
        tls: TlsArgs,
        /// MANIFEST_LIST
        list: String,
    },
    /// Delete local manifest lists.
    Rm {
        /// MANIFEST_LIST...
        #[arg(required = true)]
        lists: Vec<String>,
    },
}

/// Runs a `manifest` command; returns the exit status.
pub fn main(root: &Path, cmd: ManifestCmd) -> i32 {
    match run(root, cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}

fn run(root: &Path, cmd: ManifestCmd) -> CmdResult {
    match cmd {
        ManifestCmd::Inspect { tls, refs } => inspect(root, &refs, &tls),
        ManifestCmd::Create {
            amend,
            tls,
            list,
            images,
        } => create(root, &list, &images, amend, &tls),
        ManifestCmd::Annotate {
            os,
            arch,
            variant,
            list,
            image,
        } => annotate(root, &list, &image, os, arch, variant),
        ManifestCmd::Push { purge, tls, list } => push(root, &list, purge, &tls),
        ManifestCmd::Rm { lists } => {
            for l in &lists {
                let path = list_path(root, &parse(l)?);
                std::fs::remove_file(&path).map_err(|_| format!("No such manifest: {l}"))?;
            }
            Ok(0)
        }
    }
}

fn parse(r: &str) -> Result<Reference, Box<dyn std::error::Error>> {
    Ok(Reference::parse(r).map_err(|e| format!("invalid reference {r:?}: {e}"))?)
}

/// Where a local list is kept: its full name with `/` and `:` made `_` (Docker's naming).
fn list_path(root: &Path, list: &Reference) -> PathBuf {
    let name: String = list
        .to_string()
        .chars()
        .map(|c| if c == '/' || c == ':' { '_' } else { c })
        .collect();
    root.join("manifests").join(format!("{name}.json"))
}

fn load(root: &Path, list: &Reference) -> Result<Option<ManifestList>, Box<dyn std::error::Error>> {
    match std::fs::read(list_path(root, list)) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn save(root: &Path, list: &Reference, l: &ManifestList) -> Result<(), Box<dyn std::error::Error>> {
    let path = list_path(root, list);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(l)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

fn options(domain: &str, tls: &TlsArgs) -> Result<client::Options, client::Error> {
    Ok(client::Options {
        tls_verify: tls.verify(domain)?,
        credentials: credentials::lookup(&credentials::default_path(), domain)?,
        ..client::Options::default()
    })
}

fn print_json(bytes: &[u8]) -> CmdResult {
    let v: serde_json::Value = serde_json::from_slice(bytes)?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(0)
}

fn inspect(root: &Path, refs: &[String], tls: &TlsArgs) -> CmdResult {
    let (list, image) = match refs {
        [list, image] => (Some(parse(list)?), parse(image)?),
        [one] => (None, parse(one)?),
        _ => return Err("manifest inspect takes [MANIFEST_LIST] MANIFEST".into()),
    };
    // `inspect LIST IMAGE`: that entry of a local list; `inspect LIST`: the local list.
    if let Some(list) = list {
        let l = load(root, &list)?.ok_or_else(|| format!("No such manifest: {list}"))?;
        let e = l
            .entries
            .iter()
            .find(|e| e.image == image.to_string())
            .ok_or_else(|| format!("No such manifest: {image} in {list}"))?;
        return print_json(&serde_json::to_vec(&e.descriptor)?);
    }
    if let Some(l) = load(root, &image)? {
        return print_json(&l.render().1);
    }
    let fetched = index::inspect(&image, &options(image.domain(), tls)?)?;
    print_json(&fetched.bytes)
}

fn create(root: &Path, list: &str, images: &[String], amend: bool, tls: &TlsArgs) -> CmdResult {
    let list = parse(list)?;
    let mut l = match load(root, &list)? {
        Some(_) if !amend => {
            return Err(format!(
                "refusing to amend an existing manifest list with no --amend flag: {list}"
            )
            .into())
        }
        Some(l) => l,
        None => ManifestList::default(),
    };
    for i in images {
        let r = parse(i)?;
        let entry = index::describe(&r, &options(r.domain(), tls)?)?;
        l.entries.retain(|e| e.image != entry.image);
        l.entries.push(entry);
    }
    save(root, &list, &l)?;
    println!("Created manifest list {list}");
    Ok(0)
}

fn annotate(
    root: &Path,
    list: &str,
    image: &str,
    os: Option<String>,
    arch: Option<String>,
    variant: Option<String>,
) -> CmdResult {
    let (list, image) = (parse(list)?, parse(image)?);
    let mut l = load(root, &list)?.ok_or_else(|| format!("No such manifest: {list}"))?;
    let e = l
        .entries
        .iter_mut()
        .find(|e| e.image == image.to_string())
        .ok_or_else(|| format!("manifest for image {image} does not exist in {list}"))?;
    let p = e
        .descriptor
        .platform
        .get_or_insert_with(PlatformSpec::default);
    if let Some(os) = os {
        p.os = os;
    }
    if let Some(arch) = arch {
        p.architecture = arch;
    }
    if variant.is_some() {
        p.variant = variant;
    }
    save(root, &list, &l)?;
    Ok(0)
}

fn push(root: &Path, list: &str, purge: bool, tls: &TlsArgs) -> CmdResult {
    let list = parse(list)?;
    let l = load(root, &list)?.ok_or_else(|| format!("No such manifest: {list}"))?;
    let digest = index::push_list(&l, &list, &options(list.domain(), tls)?)?;
    if purge {
        std::fs::remove_file(list_path(root, &list))?;
    }
    println!("{digest}");
    Ok(0)
}
