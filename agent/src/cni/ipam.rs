//! The plugin's on-disk address allocator (host-local style): one file per allocated
//! address under `<dataDir>/<network>/`, created with O_CREAT|O_EXCL and holding
//! `containerID\nifname\nhostVeth\n`, a `last_reserved_ip.ipv4|ipv6` hint per family, and an
//! exclusive flock on `<dataDir>/<network>/lock` held by [`Store`] for a whole command, so
//! concurrent plugin processes never hand out one address twice.
//!
//! Never handed out: a range's network address, its first usable address (the node's: VTEP /
//! gateway) and, for IPv4, its broadcast address.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};

/// File name of the lock inside a network's state directory.
pub const LOCK_FILE: &str = "lock";

/// Why an allocator operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("no free address in {ranges}")]
    Exhausted { ranges: String },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IpamError + 'a {
    move |source| IpamError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Who an address belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
    pub host_veth: String,
}

/// One allocated address and its owner as read from disk (an unreadable or truncated file
/// gives empty owner fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ip: IpAddr,
    pub owner: Owner,
}

impl Record {
    pub fn belongs_to(&self, container_id: &str, ifname: &str) -> bool {
        self.owner.container_id == container_id && self.owner.ifname == ifname
    }
}

// ---- pure address arithmetic ----

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// First and last address of `range` that may be handed out, as integers.
fn usable_bounds(range: &IpNet) -> (u128, u128) {
    let first = to_u128(range.network()) + 2;
    let broadcast = to_u128(range.broadcast());
    let last = if range.addr().is_ipv4() {
        broadcast.saturating_sub(1)
    } else {
        broadcast
    };
    (first, last)
}

/// Whether `ip` is one `range` never hands out (or is outside it).
pub fn is_reserved(range: &IpNet, ip: IpAddr) -> bool {
    if !range.contains(&ip) {
        return true;
    }
    let (first, last) = usable_bounds(range);
    let n = to_u128(ip);
    n < first || n > last
}

/// How many addresses `range` can hand out.
pub fn capacity(range: &IpNet) -> u128 {
    let (first, last) = usable_bounds(range);
    if last < first {
        0
    } else {
        last - first + 1
    }
}

/// The candidate after `prev` (or the first usable address), wrapping at the range end.
pub fn next_candidate(range: &IpNet, prev: Option<IpAddr>) -> IpAddr {
    let (first, last) = usable_bounds(range);
    let v4 = range.addr().is_ipv4();
    let n = match prev.filter(|p| range.contains(p)).map(to_u128) {
        Some(p) if p >= first && p < last => p + 1,
        _ => first,
    };
    from_u128(v4, n)
}

fn family_name(v4: bool) -> &'static str {
    if v4 {
        "ipv4"
    } else {
        "ipv6"
    }
}

/// A file name that is an address (`10.244.1.5`, `2001:db8::5`); other files are not records.
fn parse_record_name(name: &str) -> Option<IpAddr> {
    name.parse().ok()
}

fn parse_owner(content: &str) -> Owner {
    let mut lines = content.lines().map(str::trim);
    let mut next = || lines.next().unwrap_or_default().to_string();
    Owner {
        container_id: next(),
        ifname: next(),
        host_veth: next(),
    }
}

// ---- the locked store ----

