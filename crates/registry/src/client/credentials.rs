//! Credentials in Docker's `config.json` (`{"auths": {"<registry>": {"auth": base64(user:pass)}}}`),
//! so `berth login` and `docker login` share them. The file's other keys are kept as they
//! are when berth rewrites it. Docker Hub is keyed `https://index.docker.io/v1/`, as
//! Docker keys it.
//!
//! When the file names a credential helper (`credHelpers` for this registry, else
//! `credsStore`), credentials live in the helper instead: `docker-credential-<name>` is
//! run with `get`, `store` or `erase` and speaks JSON (`ServerURL`, `Username`,
//! `Secret`) on stdin/stdout, as Docker's helper protocol defines.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::auth::Credentials;
use super::error::{io_ctx, Error, Result};

/// The key Docker uses for Docker Hub.
const HUB_KEY: &str = "https://index.docker.io/v1/";

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn default_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return PathBuf::from(dir).join("config.json");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".docker/config.json")
}

fn key_for(domain: &str) -> String {
    match domain {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => HUB_KEY.to_string(),
        d => d.to_string(),
    }
}

/// Keys in the wild also appear as URLs (`https://host/v1/`); compare by host.
fn host_of(key: &str) -> &str {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    k.split('/').next().unwrap_or(k)
}

fn read(path: &Path) -> Result<Map<String, Value>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(io_ctx(format!("read {}", path.display()))(e)),
    };
    match serde_json::from_slice(&text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Error::Io {
            context: format!("parse {}", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a JSON object"),
        }),
    }
}

