//! The files `cargo xtask dist` ships from `dist/` agree with the code: the example
//! configuration parses (as shipped, and with its example uncommented) and the systemd unit
//! starts vrfd the way the README and the man page say.
use std::path::Path;

use vrf_user::config::Config;

fn dist_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn example_config_parses_as_shipped_and_uncommented() {
    let text = dist_file("vrf-xdp.toml");
    let shipped = Config::parse(&text).expect("the shipped example config parses");
    assert!(
        shipped.vrf.is_empty(),
        "the shipped config must declare nothing"
    );

    // The commented example after the "Example" line, uncommented.
    let example: String = text
        .lines()
        .skip_while(|l| !l.starts_with("# Example"))
        .skip(1)
        .filter_map(|l| l.strip_prefix("# ").or(l.strip_prefix("#")))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = Config::parse(&example)
        .unwrap_or_else(|e| panic!("the example does not parse: {e:#}\n{example}"));
    let names: Vec<&str> = config.vrf.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["red", "blue"]);
    assert!(config.vrf.iter().all(|v| !v.interfaces.is_empty()));
}

#[test]
fn systemd_unit_starts_vrfd_with_the_config() {
    let unit = dist_file("vrfd.service");
    let has = |line: &str| unit.lines().any(|l| l.trim() == line);
    assert!(has("Type=notify"));
    // A plain stop leaves the fast path to the next start (the dead-man switch guards it).
    assert!(has("ExecStart=/usr/sbin/vrfd --config /etc/vrf-xdp.toml"));
    assert!(has("ExecReload=/bin/kill -HUP $MAINPID"));
    // ProtectSystem=strict makes /run read-only; vrfd's lock lives in /run/vrf-xdp.
    assert!(has("ProtectSystem=strict"));
    assert!(has("RuntimeDirectory=vrf-xdp"));
    assert!(has("Restart=on-failure"));
    for cap in [
        "CAP_BPF",
        "CAP_NET_ADMIN",
        "CAP_SYS_ADMIN",
        "CAP_PERFMON",
        "CAP_SYS_RESOURCE",
    ] {
        for key in ["CapabilityBoundingSet=", "AmbientCapabilities="] {
            let line = unit
                .lines()
                .find(|l| l.starts_with(key))
                .unwrap_or_else(|| panic!("no {key}"));
            assert!(
                line.split(['=', ' ']).any(|c| c == cap),
                "{key} lacks {cap}"
            );
        }
    }
    // It would make /sys/fs/bpf read-only: no pins for vrfctl.
    assert!(!unit
        .lines()
        .any(|l| l.trim_start().starts_with("ProtectKernelTunables=yes")));
}