/// A network's state directory with its lock held until drop.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Store {
    /// Create `<data_dir>/<network>/` if needed and take the exclusive lock (blocks while
    /// another plugin process holds it).
    pub fn open(data_dir: &Path, network: &str) -> Result<Store, IpamError> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(io_err("cannot create state directory", &dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("cannot open lock file", &lock_path))?;
        let lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| IpamError::Io {
                what: "cannot lock",
                path: lock_path.clone(),
                source: io::Error::from(errno),
            })?;
        Ok(Store { dir, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every allocated address with its owner.
    pub fn records(&self) -> Result<Vec<Record>, IpamError> {
        let entries = fs::read_dir(&self.dir).map_err(io_err("cannot read", &self.dir))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("cannot read", &self.dir))?;
            let Some(ip) = entry.file_name().to_str().and_then(parse_record_name) else {
                continue;
            };
            let content = fs::read_to_string(entry.path()).unwrap_or_default();
            out.push(Record {
                ip,
                owner: parse_owner(&content),
            });
        }
        out.sort_by_key(|r| r.ip);
        Ok(out)
    }

    /// The record of one address, if allocated.
    pub fn record(&self, ip: IpAddr) -> Result<Option<Record>, IpamError> {
        let path = self.dir.join(ip.to_string());
        match fs::read_to_string(&path) {
            Ok(content) => Ok(Some(Record {
                ip,
                owner: parse_owner(&content),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &path)(e)),
        }
    }

    /// The addresses of one attachment.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Vec<Record>, IpamError> {
        Ok(self
            .records()?
            .into_iter()
            .filter(|r| r.belongs_to(container_id, ifname))
            .collect())
    }

    /// One address per family that has a range: the attachment's existing one when it has
    /// one inside the ranges (idempotent ADD), else a new one. Returns `(address, range,
    /// newly allocated)`. When a family is exhausted, addresses this call allocated are
    /// released again before the error is returned.
    pub fn allocate(
        &self,
        ranges: &[IpNet],
        owner: &Owner,
    ) -> Result<Vec<(IpAddr, IpNet, bool)>, IpamError> {
        let existing = self.find(&owner.container_id, &owner.ifname)?;
        let mut out: Vec<(IpAddr, IpNet, bool)> = Vec::new();
        for v4 in [true, false] {
            let family: Vec<IpNet> = ranges
                .iter()
                .filter(|r| r.addr().is_ipv4() == v4)
                .copied()
                .collect();
            if family.is_empty() {
                continue;
            }
            let reuse = existing.iter().find_map(|r| {
                family
                    .iter()
                    .find(|range| !is_reserved(range, r.ip))
                    .map(|range| (r.ip, *range))
            });
            if let Some((ip, range)) = reuse {
                out.push((ip, range, false));
                continue;
            }
            match self.allocate_family(&family, owner, v4) {
                Ok(Some((ip, range))) => out.push((ip, range, true)),
                Ok(None) => {
                    self.rollback(&out);
                    let ranges = family
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(IpamError::Exhausted { ranges });
                }
                Err(e) => {
                    self.rollback(&out);
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    fn rollback(&self, allocated: &[(IpAddr, IpNet, bool)]) {
        for (ip, _, new) in allocated {
            if *new {
                let _ = self.release(*ip);
            }
        }
    }

    fn last_reserved_path(&self, v4: bool) -> PathBuf {
        self.dir
            .join(format!("last_reserved_ip.{}", family_name(v4)))
    }

    fn allocate_family(
        &self,
        family: &[IpNet],
        owner: &Owner,
        v4: bool,
    ) -> Result<Option<(IpAddr, IpNet)>, IpamError> {
        let last_path = self.last_reserved_path(v4);
        let last: Option<IpAddr> = fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        // Start in the range holding the last reservation, then the others in order.
        let start = family
            .iter()
            .position(|r| last.is_some_and(|l| r.contains(&l)))
            .unwrap_or(0);
        let order = family.iter().cycle().skip(start).take(family.len());
        for (i, range) in order.enumerate() {
            let mut candidate = next_candidate(range, if i == 0 { last } else { None });
            let mut tries = capacity(range);
            while tries > 0 {
                tries -= 1;
                if self.try_claim(candidate, owner)? {
                    let path = last_path.clone();
                    fs::write(&path, format!("{candidate}\n"))
                        .map_err(io_err("cannot write", &path))?;
                    return Ok(Some((candidate, *range)));
                }
                candidate = next_candidate(range, Some(candidate));
            }
        }
        Ok(None)
    }

    /// Create the record file of `ip` exclusively; `false` when it already exists.
    fn try_claim(&self, ip: IpAddr, owner: &Owner) -> Result<bool, IpamError> {
        let path = self.dir.join(ip.to_string());
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err("cannot create", &path)(e)),
        };
        let content = format!(
            "{}\n{}\n{}\n",
            owner.container_id, owner.ifname, owner.host_veth
        );
        if let Err(e) = file
            .write_all(content.as_bytes())
            .and_then(|()| file.sync_all())
        {
            let _ = fs::remove_file(&path);
            return Err(io_err("cannot write", &path)(e));
        }
        Ok(true)
    }

    /// Remove the record of `ip`; `false` when there was none.
    pub fn release(&self, ip: IpAddr) -> Result<bool, IpamError> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("cannot remove", &path)(e)),
        }
    }
}

