//! Real-kernel tests of berth-net (run as root). Each test uses its own root and its own
//! user networks; only `default_bridge_network` touches the shared `berth0`.

mod common;

use std::collections::HashSet;
use std::process::Command;

use berth_net::{NetError, NetworkOptions, PortMapping, Proto};
use common::*;

#[test]
fn endpoint_gets_address_route_and_outbound_nat() {
    let mut root = Root::new();
    let n = root.network(&NetworkOptions::default());
    let c = Sandbox::new();
    let ep = root.net.connect(&c.attach(&n.name)).unwrap();
    assert_eq!(ep.ifname, "eth0");
    assert!(n.subnet.unwrap().contains(&ep.ip));
    assert_ne!(Some(ep.ip), n.gateway);
    assert!(link_exists(&ep.host_veth));

    let addr = c.sh_ok("ip -4 -o addr show dev eth0");
    assert!(addr.contains(&format!("{}/{}", ep.ip, ep.prefix)), "{addr}");
    let route = c.sh_ok("ip route");
    assert!(
        route.contains(&format!("default via {}", ep.gateway)),
        "{route}"
    );
    assert!(c.sh_ok("ip -o link show lo").contains("UP"));
    // (/sys still shows the host's view inside nsenter; ip asks the namespace.)
    let link = c.sh_ok("ip -o link show eth0");
    assert!(link.contains(&format!("link/ether {}", ep.mac)), "{link}");

    // An "outside" host behind another interface, with no route back to the container
    // subnet: it answers only if the container's traffic was masqueraded.
    let outside = Sandbox::new();
    let (h, o) = (unique("bo"), unique("bi"));
    run(
        "ip",
        &["link", "add", &h, "type", "veth", "peer", "name", &o],
    );
    let _cleanup = scopeguard_link(h.clone());
    run(
        "ip",
        &["link", "set", &o, "netns", &outside.pid().to_string()],
    );
    let third = 100 + (std::process::id() % 100) as u8;
    let hip = format!("198.51.{third}.1/30");
    run("ip", &["addr", "add", &hip, "dev", &h]);
    run("ip", &["link", "set", &h, "up"]);
    outside.sh_ok(&format!(
        "ip addr add 198.51.{third}.2/30 dev {o} && ip link set {o} up && ip link set lo up"
    ));
    let dir = root.dir.path().join("www-out");
    let httpd = outside.serve(&dir, "outside-ok");
    let got = c.sh_ok(&format!(
        "busybox timeout 5 busybox wget -qO- http://198.51.{third}.2/"
    ));
    assert_eq!(got, "outside-ok");
    // And the host's own non-bridge address.
    let hostdir = root.dir.path().join("www-host");
    std::fs::create_dir_all(&hostdir).unwrap();
    std::fs::write(hostdir.join("index.html"), "host-ok").unwrap();
    let port = free_port();
    let host_httpd = Proc(
        Command::new("busybox")
            .args(["httpd", "-f", "-p", &format!("{}:{port}", host_ip()), "-h"])
            .arg(&hostdir)
            .spawn()
            .unwrap(),
    );
    let got = retry(|| {
        c.sh(&format!(
            "busybox timeout 5 busybox wget -qO- http://{}:{port}/",
            host_ip()
        ))
    });
    assert_eq!(got, "host-ok");
    stop(host_httpd);
    stop(httpd);
}

