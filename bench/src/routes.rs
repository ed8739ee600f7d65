//! Route tables shaped like the Internet's, for both FIBs: the kernel's (one `ip -batch`) and
//! vrf-xdp's maps.
use std::collections::HashSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::{rngs::StdRng, Rng, SeedableRng};

use tests::netns::NetNs;

/// IPv4 prefix lengths in shares of a full table (roughly the public BGP table of 2024:
/// mostly /24, then /22–/23, /16–/21, few shorter).
pub const V4_MIX: [(u8, f64); 17] = [
    (24, 60.5),
    (23, 9.6),
    (22, 12.0),
    (21, 4.9),
    (20, 4.6),
    (19, 2.6),
    (18, 1.1),
    (17, 0.7),
    (16, 1.4),
    (15, 0.2),
    (14, 0.2),
    (13, 0.1),
    (12, 0.05),
    (11, 0.02),
    (10, 0.01),
    (9, 0.01),
    (8, 0.01),
];

/// IPv6 prefix lengths of a full table (mostly /48, then /32, /44, /40, /36, /29 …).
pub const V6_MIX: [(u8, f64); 14] = [
    (48, 45.0),
    (32, 12.0),
    (44, 9.0),
    (40, 6.0),
    (36, 5.0),
    (29, 3.0),
    (46, 3.0),
    (47, 3.0),
    (45, 2.0),
    (42, 2.0),
    (41, 1.0),
    (43, 1.0),
    (38, 1.0),
    (34, 1.0),
];

fn pick_len(rng: &mut StdRng, mix: &[(u8, f64)]) -> u8 {
    let total: f64 = mix.iter().map(|(_, w)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for (len, w) in mix {
        if x < *w {
            return *len;
        }
        x -= w;
    }
    mix[0].0
}

/// Public-looking unicast IPv4: not 0/8, 10/8, 127/8, 169.254/16, 172.16/12, 192.168/16 or
/// 224/3 (the benchmark's own subnets are in 10/8).
fn public_v4(a: u32) -> bool {
    let o = a.to_be_bytes();
    !(o[0] == 0
        || o[0] == 10
        || o[0] == 127
        || o[0] >= 224
        || (o[0] == 169 && o[1] == 254)
        || (o[0] == 172 && (16..32).contains(&o[1]))
        || (o[0] == 192 && o[1] == 168))
}

/// `n` distinct IPv4 prefixes with lengths drawn from [`V4_MIX`], in random order.
pub fn v4_table(n: usize, seed: u64) -> Vec<Ipv4Net> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = pick_len(&mut rng, &V4_MIX);
        let addr: u32 = rng.random();
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        let net = addr & mask;
        // The whole prefix must be public: check its first and last address.
        if !public_v4(net) || !public_v4(net | !mask) {
            continue;
        }
        if seen.insert((net, len)) {
            out.push(Ipv4Net::new(Ipv4Addr::from(net), len).expect("len <= 32"));
        }
    }
    out
}

/// `n` distinct IPv6 prefixes in 2000::/3 with lengths drawn from [`V6_MIX`].
pub fn v6_table(n: usize, seed: u64) -> Vec<Ipv6Net> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = pick_len(&mut rng, &V6_MIX);
        let addr: u128 = (rng.random::<u128>() >> 3) | (1u128 << 125);
        let mask = u128::MAX << (128 - u32::from(len));
        let net = addr & mask;
        if seen.insert((net, len)) {
            out.push(Ipv6Net::new(Ipv6Addr::from(net), len).expect("len <= 128"));
        }
    }
    out
}

/// A random address inside `prefix`.
pub fn address_in(prefix: IpNet, rng: &mut StdRng) -> IpAddr {
    match prefix {
        IpNet::V4(p) => {
            let host_bits = 32 - u32::from(p.prefix_len());
            let host = if host_bits == 0 {
                0
            } else {
                rng.random::<u32>() & (u32::MAX >> (32 - host_bits))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(p.network()) | host))
        }
        IpNet::V6(p) => {
            let host_bits = 128 - u32::from(p.prefix_len());
            let host = if host_bits == 0 {
                0
            } else {
                rng.random::<u128>() & (u128::MAX >> (128 - host_bits))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(p.network()) | host))
        }
    }
}

/// `ip -n NS -batch -` over `lines` (streamed on stdin); fails with ip's complaints.
pub fn ip_batch(ns: &NetNs, lines: impl Iterator<Item = String> + Send) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["-n", ns.name(), "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ip -batch")?;
    let mut stdin = child.stdin.take().context("ip -batch stdin")?;
    let written = std::thread::scope(|s| {
        let writer = s.spawn(move || -> std::io::Result<()> {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut stdin);
            for l in lines {
                w.write_all(l.as_bytes())?;
                w.write_all(b"\n")?;
            }
            w.flush()
        });
        writer.join()
    });
    let out = child.wait_with_output().context("waiting for ip -batch")?;
    if !out.status.success() {
        bail!(
            "ip -batch failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e).context("writing to ip -batch"),
        Err(_) => bail!("ip -batch writer panicked"),
    }
}

/// `route add PREFIX via GW dev DEV table T` for each prefix.
pub fn add_lines<'a>(
    prefixes: impl Iterator<Item = IpNet> + Send + 'a,
    via: IpAddr,
    dev: &'a str,
    table: u32,
) -> impl Iterator<Item = String> + Send + 'a {
    prefixes.map(move |p| format!("route add {p} via {via} dev {dev} table {table}"))
}