/// `(used, capacity)` of `range` in network `network`'s state under `data_dir`: how many
/// addresses of the range are allocated and how many it can hand out at most (saturated to
/// `u64`). A missing state directory means nothing is used. Reads without the lock (a
/// snapshot is enough to decide whether to take another pod block).
pub fn usage(data_dir: &Path, network: &str, range: &IpNet) -> io::Result<(u64, u64)> {
    let cap = u64::try_from(capacity(range)).unwrap_or(u64::MAX);
    let dir = data_dir.join(network);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, cap)),
        Err(e) => return Err(e),
    };
    let mut used = 0u64;
    for entry in entries {
        let entry = entry?;
        if let Some(ip) = entry.file_name().to_str().and_then(parse_record_name) {
            if !is_reserved(range, ip) {
                used += 1;
            }
        }
    }
    Ok((used, cap))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn owner(c: &str) -> Owner {
        Owner {
            container_id: c.into(),
            ifname: "eth0".into(),
            host_veth: format!("rl{c}"),
        }
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "rlc-ipam-{}-{tag}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reservations_and_capacity() {
        let r = net("10.244.1.0/24");
        assert!(is_reserved(&r, ip("10.244.1.0")));
        assert!(is_reserved(&r, ip("10.244.1.1")));
        assert!(is_reserved(&r, ip("10.244.1.255")));
        assert!(is_reserved(&r, ip("10.244.2.5")));
        assert!(!is_reserved(&r, ip("10.244.1.2")));
        assert!(!is_reserved(&r, ip("10.244.1.254")));
        assert_eq!(capacity(&r), 253);
        assert_eq!(capacity(&net("10.0.0.0/30")), 1);
        let v6 = net("2001:db8::/64");
        assert!(is_reserved(&v6, ip("2001:db8::")));
        assert!(is_reserved(&v6, ip("2001:db8::1")));
        assert!(!is_reserved(&v6, ip("2001:db8::ffff:ffff:ffff:ffff")));
        assert_eq!(capacity(&v6), (1u128 << 64) - 2);
    }

    #[test]
    fn candidates_wrap_inside_the_usable_span() {
        let r = net("10.0.0.0/29");
        assert_eq!(next_candidate(&r, None), ip("10.0.0.2"));
        assert_eq!(next_candidate(&r, Some(ip("10.0.0.2"))), ip("10.0.0.3"));
        assert_eq!(next_candidate(&r, Some(ip("10.0.0.6"))), ip("10.0.0.2"));
        assert_eq!(next_candidate(&r, Some(ip("192.0.2.1"))), ip("10.0.0.2"));
    }

    #[test]
    fn allocate_is_idempotent_and_round_robin() {
        let tmp = TempDir::new("rr");
        let ranges = [net("10.0.0.0/29"), net("2001:db8::/120")];
        let s = Store::open(&tmp.0, "net").unwrap();
        let a = s.allocate(&ranges, &owner("a")).unwrap();
        assert_eq!(a[0].0, ip("10.0.0.2"));
        assert_eq!(a[1].0, ip("2001:db8::2"));
        assert!(a[0].2 && a[1].2);
        let again = s.allocate(&ranges, &owner("a")).unwrap();
        assert_eq!(
            again.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![a[0].0, a[1].0]
        );
        assert!(!again[0].2);
        let b = s.allocate(&ranges, &owner("b")).unwrap();
        assert_eq!(b[0].0, ip("10.0.0.3"));
        // Releasing a does not make the next allocation reuse it right away.
        assert!(s.release(a[0].0).unwrap());
        assert!(!s.release(a[0].0).unwrap());
        let c = s.allocate(&ranges, &owner("c")).unwrap();
        assert_eq!(c[0].0, ip("10.0.0.4"));
        let rec = s.record(ip("10.0.0.3")).unwrap().unwrap();
        assert_eq!(rec.owner, owner("b"));
        assert_eq!(s.find("c", "eth0").unwrap().len(), 2);
        assert_eq!(
            usage(&tmp.0, "net", &ranges[0]).unwrap(),
            (2, 5),
            "b and c hold v4 addresses"
        );
        assert_eq!(usage(&tmp.0, "other", &ranges[0]).unwrap(), (0, 5));
    }

    #[test]
    fn exhaustion_leaves_nothing_behind() {
        let tmp = TempDir::new("full");
        let ranges = [net("2001:db8::/64"), net("10.0.0.0/30")];
        let s = Store::open(&tmp.0, "net").unwrap();
        s.allocate(&ranges, &owner("a")).unwrap();
        let err = s.allocate(&ranges, &owner("b")).unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
        assert!(err.to_string().contains("10.0.0.0/30"), "{err}");
        // b got neither family.
        assert!(s.find("b", "eth0").unwrap().is_empty());
        assert_eq!(s.records().unwrap().len(), 2);
    }

    #[test]
    fn a_second_range_is_used_when_the_first_is_full() {
        let tmp = TempDir::new("two");
        let ranges = [net("10.0.0.0/30"), net("10.0.1.0/30")];
        let s = Store::open(&tmp.0, "net").unwrap();
        assert_eq!(
            s.allocate(&ranges, &owner("a")).unwrap()[0].0,
            ip("10.0.0.2")
        );
        assert_eq!(
            s.allocate(&ranges, &owner("b")).unwrap()[0].0,
            ip("10.0.1.2")
        );
        assert!(s.allocate(&ranges, &owner("c")).is_err());
    }

    #[test]
    fn concurrent_stores_never_share_an_address() {
        let tmp = TempDir::new("conc");
        let dir = tmp.0.clone();
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let s = Store::open(&dir, "net").unwrap();
                    s.allocate(&[net("10.0.0.0/24")], &owner(&format!("c{i}")))
                        .unwrap()[0]
                        .0
                })
            })
            .collect();
        let mut ips: Vec<IpAddr> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 16);
    }
}