/// Deletes a host link on drop.
struct LinkGuard(String);
impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}
fn scopeguard_link(name: String) -> LinkGuard {
    LinkGuard(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command until it succeeds (servers may still be starting); returns stdout.
fn retry(f: impl Fn() -> std::process::Output) -> String {
    let mut last = None;
    for _ in 0..50 {
        let o = f();
        if o.status.success() {
            return String::from_utf8_lossy(&o.stdout).into_owned();
        }
        last = Some(o);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("never succeeded: {last:?}");
}

#[test]
fn peers_reach_each_other_by_name_and_alias() {
    let mut root = Root::new();
    let n = root.network(&NetworkOptions::default());
    let (a, b) = (Sandbox::new(), Sandbox::new());
    let (ha, hb) = (
        root.dir.path().join("hosts-a"),
        root.dir.path().join("hosts-b"),
    );
    std::fs::write(&ha, "").unwrap();
    std::fs::write(&hb, "").unwrap();
    let mut req = a.attach(&n.name);
    req.aliases = vec!["web".into()];
    req.hosts_file = Some(ha.clone());
    let ea = root.net.connect(&req).unwrap();
    let mut req = b.attach(&n.name);
    req.hosts_file = Some(hb.clone());
    let eb = root.net.connect(&req).unwrap();

    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&ha).unwrap().ino();
    let text_a = std::fs::read_to_string(&ha).unwrap();
    let text_b = std::fs::read_to_string(&hb).unwrap();
    assert!(text_a.contains("127.0.0.1\tlocalhost"));
    // b's file names a by name, alias and short id; a's file was rewritten for b.
    let line = format!("{}\tn{} web {}", ea.ip, a.id, &a.id[..a.id.len().min(12)]);
    assert!(text_b.contains(&line), "{text_b}");
    assert!(
        text_a.contains(&format!("{}\tn{}", eb.ip, b.id)),
        "{text_a}"
    );
    assert_eq!(
        std::fs::metadata(&ha).unwrap().ino(),
        ino,
        "hosts file replaced"
    );

    let httpd = a.serve(&root.dir.path().join("www"), "hello-a");
    assert_eq!(
        b.sh_ok(&format!(
            "busybox timeout 5 busybox wget -qO- http://{}/",
            ea.ip
        )),
        "hello-a"
    );
    for name in [format!("n{}", a.id), "web".to_string()] {
        let script = format!(
            "mount --bind {} /etc/hosts && nsenter --net={} busybox timeout 5 busybox wget -qO- http://{name}/",
            hb.display(),
            b.netns().display()
        );
        let o = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout), "hello-a");
    }
    stop(httpd);

    // Leaving the network drops b from a's file.
    root.net.disconnect(&b.id, &n.name).unwrap();
    let text_a = std::fs::read_to_string(&ha).unwrap();
    assert!(!text_a.contains(&eb.ip.to_string()), "{text_a}");
    assert!(!link_exists(&eb.host_veth));
}

#[test]
fn published_ports_from_host_loopback_and_peers() {
    let mut root = Root::new();
    let n = root.network(&NetworkOptions::default());
    let (a, b) = (Sandbox::new(), Sandbox::new());
    let mut req = a.attach(&n.name);
    req.ports = vec![PortMapping {
        host_ip: None,
        host_port: 0,
        container_port: 80,
        proto: Proto::Tcp,
    }];
    let ea = root.net.connect(&req).unwrap();
    let hp = ea.ports[0].host_port;
    assert_ne!(hp, 0);
    root.net.connect(&b.attach(&n.name)).unwrap();
    let httpd = a.serve(&root.dir.path().join("www"), "published");

    assert_eq!(wget(&format!("http://127.0.0.1:{hp}/")), "published");
    assert_eq!(wget(&format!("http://{}:{hp}/", host_ip())), "published");
    let from_peer = format!(
        "busybox timeout 5 busybox wget -qO- http://{}:{hp}/",
        host_ip()
    );
    assert_eq!(b.sh_ok(&from_peer), "published");
    // Hairpin: the container reaches itself through the host's published port.
    assert_eq!(a.sh_ok(&from_peer), "published");
    stop(httpd);

    // The same host port again: a clear error and nothing left behind.
    let c = Sandbox::new();
    let mut req = c.attach(&n.name);
    req.ports = vec![PortMapping {
        host_port: hp,
        container_port: 81,
        ..Default::default()
    }];
    let before = rules_with("berth-ep:");
    let err = root.net.connect(&req).unwrap_err();
    assert!(
        matches!(err, NetError::PortInUse { port, .. } if port == hp),
        "{err}"
    );
    assert!(err.to_string().contains(&hp.to_string()));
    assert!(root.net.endpoints(&c.id).unwrap().is_empty());
    assert!(!c.sh_ok("ip -o link").contains("eth0"));
    assert_eq!(rules_with(&format!("berth-ep:{}", &n.id[..12])), 1);
    // A host process holding a port is a conflict too.
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    req.ports[0].host_port = l.local_addr().unwrap().port();
    assert!(matches!(
        root.net.connect(&req).unwrap_err(),
        NetError::PortInUse { .. }
    ));
    let _ = before;

    let marker = format!("berth-ep:{}:{}", &n.id[..12], a.id);
    assert_eq!(rules_with(&marker), 1);
    root.net.release(&a.id).unwrap();
    assert_eq!(rules_with(&marker), 0);
    assert!(wget_fails(&format!("http://127.0.0.1:{hp}/")));
}

