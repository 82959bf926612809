//! `berth compose`: the model as `config` prints it (interpolation, `.env`, anchors and
//! merge keys, `x-`, profiles, extends, include, errors with file and key path, the
//! compose-go loader inputs), and real projects of busybox containers in a private
//! `--root`: health-gated start order and name resolution on the project network, `up`
//! idempotence, recreating only a changed service, and `down -v` leaving nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use berth_tests::{bin_dir, busybox_oci_archive_config, output, stderr, stdout};
use serde_json::{json, Value};

const IMAGE: &str = "cbox:latest";

fn archive() -> &'static Path {
    static ARCHIVE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = ARCHIVE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cbox.tar");
        busybox_oci_archive_config(
            &p,
            IMAGE,
            json!({"Env": ["PATH=/bin"], "Cmd": ["sleep", "30"]}),
        );
        (dir, p)
    });
    p
}

/// A unique project name, so parallel tests never share networks.
fn project(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "c{}{}{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A project directory with its compose file, and a berth root (image loaded when
/// `with_image`). `down -v` on drop.
struct Proj {
    root: tempfile::TempDir,
    dir: tempfile::TempDir,
    name: String,
    up: bool,
}

impl Proj {
    fn new(tag: &str, yaml: &str, with_image: bool) -> Proj {
        let p = Proj {
            root: tempfile::tempdir().unwrap(),
            dir: tempfile::tempdir().unwrap(),
            name: project(tag),
            up: with_image,
        };
        p.write("compose.yaml", yaml);
        if with_image {
            let o = p.berth(&["load", "-q", "-i", archive().to_str().unwrap()]);
            assert!(o.status.success(), "load: {}", stderr(&o));
        }
        p
    }

    fn write(&self, file: &str, text: &str) {
        let path = self.dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn berth(&self, args: &[&str]) -> Output {
        output(self.berth_command().args(args))
    }

    /// `berth --root ROOT` in the project directory, without the caller's compose
    /// variables.
    fn berth_command(&self) -> Command {
        let mut c = Command::new(bin_dir().join("berth"));
        c.arg("--root")
            .arg(self.root.path())
            .current_dir(self.dir.path());
        c.env_remove("COMPOSE_PROJECT_NAME")
            .env_remove("COMPOSE_FILE")
            .env_remove("COMPOSE_PROFILES");
        c
    }

    /// `berth compose -p NAME ARGS` to spawn.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = self.berth_command();
        c.args(["compose", "-p", &self.name]).args(args);
        c
    }

    fn compose(&self, args: &[&str]) -> Output {
        let mut full = vec!["compose", "-p", &self.name];
        full.extend_from_slice(args);
        self.berth(&full)
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.compose(args);
        assert!(
            o.status.success(),
            "compose {args:?} failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    fn config(&self) -> Value {
        serde_json::from_str(&self.ok(&["config", "--format", "json"])).unwrap()
    }

    fn inspect(&self, name: &str) -> Value {
        let o = self.berth(&["inspect", name]);
        assert!(o.status.success(), "inspect {name}: {}", stderr(&o));
        serde_json::from_str::<Value>(&stdout(&o)).unwrap()[0].clone()
    }
}

impl Drop for Proj {
    fn drop(&mut self) {
        if self.up {
            let _ = self.compose(&["down", "-v", "-t", "0"]);
        }
    }
}

#[test]
fn config_interpolates_with_env_file_anchors_and_extensions() {
    let p = Proj::new(
        "cfg",
        r#"
x-common: &common
  image: ${IMG:-busybox}
  restart: always
  environment:
    - SHARED=1
services:
  web:
    <<: *common
    ports: ["${PORT}:80", "127.0.0.1::81/udp"]
    environment:
      GREETING: "${GREETING:?greeting needed}"
      PLAIN: $$NOT_A_VAR
      ALT: ${UNSET-dflt}/${EMPTY:-e}/${EMPTY-kept}/${PORT:+set}
    volumes: ["data:/data:ro", "./src:/src", "/tmp"]
    depends_on: [db]
    x-ignored: true
  db:
    image: db
    command: sh -c "echo 'a b'"
    healthcheck:
      test: true
  debug:
    image: dbg
    profiles: [debug]
volumes:
  data:
"#,
        false,
    );
    p.write(
        ".env",
        "PORT=8080\nGREETING=\"hi there\" \nEMPTY=\n# comment\nIMG=from-dotenv\n",
    );
    let c = p.config();
    let web = &c["services"]["web"];
    assert_eq!(c["name"], p.name.as_str());
    assert_eq!(web["image"], "from-dotenv");
    // `<<` is a shallow merge: the service's own environment replaces the anchor's.
    assert_eq!(web["restart"], "always", "{web}");
    assert!(web["environment"].get("SHARED").is_none(), "{web}");
    assert_eq!(web["environment"]["GREETING"], "hi there");
    // Printed escaped, as Compose does, so the output loads back the same.
    assert_eq!(web["environment"]["PLAIN"], "$$NOT_A_VAR");
    assert_eq!(web["environment"]["ALT"], "dflt/e//set");
    assert_eq!(
        web["ports"][0],
        json!({"target": 80, "published": "8080", "protocol": "tcp", "mode": "ingress"})
    );
    assert_eq!(web["ports"][1]["host_ip"], "127.0.0.1");
    assert_eq!(web["ports"][1]["protocol"], "udp");
    assert_eq!(
        web["volumes"][0],
        json!({"type": "volume", "source": "data", "target": "/data", "read_only": true})
    );
    let src = p.dir.path().join("src");
    assert_eq!(web["volumes"][1]["source"], src.to_str().unwrap());
    assert_eq!(
        web["volumes"][2],
        json!({"type": "volume", "target": "/tmp"})
    );
    assert_eq!(web["depends_on"]["db"]["condition"], "service_started");
    assert!(web.get("x-ignored").is_none() && c.get("x-common").is_none());
    assert_eq!(
        c["services"]["db"]["command"],
        json!(["sh", "-c", "echo 'a b'"])
    );
    assert_eq!(
        c["services"]["db"]["healthcheck"]["test"],
        json!(["CMD-SHELL", "true"])
    );
    // Profiles: off unless asked for.
    assert_eq!(p.ok(&["config", "--services"]), "web\ndb\n");
    assert_eq!(
        p.ok(&["--profile", "debug", "config", "--services"]),
        "web\ndb\ndebug\n"
    );
    assert_eq!(p.ok(&["config", "--volumes"]), "data\n");
    // The process environment wins over .env; --env-file replaces it.
    let o = p.berth(&["compose", "-p", &p.name, "config", "--format", "json"]);
    assert!(o.status.success());
    p.write("other.env", "GREETING=other\nPORT=1\n");
    let v: Value =
        serde_json::from_str(&p.ok(&["--env-file", "other.env", "config", "--format", "json"]))
            .unwrap();
    assert_eq!(v["services"]["web"]["environment"]["GREETING"], "other");
    assert_eq!(v["services"]["web"]["image"], "busybox");
    // The YAML output round-trips: loading it again gives the same model.
    let yaml = p.ok(&["config"]);
    p.write("again.yaml", &yaml);
    let again: Value =
        serde_json::from_str(&p.ok(&["-f", "again.yaml", "config", "--format", "json"])).unwrap();
    assert_eq!(again, c);
}

fn fails_with(p: &Proj, args: &[&str], needles: &[&str]) {
    let o = p.compose(args);
    assert!(!o.status.success(), "{args:?} should fail: {}", stdout(&o));
    let err = stderr(&o);
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
}

#[test]
fn config_errors_name_file_key_and_problem() {
    let p = Proj::new(
        "err",
        "services:\n  web:\n    image: x\n    enviroment: [A=1]\n",
        false,
    );
    fails_with(
        &p,
        &["config"],
        &[
            "compose.yaml",
            "services.web",
            "enviroment",
            "unknown field",
        ],
    );
    p.write(
        "compose.yaml",
        "services:\n  web:\n    image: x\n    read_only: sometimes\n",
    );
    fails_with(
        &p,
        &["config"],
        &["compose.yaml", "services.web.read_only", "invalid"],
    );
    p.write(
        "compose.yaml",
        "services:\n  web:\n    image: ${NEED:?set NEED please}\n",
    );
    fails_with(
        &p,
        &["config"],
        &[
            "compose.yaml",
            "services.web.image",
            "NEED",
            "set NEED please",
        ],
    );
    p.write(
        "compose.yaml",
        "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n",
    );
    fails_with(
        &p,
        &["config"],
        &["compose.yaml", "depends_on", "cycle", "a -> b -> a"],
    );
    p.write(
        "compose.yaml",
        "services:\n  a:\n    image: x\n    depends_on: [nope]\n",
    );
    fails_with(
        &p,
        &["config"],
        &["services.a.depends_on", "undefined service \"nope\""],
    );
    p.write(
        "compose.yaml",
        "services:\n  a:\n    build: .\n    ports: [\"notaport\"]\n",
    );
    fails_with(
        &p,
        &["config"],
        &["compose.yaml", "services.a.ports[0]", "invalid port"],
    );
    p.write(
        "compose.yaml",
        "services:\n  a:\n    image: x\n    networks: [ext]\nnetworks:\n  ext:\n    external: true\n    name: nowhere\n",
    );
    fails_with(
        &p,
        &["up", "-d"],
        &["network nowhere declared as external, but could not be found"],
    );
    std::fs::remove_file(p.dir.path().join("compose.yaml")).unwrap();
    fails_with(&p, &["config"], &["no configuration file"]);
}

#[test]
fn override_files_merge_as_compose_does() {
    let p = Proj::new(
        "merge",
        "services:\n  web:\n    image: a\n    command: [one, two]\n    environment: [A=1, B=2]\n    ports: [\"80:80\"]\n    volumes: [\"v:/data\", \"/x:/keep\"]\n",
        false,
    );
    p.write(
        "compose.override.yaml",
        "services:\n  web:\n    image: b\n    command: [three]\n    environment: {B: 3, C: 4}\n    ports: [\"81:81\"]\n    volumes: [\"w:/data\"]\n",
    );
    let web = &p.config()["services"]["web"];
    assert_eq!(web["image"], "b");
    assert_eq!(web["command"], json!(["three"]));
    assert_eq!(web["environment"], json!({"A": "1", "B": "3", "C": "4"}));
    assert_eq!(web["ports"].as_array().unwrap().len(), 2);
    let vols: Vec<&str> = web["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["source"].as_str().unwrap())
        .collect();
    assert_eq!(vols, ["/x", "w"]);
}

fn testdata() -> Option<PathBuf> {
    match std::env::var_os("BERTH_TESTDATA") {
        Some(d) => Some(PathBuf::from(d).join("compose")),
        None => {
            eprintln!("skipped: BERTH_TESTDATA is not set (the shared compose-go inputs)");
            None
        }
    }
}

/// compose-go's loader inputs: extends across files (paths relative to the extended
/// file), include, `!reset`, cycles of every kind rejected, env files.
#[test]
fn compose_go_loader_inputs() {
    let Some(td) = testdata() else { return };
    let loader = td.join("compose-go-loader");
    let p = Proj::new("cg", "services: {}\n", false);
    let cfg = |file: &Path| -> Output {
        p.compose(&["-f", file.to_str().unwrap(), "config", "--format", "json"])
    };
    let json = |file: &Path| -> Value {
        let o = cfg(file);
        assert!(o.status.success(), "{}: {}", file.display(), stderr(&o));
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    let v = json(&loader.join("compose-test-extends.yaml"));
    let imp = &v["services"]["importer"];
    assert_eq!(imp["image"], "nginx");
    // The imported file's env_file is relative to that file, and feeds interpolation
    // only through the environment, not the project's variables.
    assert_eq!(imp["environment"]["SOURCE"], "extends");
    assert_eq!(imp["container_name"], "imported");
    assert_eq!(
        imp["env_file"][0]["path"],
        loader.join("subdir/extra.env").to_str().unwrap()
    );
    let v = json(&loader.join("compose-include.yaml"));
    assert_eq!(v["services"]["bar"]["environment"]["FOO"], "BAR");
    assert_eq!(v["services"]["imported"]["image"], "nginx");
    let v = json(&loader.join("extends/reset.yaml"));
    assert!(v["services"]["base"].get("command").is_none(), "{v}");
    assert_eq!(
        v["services"]["init"]["command"],
        json!(["sleep", "infinity"])
    );
    let v = json(&loader.join("combined/compose.yaml"));
    assert_eq!(
        v["services"]["service"]["build"]["context"],
        loader.join("combined/dir").to_str().unwrap()
    );
    for (file, needle) in [
        ("compose-depends-on-cycle.yaml", "cycle"),
        ("compose-depends-on-self.yaml", "service1 -> service1"),
        ("compose-include-cycle.yaml", "include cycle"),
    ] {
        let o = cfg(&loader.join(file));
        assert!(!o.status.success(), "{file} must fail");
        assert!(
            stderr(&o).contains(needle) && stderr(&o).contains(file),
            "{file}: {}",
            stderr(&o)
        );
    }
    // compose-go's CLI inputs: .env next to the file, env_file lists.
    let cli = td.join("compose-go-cli");
    let v = json(&cli.join("simple/compose-with-variables.yaml"));
    assert_eq!(v["services"]["simple"]["ports"][0]["published"], "8000");
    let v = json(&cli.join("env-file/compose-with-env-files.yaml"));
    assert_eq!(
        v["services"]["simple"]["environment"]["DEFAULT_PORT"],
        "9090"
    );
    assert_eq!(v["services"]["simple"]["ports"][0]["published"], "8000");
    let f = cli.join("env-file/compose-with-env-files.yaml");
    let env = cli.join("env-file/override.env");
    let o = p.compose(&[
        "-f",
        f.to_str().unwrap(),
        "--env-file",
        env.to_str().unwrap(),
        "config",
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["services"]["simple"]["ports"][0]["published"], "9000");
}

const APP: &str = r#"
services:
  web:
    image: cbox
    command: ["sh", "-c", "mkdir -p /www && echo hello-compose > /www/index.html && sleep 2 && touch /tmp/ready && exec httpd -f -p 80 -h /www"]
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 300ms
      retries: 30
    volumes: ["data:/data"]
  client:
    image: cbox
    command: ["sh", "-c", "wget -q -O - http://web/index.html && sleep 60"]
    environment:
      ROLE: client
    depends_on:
      web:
        condition: service_healthy
volumes:
  data:
"#;

#[test]
fn up_is_health_gated_idempotent_and_down_cleans_up() {
    let p = Proj::new("app", APP, true);
    let web = format!("{}-web-1", p.name);
    let client = format!("{}-client-1", p.name);
    p.ok(&["up", "-d"]);
    // The client started only once web was healthy (2 s after web started), and
    // reached web by its service name on the project network.
    let w = p.inspect(&web);
    assert_eq!(w["State"]["Health"]["Status"], "healthy");
    let web_start = humantime_secs(w["State"]["StartedAt"].as_str().unwrap());
    let client_start = humantime_secs(p.inspect(&client)["State"]["StartedAt"].as_str().unwrap());
    assert!(
        client_start - web_start >= 1.9,
        "client started {:.2}s after web",
        client_start - web_start
    );
    berth_tests::wait_for(
        || p.ok(&["logs", "client"]).contains("hello-compose"),
        "client output",
    );
    let logs = p.ok(&["logs", "--no-color", "client"]);
    assert!(
        logs.contains(&format!("{client} | hello-compose")),
        "{logs}"
    );
    let ps = p.ok(&["ps"]);
    assert!(
        ps.contains(&web) && ps.contains(&client) && ps.contains("healthy"),
        "{ps}"
    );
    let net = format!("{}_default", p.name);
    assert!(p.berth(&["network", "inspect", &net]).status.success());
    let vol = format!("{}_data", p.name);
    assert!(p.berth(&["volume", "inspect", &vol]).status.success());
    let id = |n: &str| p.inspect(n)["Id"].as_str().unwrap().to_string();
    let (web_id, client_id) = (id(&web), id(&client));

    // A second up changes nothing.
    p.ok(&["up", "-d"]);
    assert_eq!((id(&web), id(&client)), (web_id.clone(), client_id.clone()));
    // A changed environment recreates only that service.
    p.write(
        "compose.yaml",
        &APP.replace("ROLE: client", "ROLE: changed"),
    );
    p.ok(&["up", "-d"]);
    assert_eq!(id(&web), web_id, "web must be left running");
    let new_client = id(&client);
    assert_ne!(new_client, client_id, "client must be recreated");
    let env = p.inspect(&client)["Config"]["Env"].to_string();
    assert!(env.contains("ROLE=changed"), "{env}");
    assert!(p.ok(&["ls"]).contains(&p.name));

    // down -v: the client (which depends on web) stops first; containers, the network
    // and the named volume are gone.
    let out = p.compose(&["down", "-v", "-t", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let stopped = |n: &str| err.find(&format!("Container {n}  Stopped"));
    assert!(
        stopped(&client).is_some() && stopped(&client) < stopped(&web),
        "{err}"
    );
    assert!(!p.berth(&["inspect", &web]).status.success());
    assert!(!p.berth(&["inspect", &client]).status.success());
    assert!(!p.berth(&["network", "inspect", &net]).status.success());
    assert!(!p.berth(&["volume", "inspect", &vol]).status.success());
    assert_eq!(p.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn profiles_select_services_and_scale_replicates() {
    let p = Proj::new(
        "prof",
        "services:\n  base:\n    image: cbox\n    network_mode: none\n    deploy:\n      replicas: 2\n  extra:\n    image: cbox\n    network_mode: none\n    profiles: [tools]\n",
        true,
    );
    p.ok(&["up", "-d"]);
    assert_eq!(p.ok(&["ps", "--services"]), "base\nbase\n");
    p.ok(&["--profile", "tools", "up", "-d", "--scale", "base=1"]);
    let services = p.ok(&["ps", "--services"]);
    assert_eq!(
        services, "base\nextra\n",
        "scale 1 removes base-2; the tools profile adds extra"
    );
    let run = p.compose(&[
        "--profile",
        "tools",
        "run",
        "--rm",
        "extra",
        "echo",
        "one-off",
    ]);
    assert!(stdout(&run).contains("one-off"), "{}", stderr(&run));
    let exec = p.ok(&["exec", "base", "echo", "in-base"]);
    assert_eq!(exec.trim(), "in-base");
    // `-p NAME down` needs no file: the labels say what the project owns.
    std::fs::remove_file(p.dir.path().join("compose.yaml")).unwrap();
    p.ok(&["down", "-t", "0"]);
    assert_eq!(p.ok(&["ps", "-a", "-q"]), "");
    let o = p.berth(&["ps", "-a", "-q"]);
    assert_eq!(stdout(&o), "", "containers left behind");
}

/// Seconds since the epoch of an RFC 3339 UTC stamp (`2026-11-26T22:30:01.123456789Z`).
fn humantime_secs(s: &str) -> f64 {
    let (date, time) = s.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (y, m, day) = (d[0], d[1], d[2]);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let t: Vec<f64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    days as f64 * 86400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]
}

#[test]
fn completed_dependency_secrets_configs_and_extra_networks() {
    let p = Proj::new(
        "deps",
        r#"
services:
  init:
    image: cbox
    command: ["sh", "-c", "sleep 1 && echo init-done"]
    networks: [back]
  app:
    image: cbox
    command: ["sh", "-c", "for f in /run/secrets/token /conf /run/secrets/envtok /inline; do cat $$f; echo; done; sleep 60"]
    restart: always
    depends_on:
      init: {condition: service_completed_successfully}
    secrets: [token, {source: envtok, mode: 0400}]
    configs: [{source: conf, target: /conf}, {source: inline, target: /inline}]
    networks: [front, back]
  peer:
    image: cbox
    command: ["sleep", "60"]
    networks: {back: {aliases: [other]}}
networks: {front: {}, back: {}}
secrets: {token: {file: ./token.txt}, envtok: {environment: TOKEN_FROM_ENV}}
configs: {conf: {file: ./conf.txt}, inline: {content: "inline-body"}}
"#,
        true,
    );
    p.write("token.txt", "s3cret\n");
    p.write("conf.txt", "conf-body\n");
    p.write(".env", "TOKEN_FROM_ENV=env-secret\n");
    p.ok(&["up", "--wait"]);
    let app = format!("{}-app-1", p.name);
    let init = p.inspect(&format!("{}-init-1", p.name));
    assert_eq!(init["State"]["ExitCode"], 0);
    let finished = humantime_secs(init["State"]["FinishedAt"].as_str().unwrap());
    let started = humantime_secs(p.inspect(&app)["State"]["StartedAt"].as_str().unwrap());
    assert!(started >= finished, "app started before init completed");
    berth_tests::wait_for(
        || p.ok(&["logs", "app"]).contains("conf-body"),
        "app output",
    );
    let logs = p.ok(&["logs", "app"]);
    for want in ["s3cret", "conf-body", "env-secret", "inline-body"] {
        assert!(logs.contains(want), "{want} missing from {logs}");
    }
    let mode = p.ok(&["exec", "app", "stat", "-c", "%a", "/run/secrets/envtok"]);
    assert_eq!(mode.trim(), "400");
    // app is on both networks; peer's alias on `back` resolves from app.
    let on_both_networks = |p: &Proj| {
        let hosts = p.ok(&["exec", "app", "cat", "/etc/hosts"]);
        assert!(
            hosts.contains(" other") || hosts.contains("\tother"),
            "{hosts}"
        );
        let devs = p.ok(&["exec", "app", "cat", "/proc/net/dev"]);
        assert!(devs.contains("eth0:") && devs.contains("eth1:"), "{devs}");
    };
    on_both_networks(&p);
    let nets = p.inspect(&app)["NetworkSettings"]["Networks"].clone();
    for n in ["front", "back"] {
        assert!(nets.get(format!("{}_{n}", p.name)).is_some(), "{nets}");
    }
    assert!(!nets[format!("{}_back", p.name)]["IPAddress"]
        .as_str()
        .unwrap()
        .is_empty());
    // Killed behind the engine's back, the restart policy brings it back on both networks.
    let pid = p.inspect(&app)["State"]["Pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    berth_tests::wait_for(
        || {
            let s = p.inspect(&app);
            s["RestartCount"].as_i64() >= Some(1) && s["State"]["Status"] == "running"
        },
        "app restarted by its policy",
    );
    on_both_networks(&p);
}

#[test]
fn dependants_with_restart_true_follow_their_dependency() {
    let yaml = |tag: &str| {
        format!(
            r#"
services:
  db:
    image: cbox
    command: ["sleep", "60"]
    environment: {{TAG: {tag}}}
    network_mode: none
  web:
    image: cbox
    command: ["sleep", "60"]
    network_mode: none
    depends_on: {{db: {{condition: service_started, restart: true}}}}
  other:
    image: cbox
    command: ["sleep", "60"]
    network_mode: none
    depends_on: [db]
"#
        )
    };
    let p = Proj::new("rst", &yaml("one"), true);
    p.ok(&["up", "-d"]);
    let pid = |svc: &str| p.inspect(&format!("{}-{svc}-1", p.name))["State"]["Pid"].clone();
    let (web0, other0) = (pid("web"), pid("other"));
    // Changing db recreates it; web (restart: true) restarts, other does not.
    p.write("compose.yaml", &yaml("two"));
    p.ok(&["up", "-d"]);
    let (web1, other1) = (pid("web"), pid("other"));
    assert_ne!(web0, web1, "web must restart when db is recreated");
    assert_eq!(other0, other1, "other must be left alone");
    // `restart db` takes web along.
    p.ok(&["restart", "db"]);
    assert_ne!(pid("web"), web1, "web must restart with db");
    assert_eq!(pid("other"), other1);
}

#[test]
fn build_up_and_down_rmi_local() {
    let p = Proj::new(
        "bld",
        "services:\n  app:\n    build:\n      context: .\n      args: {WORD: built-by-compose}\n    network_mode: none\n",
        true,
    );
    p.write(
        "Dockerfile",
        "FROM cbox:latest\nARG WORD\nRUN echo $WORD > /built\nCMD [\"cat\", \"/built\"]\n",
    );
    p.ok(&["up", "-d", "--build"]);
    let image = format!("{}-app", p.name);
    berth_tests::wait_for(
        || p.ok(&["logs", "app"]).contains("built-by-compose"),
        "app output",
    );
    assert!(p.ok(&["images"]).contains(&image));
    let first = p.inspect(&format!("{}-app-1", p.name))["Id"].clone();
    p.ok(&["up", "-d"]);
    assert_eq!(
        p.inspect(&format!("{}-app-1", p.name))["Id"],
        first,
        "nothing changed"
    );
    // A rebuilt image recreates the service's container.
    p.write(
        "Dockerfile",
        "FROM cbox:latest\nARG WORD\nRUN echo $WORD again > /built\nCMD [\"cat\", \"/built\"]\n",
    );
    p.ok(&["up", "-d", "--build"]);
    assert_ne!(
        p.inspect(&format!("{}-app-1", p.name))["Id"],
        first,
        "not recreated"
    );
    berth_tests::wait_for(
        || p.ok(&["logs", "app"]).contains("built-by-compose again"),
        "new output",
    );
    p.ok(&["down", "--rmi", "local"]);
    assert!(
        !p.berth(&["image", "inspect", &image]).status.success(),
        "image left behind"
    );
    assert!(
        p.berth(&["image", "inspect", IMAGE]).status.success(),
        "base image removed"
    );
}

#[test]
fn build_takes_additional_contexts_hosts_and_limits() {
    let p = Proj::new(
        "bctx",
        "services:\n  app:\n    build:\n      context: .\n      additional_contexts:\n        extra: ./extra\n        base: docker-image://cbox:latest\n      extra_hosts:\n        db: 10.9.8.7\n      shm_size: 32m\n      ulimits:\n        nofile: 321\n      network: none\n    network_mode: none\n",
        true,
    );
    p.write("extra/note.txt", "from the named context\n");
    p.write(
        "Dockerfile",
        "FROM base\nCOPY --from=extra note.txt /note\n\
         RUN grep db /etc/hosts > /hosts && ulimit -n > /nofile && df -k /dev/shm | tail -1 | awk '{print $2}' > /shm\n",
    );
    p.ok(&["build"]);
    let image = format!("{}-app", p.name);
    let out = p.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "cat",
        "/note",
        "/hosts",
        "/nofile",
        "/shm",
    ]);
    assert!(out.status.success(), "{}", berth_tests::stderr(&out));
    assert_eq!(
        berth_tests::stdout(&out),
        "from the named context\n10.9.8.7\tdb\n321\n32768\n"
    );
}

#[test]
fn namespace_cgroup_and_logging_keys_reach_the_containers() {
    let p = Proj::new(
        "kern",
        r#"
services:
  db:
    image: cbox
    command: ["sh", "-c", "echo data > /data/f; echo ready > /dev/shm/x; sleep 60"]
    ipc: shareable
    volumes: [dbdata:/data]
    oom_score_adj: 200
    mem_reservation: 16m
    logging:
      driver: json-file
      options: {max-size: 1m, max-file: "2"}
    networks:
      back: {ipv4_address: 10.231.7.9}
  app:
    image: cbox
    command: ["sleep", "60"]
    pid: service:db
    ipc: service:db
    volumes_from: ["db:ro"]
    depends_on: [db]
    networks: [back]
volumes:
  dbdata: {}
networks:
  back:
    ipam:
      config: [{subnet: 10.231.7.0/24}]
"#,
        true,
    );
    p.ok(&["up", "-d"]);
    let db = format!("{}-db-1", p.name);
    let app = format!("{}-app-1", p.name);
    let d = p.inspect(&db);
    assert_eq!(d["HostConfig"]["OomScoreAdj"], 200);
    assert_eq!(d["HostConfig"]["MemoryReservation"], 16 << 20);
    assert_eq!(d["HostConfig"]["LogConfig"]["Config"]["max-size"], "1m");
    let ip = d["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()["IPAddress"]
        .clone();
    assert_eq!(ip, "10.231.7.9");
    berth_tests::wait_for(
        || {
            let o = p.berth(&["exec", &app, "cat", "/dev/shm/x", "/data/f"]);
            stdout(&o) == "ready\ndata\n"
        },
        "app sees db's /dev/shm and volume",
    );
    let ps = p.berth(&["exec", &app, "ps", "-o", "args"]);
    // db's process and app's own: one PID namespace.
    let sleeps = stdout(&ps).lines().filter(|l| *l == "sleep 60").count();
    assert_eq!(sleeps, 2, "{}", stdout(&ps));
    let o = p.berth(&["exec", &app, "touch", "/data/g"]);
    assert!(!o.status.success(), "volumes_from :ro was writable");
    p.ok(&["down", "-v"]);
}

#[test]
fn kill_pause_unpause_scale_and_version() {
    let p = Proj::new(
        "kps",
        "services:\n  a:\n    image: cbox\n    command: [\"sleep\", \"60\"]\n    network_mode: none\n  b:\n    image: cbox\n    command: [\"sleep\", \"60\"]\n    network_mode: none\n",
        true,
    );
    p.ok(&["up", "-d"]);
    // `compose events --json a` follows service a's containers only.
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut follower = p
        .command(&["events", "--json", "a"])
        .stdout(out.reopen().unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = |svc: &str, n: u32| {
        p.inspect(&format!("{}-{svc}-{n}", p.name))["State"]["Status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    p.ok(&["pause", "a"]);
    assert_eq!(
        (status("a", 1), status("b", 1)),
        ("paused".into(), "running".into())
    );
    p.ok(&["unpause"]);
    assert_eq!(status("a", 1), "running");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = follower.kill();
    let _ = follower.wait();
    let actions: Vec<String> = std::fs::read_to_string(out.path())
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["Action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(actions, ["pause", "unpause"]);
    p.ok(&["scale", "b=2"]);
    assert_eq!(status("b", 2), "running");
    p.ok(&["kill", "b"]);
    berth_tests::wait_for(
        || status("b", 1) == "exited" && status("b", 2) == "exited",
        "b's containers to die",
    );
    assert_eq!(status("a", 1), "running");
    // `create` (and `up --no-start`) make containers without starting them.
    p.ok(&["down", "-t", "0"]);
    p.ok(&["create"]);
    assert_eq!(
        (status("a", 1), status("b", 1)),
        ("created".into(), "created".into())
    );
    p.ok(&["up", "-d", "--no-start", "a"]);
    assert_eq!(status("a", 1), "created");
    p.ok(&["start"]);
    assert_eq!(status("a", 1), "running");
    let v = p.ok(&["version", "--short"]);
    assert_eq!(
        v.trim(),
        p.ok(&["version", "--format", "json"])
            .trim()
            .trim_start_matches("{\"version\":\"")
            .trim_end_matches("\"}")
    );
    p.ok(&["down", "-t", "0"]);
}

/// `links` (an alias in the linking container's hosts file, and an implied dependency),
/// `mac_address`, `annotations`, `label_file` (below `labels`) and a volume's
/// `driver_opts` reach the containers.
#[test]
fn links_and_mac_address_reach_the_containers() {
    let p = Proj::new(
        "lnk",
        "services:\n  b:\n    image: cbox\n    command: [\"sleep\", \"60\"]\n    links: [\"a:www\"]\n    mac_address: 92:d0:c6:0a:29:44\n    volumes: [\"scratch:/s\"]\n    annotations: {org.example.owner: web}\n    label_file: ./b.labels\n    labels: {tier: explicit}\n  a:\n    image: cbox\n    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/etc\"]\nvolumes:\n  scratch:\n    driver_opts: {type: tmpfs, device: tmpfs, o: \"size=1m\"}\n",
        true,
    );
    p.write("b.labels", "# labels\ntier=from-file\nteam=infra\n");
    let cfg = p.ok(&["config"]);
    assert!(
        cfg.contains("depends_on:"),
        "links imply a dependency: {cfg}"
    );
    p.ok(&["up", "-d"]);
    let hosts = p.ok(&["exec", "b", "cat", "/etc/hosts"]);
    let a_ip = p.inspect(&format!("{}-a-1", p.name))["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with(&format!("{a_ip}\twww "))),
        "{hosts}"
    );
    assert_eq!(
        p.ok(&["exec", "b", "cat", "/sys/class/net/eth0/address"])
            .trim(),
        "92:d0:c6:0a:29:44"
    );
    let b = p.inspect(&format!("{}-b-1", p.name));
    assert_eq!(b["HostConfig"]["Annotations"]["org.example.owner"], "web");
    let labels = &b["Config"]["Labels"];
    assert_eq!(
        (labels["team"].as_str(), labels["tier"].as_str()),
        (Some("infra"), Some("explicit"))
    );
    let scratch = p.ok(&["exec", "b", "grep", " /s ", "/proc/mounts"]);
    assert!(
        scratch.starts_with("tmpfs ") && scratch.contains("size=1024k"),
        "{scratch}"
    );
    let got = p.ok(&["exec", "b", "wget", "-q", "-O", "-", "http://www/passwd"]);
    assert!(got.starts_with("root:"), "{got}");
    p.ok(&["down", "-t", "0", "-v"]);
}

/// `compose cp` both ways, `compose exec`'s stdin and TTY, `compose wait` (exit codes)
/// and `wait --down-project`.
#[test]
fn cp_and_wait() {
    let p = Proj::new(
        "cpw",
        "services:\n  a:\n    image: cbox\n    command: [\"sh\", \"-c\", \"echo data > /out; sleep 60\"]\n    stop_signal: SIGKILL\n    network_mode: none\n  b:\n    image: cbox\n    command: [\"sh\", \"-c\", \"sleep 1; exit 3\"]\n    network_mode: none\n",
        true,
    );
    p.ok(&["up", "-d"]);
    let local = p.dir.path().join("got");
    berth_tests::wait_for(
        || {
            p.compose(&["cp", "a:/out", local.to_str().unwrap()])
                .status
                .success()
        },
        "a's /out",
    );
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "data\n");
    p.write("in.txt", "sent");
    p.ok(&["cp", p.dir.path().join("in.txt").to_str().unwrap(), "a:/in"]);
    assert_eq!(p.ok(&["exec", "a", "cat", "/in"]).trim(), "sent");
    // exec attaches stdin (piped here, so no TTY), and allocates a TTY on a terminal.
    let mut cat = p
        .command(&["exec", "a", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut cat.stdin.take().unwrap(), b"piped in\n").unwrap();
    let out = cat.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped in\n");
    let on_terminal = |flags: &str| {
        berth_tests::terminal_output(&format!(
            "cd {} && {} --root {} compose -p {} exec {flags} a tty",
            p.dir.path().display(),
            berth_tests::bin_dir().join("berth").display(),
            p.root.path().display(),
            p.name
        ))
    };
    // A foreground `run` reads stdin too.
    let mut run = p
        .command(&["run", "--rm", "a", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut run.stdin.take().unwrap(), b"to run\n").unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to run\n");
    assert!(on_terminal("").contains("/dev/pts/"), "a TTY by default");
    assert!(on_terminal("-T").contains("not a tty"), "-T: none");
    let o = p.compose(&["wait", "b"]);
    assert_eq!((o.status.code(), stdout(&o).trim()), (Some(3), "3"));
    let o = p.compose(&["cp", "nosuch:/x", "/tmp/x"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no such service"), "{}", stderr(&o));
    // The project goes down once b (already exited) is seen stopped.
    let o = p.compose(&["wait", "--down-project", "b"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        !p.berth(&["ps", "-aq"])
            .stdout
            .iter()
            .any(|b| !b.is_ascii_whitespace()),
        "no containers left"
    );
}

/// A foreground `up` prints prefixed output and stops the project on Ctrl-C.
#[test]
fn foreground_up_follows_logs_and_stops_on_interrupt() {
    let p = Proj::new(
        "fg",
        "services:\n  talk:\n    image: cbox\n    network_mode: none\n    command: [sh, -c, 'echo talking; sleep 60']\n    stop_grace_period: 1s\n",
        true,
    );
    let child = Command::new(bin_dir().join("berth"))
        .arg("--root")
        .arg(p.root.path())
        .args(["compose", "-p", &p.name, "up"])
        .current_dir(p.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let name = format!("{}-talk-1", p.name);
    berth_tests::wait_for(
        || p.ok(&["ps", "-q"]).lines().count() == 1 && p.ok(&["logs", "talk"]).contains("talking"),
        "the service running",
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{name} | talking")), "{text}");
    assert_eq!(p.inspect(&name)["State"]["Status"], "exited");
}

/// Kills (SIGINT, then waits for) a background `compose watch` when the test ends.
struct Bg(std::process::Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.0.wait();
    }
}

#[test]
fn watch_syncs_removes_ignores_and_restarts() {
    let p = Proj::new(
        "wch",
        r#"
services:
  app:
    image: cbox
    command: ["sleep", "120"]
    network_mode: none
    init: true
    develop:
      watch:
        - {path: ./src, action: sync, target: /app, ignore: ["*.tmp"]}
        - {path: ./conf, action: sync+restart, target: /etc/app}
"#,
        true,
    );
    for d in ["src", "conf"] {
        std::fs::create_dir(p.dir.path().join(d)).unwrap();
    }
    p.write("src/first.txt", "initial\n");
    let mut cmd = Command::new(bin_dir().join("berth"));
    cmd.arg("--root")
        .arg(p.root.path())
        .current_dir(p.dir.path())
        .args(["compose", "-p", &p.name, "watch"])
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let bg = Bg(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr_pipe)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("watch never enabled: {seen:?}"));
        if line.contains("Watch enabled") {
            break;
        }
        seen.push(line);
    }
    let app = format!("{}-app-1", p.name);
    let cat = |path: &str| {
        let o = p.berth(&["exec", &app, "cat", path]);
        o.status.success().then(|| stdout(&o))
    };
    // A new file, a file in a new directory, a change, a removal; an ignored file stays out.
    p.write("src/a.txt", "one\n");
    berth_tests::wait_for(
        || cat("/app/a.txt").as_deref() == Some("one\n"),
        "a.txt synced",
    );
    std::fs::create_dir(p.dir.path().join("src/sub")).unwrap();
    p.write("src/sub/b.txt", "bee\n");
    p.write("src/scratch.tmp", "ignored\n");
    berth_tests::wait_for(
        || cat("/app/sub/b.txt").as_deref() == Some("bee\n"),
        "sub/b.txt synced",
    );
    p.write("src/a.txt", "two\n");
    berth_tests::wait_for(
        || cat("/app/a.txt").as_deref() == Some("two\n"),
        "a.txt updated",
    );
    std::fs::remove_file(p.dir.path().join("src/a.txt")).unwrap();
    berth_tests::wait_for(|| cat("/app/a.txt").is_none(), "a.txt removed");
    assert_eq!(cat("/app/scratch.tmp"), None, "an ignored file was synced");
    // Nothing existed before the watch started and no initial_sync: first.txt stays out.
    assert_eq!(cat("/app/first.txt"), None);
    // sync+restart: the file arrives and the container restarts.
    let pid = p.inspect(&app)["State"]["Pid"].clone();
    p.write("conf/app.ini", "k=v\n");
    berth_tests::wait_for(
        || {
            p.inspect(&app)["State"]["Pid"] != pid
                && cat("/etc/app/app.ini").as_deref() == Some("k=v\n")
        },
        "conf synced and app restarted",
    );
    drop(bg);
}

/// Lifecycle hooks: `post_start` runs in the container once it has started (as its
/// user, with its environment; a string command split as a shell would), `pre_stop`
/// before it stops; a failing `post_start` fails `up` naming it.
#[test]
fn post_start_and_pre_stop_hooks_run_in_the_container() {
    let p = Proj::new(
        "hooks",
        r#"
services:
  app:
    image: cbox
    command: ["sleep", "60"]
    stop_signal: SIGKILL
    network_mode: none
    volumes: ["./out:/out"]
    post_start:
      - command: ["sh", "-c", "echo started $$WHO $$(id -u) > /out/started"]
        user: "1000"
        environment: ["WHO=hook"]
    pre_stop:
      - command: sh -c 'echo stopping > /out/stopped'
"#,
        true,
    );
    std::fs::create_dir_all(p.dir.path().join("out")).unwrap();
    std::fs::set_permissions(
        p.dir.path().join("out"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    p.ok(&["up", "-d"]);
    let started = std::fs::read_to_string(p.dir.path().join("out/started")).unwrap();
    assert_eq!(started.trim(), "started hook 1000");
    assert!(!p.dir.path().join("out/stopped").exists());
    p.ok(&["stop"]);
    let stopped = std::fs::read_to_string(p.dir.path().join("out/stopped")).unwrap();
    assert_eq!(stopped.trim(), "stopping");
    p.ok(&["down"]);
    p.write(
        "compose.yaml",
        "services:\n  app:\n    image: cbox\n    command: [\"sleep\", \"60\"]\n    network_mode: none\n    post_start:\n      - command: [\"false\"]\n",
    );
    let o = p.compose(&["up", "-d"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("post_start hook exited with 1"),
        "{}",
        stderr(&o)
    );
}

/// Keys berth cannot apply here are warned about, not silently dropped; `runtime` and
/// `volume_driver` are checked as `run`'s flags are.
#[test]
fn keys_berth_cannot_apply_are_warned_or_refused() {
    let p = Proj::new(
        "ign",
        "services:\n  app:\n    image: cbox\n    command: [\"true\"]\n    network_mode: none\n    gpus: all\n    cpu_count: 2\n    runtime: runc\n",
        true,
    );
    let o = p.compose(&["up", "-d"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for key in ["`gpus`", "`cpu_count`"] {
        assert!(stderr(&o).contains(key), "{key}: {}", stderr(&o));
    }
    assert!(!stderr(&o).contains("`runtime`"), "{}", stderr(&o));
    p.write(
        "compose.yaml",
        "services:\n  app:\n    image: cbox\n    command: [\"true\"]\n    network_mode: none\n    runtime: kata\n",
    );
    let o = p.compose(&["up", "-d"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown or invalid runtime name: kata"),
        "{}",
        stderr(&o)
    );
}