/// The helper configured for `domain`, if any.
fn helper_for(config: &Map<String, Value>, domain: &str) -> Option<String> {
    let key = key_for(domain);
    config
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|h| {
            h.get(&key).or_else(|| {
                h.iter()
                    .find(|(k, _)| host_of(k) == host_of(&key))
                    .map(|(_, v)| v)
            })
        })
        .or_else(|| config.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin.
fn run_helper(helper: &str, action: &str, input: &[u8]) -> Result<std::process::Output> {
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_ctx(format!("run credential helper {program}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(input)
            .map_err(io_ctx(format!("write to {program}")))?;
    }
    child
        .wait_with_output()
        .map_err(io_ctx(format!("wait for {program}")))
}

fn helper_error(helper: &str, action: &str, out: &std::process::Output) -> Error {
    Error::Io {
        context: format!("credential helper docker-credential-{helper} {action}"),
        source: std::io::Error::other(
            String::from_utf8_lossy(&out.stdout).trim().to_string()
                + String::from_utf8_lossy(&out.stderr).trim(),
        ),
    }
}

fn helper_get(helper: &str, domain: &str) -> Result<Option<Credentials>> {
    let out = run_helper(helper, "get", key_for(domain).as_bytes())?;
    if !out.status.success() {
        // The protocol's way of saying "nothing stored" is a failure with this text.
        if String::from_utf8_lossy(&out.stdout).contains("credentials not found") {
            return Ok(None);
        }
        return Err(helper_error(helper, "get", &out));
    }
    let v: Value =
        serde_json::from_slice(&out.stdout).map_err(|_| helper_error(helper, "get", &out))?;
    let (user, secret) = (v["Username"].as_str(), v["Secret"].as_str());
    Ok(user.zip(secret).map(|(u, s)| Credentials {
        username: u.to_string(),
        password: s.to_string(),
    }))
}

/// Credentials stored for `domain`, if any.
pub fn lookup(path: &Path, domain: &str) -> Result<Option<Credentials>> {
    let config = read(path)?;
    if let Some(helper) = helper_for(&config, domain) {
        return helper_get(&helper, domain);
    }
    let Some(Value::Object(auths)) = config.get("auths") else {
        return Ok(None);
    };
    let want = key_for(domain);
    let entry = auths.get(&want).or_else(|| {
        auths
            .iter()
            .find(|(k, _)| host_of(k) == host_of(&want))
            .map(|(_, v)| v)
    });
    let Some(auth) = entry.and_then(|e| e.get("auth")).and_then(Value::as_str) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    Ok(decoded.and_then(|s| {
        s.split_once(':').map(|(u, p)| Credentials {
            username: u.to_string(),
            password: p.to_string(),
        })
    }))
}

/// Stores credentials for `domain`, creating the file (mode 0600) if needed.
pub fn store(path: &Path, domain: &str, creds: &Credentials) -> Result<()> {
    let mut config = read(path)?;
    if let Some(helper) = helper_for(&config, domain) {
        let input = serde_json::json!({
            "ServerURL": key_for(domain),
            "Username": creds.username,
            "Secret": creds.password,
        });
        let out = run_helper(&helper, "store", input.to_string().as_bytes())?;
        if !out.status.success() {
            return Err(helper_error(&helper, "store", &out));
        }
        // Docker records that the registry has credentials, without the secret.
        let auths = config
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = auths.as_object_mut() {
            m.insert(key_for(domain), serde_json::json!({}));
        }
        return write(path, &config);
    }
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    let raw = format!("{}:{}", creds.username, creds.password);
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    if let Some(m) = auths.as_object_mut() {
        m.insert(key_for(domain), serde_json::json!({ "auth": encoded }));
    }
    write(path, &config)
}

/// Removes the credentials for `domain`; returns whether there were any.
pub fn remove(path: &Path, domain: &str) -> Result<bool> {
    let mut config = read(path)?;
    let want = key_for(domain);
    let mut erased = false;
    if let Some(helper) = helper_for(&config, domain) {
        let out = run_helper(&helper, "erase", want.as_bytes())?;
        erased = out.status.success();
    }
    let removed = match config.get_mut("auths").and_then(Value::as_object_mut) {
        Some(auths) => {
            let keys: Vec<String> = auths
                .keys()
                .filter(|k| **k == want || host_of(k) == host_of(&want))
                .cloned()
                .collect();
            keys.iter().filter(|k| auths.remove(*k).is_some()).count() > 0
        }
        None => false,
    };
    if removed {
        write(path, &config)?;
    }
    Ok(removed || erased)
}

/// Written aside and renamed, so a crash never leaves a truncated config; 0600 because
/// it holds passwords.
fn write(path: &Path, config: &Map<String, Value>) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_ctx(format!("create {}", dir.display())))?;
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let text = serde_json::to_vec_pretty(config).map_err(|e| Error::Internal(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_ctx(format!("write {}", tmp.display())))?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .map_err(io_ctx(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io_ctx(format!("replace {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}},"psFormat":"x"}"#,
        )
        .unwrap();
        let hub = lookup(&path, "docker.io").unwrap().unwrap();
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("u", "p"));
        let c = Credentials {
            username: "alice".into(),
            password: "s3:cret".into(),
        };
        store(&path, "127.0.0.1:5000", &c).unwrap();
        assert_eq!(lookup(&path, "127.0.0.1:5000").unwrap(), Some(c));
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "x");
        assert_eq!(v["auths"]["127.0.0.1:5000"]["auth"], "YWxpY2U6czM6Y3JldA==");
        assert!(remove(&path, "127.0.0.1:5000").unwrap());
        assert!(!remove(&path, "127.0.0.1:5000").unwrap());
        assert_eq!(lookup(&path, "127.0.0.1:5000").unwrap(), None);
        assert!(lookup(&path, "docker.io").unwrap().is_some());
        assert_eq!(lookup(&dir.path().join("none.json"), "x").unwrap(), None);
    }

    #[test]
    fn credential_helper_protocol() {
        // A helper that keeps one secret in a file next to it, speaking the protocol.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let script = format!(
            "#!/bin/sh\nread -r input\ncase $1 in\n\
             store) echo \"$input\" > {d}/stored ;;\n\
             get) if [ -f {d}/stored ]; then echo '{{\"ServerURL\":\"'$input'\",\"Username\":\"bob\",\"Secret\":\"pw\"}}'; \
             else echo 'credentials not found in native keychain'; exit 1; fi ;;\n\
             erase) rm {d}/stored ;;\nesac\n"
        );
        let bin = dir.path().join("docker-credential-berthtest");
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"reg.example:5000":"berthtest"}}"#).unwrap();
        // Only this test changes PATH, and only by adding a directory in front.
        let old = std::env::var("PATH").unwrap_or_default();
        std::env::set_var("PATH", format!("{d}:{old}"));
        assert_eq!(lookup(&path, "reg.example:5000").unwrap(), None);
        let c = Credentials {
            username: "bob".into(),
            password: "pw".into(),
        };
        store(&path, "reg.example:5000", &c).unwrap();
        let stored = std::fs::read_to_string(dir.path().join("stored")).unwrap();
        assert!(stored.contains(r#""Secret":"pw""#), "{stored}");
        assert!(
            !std::fs::read_to_string(&path).unwrap().contains("pw"),
            "no secret in config.json"
        );
        assert_eq!(lookup(&path, "reg.example:5000").unwrap(), Some(c));
        assert!(remove(&path, "reg.example:5000").unwrap());
        assert_eq!(lookup(&path, "reg.example:5000").unwrap(), None);
        // Registries without a helper still use auths.
        assert_eq!(lookup(&path, "other:1").unwrap(), None);
    }
}