/// Deletes the first rule of `table` whose text contains `marker`, as an outsider would.
fn drop_one_rule(table: &str, marker: &str) {
    let gone = run("iptables-save", &["-t", table])
        .lines()
        .find(|l| l.contains(marker))
        .unwrap()
        .replacen("-A ", "-D ", 1);
    let status = Command::new("sh")
        .args(["-c", &format!("iptables -t {table} {gone}")])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wget_fails(url: &str) -> bool {
    !Command::new("timeout")
        .args(["2", "busybox", "wget", "-qO-", url])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn release_is_exact_and_idempotent() {
    let mut root = Root::new();
    let n = root.network(&NetworkOptions::default());
    let marker = format!("berth-ep:{}", &n.id[..12]);
    let c = Sandbox::new();
    let mut req = c.attach(&n.name);
    req.ports = berth_net::parse_publish("127.0.0.1::80").unwrap();
    req.ports
        .extend(berth_net::parse_publish("53/udp").unwrap());
    let ep = root.net.connect(&req).unwrap();
    assert_eq!(rules_with(&marker), 2);
    assert!(link_exists(&ep.host_veth));
    // A second network gives eth1 and no second default route.
    let n2 = root.network(&NetworkOptions::default());
    let ep2 = root.net.connect(&c.attach(&n2.name)).unwrap();
    assert_eq!(ep2.ifname, "eth1");
    assert_eq!(c.sh_ok("ip route").matches("default").count(), 1);

    // One rule removed behind berth's back: release still removes the rest.
    drop_one_rule("nat", &marker);
    assert_eq!(rules_with(&marker), 1);
    root.net.release(&c.id).unwrap();
    assert_eq!(rules_with(&marker), 0);
    assert!(!link_exists(&ep.host_veth) && !link_exists(&ep2.host_veth));
    assert!(root.net.endpoints(&c.id).unwrap().is_empty());
    assert!(!c.sh_ok("ip -o link").contains("eth"));
    root.net.release(&c.id).unwrap();

    // The address is free again, but not handed out at once (the next one is).
    let d = Sandbox::new();
    let ep_d = root.net.connect(&d.attach(&n.name)).unwrap();
    assert_ne!(ep_d.ip, ep.ip);
    assert!(root.net.get(&n.name).unwrap().containers.len() == 1);

    // A container whose namespace died: releasing is still fine and complete.
    let e = Sandbox::new();
    let mut req = e.attach(&n.name);
    req.ports = berth_net::parse_publish("0:80").unwrap();
    let eep = root.net.connect(&req).unwrap();
    drop(e);
    root.net.release(&eep.container_id).unwrap();
    assert_eq!(rules_with(&format!("{marker}:{}", eep.container_id)), 0);
    assert!(root.net.endpoints(&eep.container_id).unwrap().is_empty());
    // The pair dies with the namespace, in the kernel's background cleanup.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while link_exists(&eep.host_veth) {
        assert!(
            std::time::Instant::now() < deadline,
            "veth outlived its namespace"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn twenty_concurrent_endpoints_leak_nothing() {
    let mut root = Root::new();
    let n = root.network(&NetworkOptions::default());
    let marker = format!("berth-ep:{}", &n.id[..12]);
    let db = root.dir.path().join("berth.db");
    let rows = || rusqlite_count(&db);
    assert_eq!(rows(), 0);
    let net_marker = format!("berth-net:{}", n.bridge);
    let net_rules = rules_with(&net_marker);
    assert_eq!(net_rules, 5);
    let sandboxes: Vec<Sandbox> = (0..20).map(|_| Sandbox::new()).collect();
    let path = root.dir.path().to_path_buf();
    let eps: Vec<berth_net::Endpoint> = std::thread::scope(|s| {
        let hs: Vec<_> = sandboxes
            .iter()
            .enumerate()
            .map(|(i, sb)| {
                let path = path.clone();
                let name = n.name.clone();
                s.spawn(move || {
                    // Each thread its own handle: separate connections and flocks, as
                    // separate berth processes would have.
                    let net = berth_net::Net::open(&path).unwrap();
                    let mut req = sb.attach(&name);
                    if i % 2 == 0 {
                        req.ports = berth_net::parse_publish("80").unwrap();
                    }
                    req.hosts_file = Some(path.join(format!("hosts-{i}")));
                    net.connect(&req).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: HashSet<_> = eps.iter().map(|e| e.ip).collect();
    assert_eq!(ips.len(), 20, "an address was handed out twice");
    assert!(!ips.contains(&n.gateway.unwrap()));
    let hps: HashSet<_> = eps
        .iter()
        .flat_map(|e| e.ports.iter().map(|p| p.host_port))
        .collect();
    assert_eq!(hps.len(), 10);
    assert_eq!(rows(), 20);
    assert_eq!(rules_with(&marker), 10);
    assert!(eps.iter().all(|e| link_exists(&e.host_veth)));
    // Every hosts file lists the 19 peers.
    let hosts = std::fs::read_to_string(path.join("hosts-0")).unwrap();
    assert_eq!(
        hosts.lines().filter(|l| l.starts_with("10.")).count(),
        20,
        "{hosts}"
    );

    std::thread::scope(|s| {
        for sb in &sandboxes {
            let path = path.clone();
            s.spawn(move || {
                let net = berth_net::Net::open(&path).unwrap();
                net.release(&sb.id).unwrap();
            });
        }
    });
    assert_eq!(rows(), 0);
    assert_eq!(rules_with(&marker), 0);
    assert_eq!(rules_with(&net_marker), net_rules);
    assert!(eps.iter().all(|e| !link_exists(&e.host_veth)));
    let links = run("ip", &["-o", "link"]);
    for e in &eps {
        assert!(!links.contains(&e.host_veth));
    }
}

fn rusqlite_count(db: &std::path::Path) -> i64 {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT COUNT(*) FROM endpoints")
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().parse().unwrap(),
        // No sqlite3 binary: count through the library instead.
        _ => {
            let net = berth_net::Net::open(db.parent().unwrap()).unwrap();
            net.list()
                .unwrap()
                .iter()
                .map(|n| n.containers.len() as i64)
                .sum()
        }
    }
}

#[test]
fn remove_refuses_while_in_use_and_prune() {
    let mut root = Root::new();
    let n = root.network(&NetworkOptions::default());
    let idle = root.network(&NetworkOptions::default());
    assert!(link_exists(&n.bridge));
    let c = Sandbox::new();
    root.net.connect(&c.attach(&n.name)).unwrap();
    let err = root.net.remove(&n.name).unwrap_err();
    assert!(matches!(err, NetError::InUse { .. }), "{err}");
    assert!(err.to_string().contains(&format!("n{}", c.id)));
    assert!(link_exists(&n.bridge));
    for p in ["bridge", "host", "none"] {
        assert!(matches!(root.net.remove(p), Err(NetError::Predefined(_))));
    }
    // by id prefix; and a duplicate name is refused
    assert_eq!(root.net.get(&n.id[..10]).unwrap().name, n.name);
    assert!(matches!(
        root.net.create(&n.name, &NetworkOptions::default()),
        Err(NetError::Exists(_))
    ));
    let pruned = root.net.prune().unwrap();
    assert_eq!(pruned, vec![idle.name.clone()]);
    assert!(!link_exists(&idle.bridge));
    assert_eq!(rules_with(&format!("berth-net:{}", idle.bridge)), 0);

    let listed = root.net.get(&n.name).unwrap();
    assert_eq!(listed.containers.len(), 1);
    let json = serde_json::to_value(&listed).unwrap();
    assert_eq!(json["Containers"][&c.id]["Name"], format!("n{}", c.id));

    root.net.release(&c.id).unwrap();
    root.net.remove(&n.id).unwrap();
    assert!(!link_exists(&n.bridge));
    assert_eq!(rules_with(&format!("berth-net:{}", n.bridge)), 0);
    assert!(matches!(root.net.get(&n.name), Err(NetError::NotFound(_))));
}

#[test]
fn explicit_subnet_gateway_and_internal() {
    let mut root = Root::new();
    let third = (std::process::id() % 200) as u8 + 20;
    let opts = NetworkOptions {
        subnet: Some(format!("10.123.{third}.0/28").parse().unwrap()),
        gateway: Some(format!("10.123.{third}.14").parse().unwrap()),
        internal: true,
        labels: [("a".to_string(), "b".to_string())].into(),
        ..Default::default()
    };
    let n = root.network(&opts);
    assert_eq!(n.gateway, opts.gateway);
    assert_eq!(n.labels["a"], "b");
    // Overlapping another berth network is refused.
    let overlap = NetworkOptions {
        subnet: Some(format!("10.123.{third}.0/24").parse().unwrap()),
        ..Default::default()
    };
    assert!(root.net.create(&unique("t"), &overlap).is_err());
    // A /28 has 14 hosts, one is the gateway: 13 endpoints, then exhausted.
    let boxes: Vec<Sandbox> = (0..14).map(|_| Sandbox::new()).collect();
    for b in &boxes[..13] {
        let ep = root.net.connect(&b.attach(&n.name)).unwrap();
        assert_ne!(Some(ep.ip), n.gateway);
        assert!(!ep.ip.to_string().ends_with(".15") && !ep.ip.to_string().ends_with(".0"));
    }
    assert!(matches!(
        root.net.connect(&boxes[13].attach(&n.name)),
        Err(NetError::Exhausted(_))
    ));
    // A released address is handed out again once it is the only one left.
    let freed = root.net.endpoints(&boxes[12].id).unwrap()[0].ip;
    root.net.release(&boxes[12].id).unwrap();
    let again = root.net.connect(&boxes[13].attach(&n.name)).unwrap();
    assert_eq!(again.ip, freed);
    // Internal: no default route, no way out, peers still reach each other.
    assert!(!boxes[0].sh_ok("ip route").contains("default"));
    let ip1 = root.net.endpoints(&boxes[1].id).unwrap()[0].ip;
    boxes[0].sh_ok(&format!("busybox ping -c1 -W2 {ip1}"));
    assert!(!boxes[0]
        .sh(&format!("busybox ping -c1 -W1 {}", host_ip()))
        .status
        .success());
    let net_marker = format!("berth-net:{}", n.bridge);
    assert_eq!(rules_with(&net_marker), 3, "internal network rules");
    // repair puts back flushed rules without doubling the present ones.
    drop_one_rule("filter", &net_marker);
    drop_one_rule("filter", &net_marker);
    assert_eq!(rules_with(&net_marker), 1);
    root.net.repair().unwrap();
    assert_eq!(rules_with(&net_marker), 3);
}

/// The one test that uses the shared default network (bridge device berth0).
#[test]
fn default_bridge_network() {
    let root = Root::new();
    let bridge = root.net.get("bridge").unwrap();
    assert_eq!(bridge.bridge, "berth0");
    assert_eq!(bridge.driver, "bridge");
    let names: Vec<String> = root
        .net
        .list()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    for p in ["bridge", "host", "none"] {
        assert!(names.contains(&p.to_string()));
    }
    assert!(root.net.connect(&Sandbox::new().attach("host")).is_err());

    let (a, b) = (Sandbox::new(), Sandbox::new());
    let ha = root.dir.path().join("hosts-a");
    let mut req = a.attach("bridge");
    req.hosts_file = Some(ha.clone());
    let ea = root.net.connect(&req).unwrap();
    let eb = root.net.connect(&b.attach("bridge")).unwrap();
    assert!(bridge.subnet.unwrap().contains(&ea.ip));
    assert!(link_exists("berth0"));
    let forward = run("iptables", &["-S", "FORWARD"]);
    assert!(forward.contains("-A FORWARD -j BERTH-FORWARD"), "{forward}");
    assert_eq!(forward.matches("BERTH-FORWARD").count(), 1, "{forward}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/conf/berth0/route_localnet")
            .unwrap()
            .trim(),
        "1"
    );
    // Reachable peers, but no peer names on the default network (as in Docker).
    b.sh_ok(&format!("busybox ping -c1 -W2 {}", ea.ip));
    let text = std::fs::read_to_string(&ha).unwrap();
    assert!(
        text.contains(&format!("{}\t{}", ea.ip, req.hostname)),
        "{text}"
    );
    assert!(!text.contains(&eb.ip.to_string()), "{text}");

    // berth0 is shared by every root on the host: a second root's containers get other
    // addresses (host-wide leases), and can reach the first root's.
    let other = Root::new();
    let c = Sandbox::new();
    let ec = other.net.connect(&c.attach("bridge")).unwrap();
    assert!(
        ec.ip != ea.ip && ec.ip != eb.ip,
        "{} vs {} {}",
        ec.ip,
        ea.ip,
        eb.ip
    );
    c.sh_ok(&format!("busybox ping -c1 -W2 {}", ea.ip));
    let lease = format!("/run/berth-net/leases/berth0/{}", ec.ip);
    assert!(std::path::Path::new(&lease).exists());
    other.net.release(&c.id).unwrap();
    assert!(!std::path::Path::new(&lease).exists(), "lease given back");

    root.net.release(&a.id).unwrap();
    root.net.release(&b.id).unwrap();
    assert!(!link_exists(&ea.host_veth));
}

#[test]
fn connect_and_release_are_fast() {
    let mut root = Root::new();
    let n = root.network(&NetworkOptions::default());
    let (mut connect, mut release) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        // The shape of `run --rm`: connect a created container, it runs and exits, release.
        let b = Sandbox::new();
        let id = b.id.clone();
        let t = std::time::Instant::now();
        root.net.connect(&b.attach(&n.name)).unwrap();
        connect.push(t.elapsed());
        drop(b);
        let t = std::time::Instant::now();
        root.net.release(&id).unwrap();
        release.push(t.elapsed());
    }
    connect.sort();
    release.sort();
    eprintln!("connect {connect:?}\nrelease after exit {release:?}");
    // Medians, debug build, shared machine: generous bounds that still catch a design
    // that spawns a process per step or waits for link deletion (~25 ms each).
    assert!(
        connect[2] < std::time::Duration::from_millis(50),
        "{connect:?}"
    );
    assert!(
        release[2] < std::time::Duration::from_millis(15),
        "{release:?}"
    );
}

/// Not a test on its own: the body of one berth "process" for
/// `concurrent_processes_share_one_root`, which runs this binary filtered to it.
#[test]
fn process_worker() {
    let Ok(root) = std::env::var("BERTH_NET_WORKER_ROOT") else {
        return;
    };
    let net = berth_net::Net::open(std::path::Path::new(&root)).unwrap();
    let cid = std::env::var("BERTH_NET_WORKER_CID").unwrap();
    match std::env::var("BERTH_NET_WORKER_NETNS") {
        Ok(netns) => {
            let req = berth_net::Attach {
                container_id: cid.clone(),
                name: cid,
                network: std::env::var("BERTH_NET_WORKER_NET").unwrap(),
                netns: netns.into(),
                ports: berth_net::parse_publish("80").unwrap(),
                ..Default::default()
            };
            let ep = net.connect(&req).unwrap();
            println!("WORKER-IP={}", ep.ip);
        }
        Err(_) => net.release(&cid).unwrap(),
    }
}

#[test]
fn concurrent_processes_share_one_root() {
    let mut root = Root::new();
    let n = root.network(&NetworkOptions::default());
    let boxes: Vec<Sandbox> = (0..8).map(|_| Sandbox::new()).collect();
    let worker = |b: &Sandbox, connect: bool| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([
            "--exact",
            "process_worker",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BERTH_NET_WORKER_ROOT", root.dir.path())
        .env("BERTH_NET_WORKER_CID", &b.id)
        .env("BERTH_NET_WORKER_NET", &n.name)
        .stdout(std::process::Stdio::piped());
        if connect {
            c.env("BERTH_NET_WORKER_NETNS", b.netns());
        }
        c.spawn().unwrap()
    };
    let children: Vec<_> = boxes.iter().map(|b| worker(b, true)).collect();
    let mut ips = HashSet::new();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success());
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let ip = out
            .lines()
            .find_map(|l| l.split("WORKER-IP=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {out}"))
            .to_string();
        ips.insert(ip);
    }
    assert_eq!(ips.len(), 8, "{ips:?}");
    let marker = format!("berth-ep:{}", &n.id[..12]);
    assert_eq!(rules_with(&marker), 8);
    let children: Vec<_> = boxes.iter().map(|b| worker(b, false)).collect();
    for c in children {
        assert!(c.wait_with_output().unwrap().status.success());
    }
    assert_eq!(rules_with(&marker), 0);
    assert!(root.net.get(&n.name).unwrap().containers.is_empty());
}
