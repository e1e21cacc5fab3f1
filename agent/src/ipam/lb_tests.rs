//! Table-driven tests of LoadBalancer IP allocation.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;
use crate::agent_config::Pool;
use crate::desired::ServiceKey;

fn pools() -> Vec<Pool> {
    vec![
        Pool {
            name: "default".into(),
            cidrs: vec![
                "203.0.113.0/30".parse().expect("cidr"),
                "2001:db8:5::/126".parse().expect("cidr"),
            ],
            auto_assign: true,
        },
        Pool {
            name: "reserved".into(),
            cidrs: vec!["198.51.100.8/31".parse().expect("cidr")],
            auto_assign: false,
        },
    ]
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn req(created: &str) -> LbRequest {
    LbRequest {
        created: created.into(),
        ..LbRequest::default()
    }
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("default", name)
}

fn assigned(v: &[&str]) -> LbOutcome {
    LbOutcome::Assigned(v.iter().map(|s| ip(s)).collect())
}

#[test]
fn allocation_table() {
    struct Case {
        name: &'static str,
        services: Vec<(&'static str, LbRequest)>,
        expect: Vec<(&'static str, Result<Vec<&'static str>, &'static str>)>,
    }
    let cases = vec![
        Case {
            name: "auto-assign skips the network and broadcast address of a /30",
            services: vec![("a", req("1")), ("b", req("2")), ("c", req("3"))],
            expect: vec![
                ("a", Ok(vec!["203.0.113.1"])),
                ("b", Ok(vec!["203.0.113.2"])),
                ("c", Err("no free IPv4 address in pools `default`")),
            ],
        },
        Case {
            name: "an existing assignment stays with its service, older first",
            services: vec![
                ("a", req("2")),
                (
                    "z",
                    LbRequest {
                        current: vec![ip("203.0.113.1")],
                        ..req("1")
                    },
                ),
            ],
            expect: vec![
                ("z", Ok(vec!["203.0.113.1"])),
                ("a", Ok(vec!["203.0.113.2"])),
            ],
        },
        Case {
            name: "the same address held twice: the older service keeps it",
            services: vec![
                (
                    "new",
                    LbRequest {
                        current: vec![ip("203.0.113.2")],
                        ..req("5")
                    },
                ),
                (
                    "old",
                    LbRequest {
                        current: vec![ip("203.0.113.2")],
                        ..req("4")
                    },
                ),
            ],
            expect: vec![
                ("old", Ok(vec!["203.0.113.2"])),
                ("new", Ok(vec!["203.0.113.1"])),
            ],
        },
        Case {
            name: "requested address honoured, also from a pool without auto_assign",
            services: vec![
                (
                    "a",
                    LbRequest {
                        requested: vec![ip("203.0.113.2")],
                        ..req("1")
                    },
                ),
                (
                    "b",
                    LbRequest {
                        requested: vec![ip("198.51.100.9")],
                        ..req("2")
                    },
                ),
            ],
            expect: vec![
                ("a", Ok(vec!["203.0.113.2"])),
                ("b", Ok(vec!["198.51.100.9"])),
            ],
        },
        Case {
            name: "requested address in use",
            services: vec![
                (
                    "a",
                    LbRequest {
                        current: vec![ip("203.0.113.1")],
                        ..req("1")
                    },
                ),
                (
                    "b",
                    LbRequest {
                        requested: vec![ip("203.0.113.1")],
                        ..req("2")
                    },
                ),
            ],
            expect: vec![
                ("a", Ok(vec!["203.0.113.1"])),
                (
                    "b",
                    Err("requested address 203.0.113.1 is in use by service default/a"),
                ),
            ],
        },
        Case {
            name: "requested address outside every pool, or the reserved network address",
            services: vec![
                (
                    "a",
                    LbRequest {
                        requested: vec![ip("192.0.2.50")],
                        ..req("1")
                    },
                ),
                (
                    "b",
                    LbRequest {
                        requested: vec![ip("203.0.113.0")],
                        ..req("2")
                    },
                ),
            ],
            expect: vec![
                (
                    "a",
                    Err("requested address 192.0.2.50 is not in pools `default`, `reserved`"),
                ),
                ("b", Err("requested address 203.0.113.0 is not in pools")),
            ],
        },
        Case {
            name: "named pool; unknown pool waits",
            services: vec![
                (
                    "a",
                    LbRequest {
                        pool: Some("reserved".into()),
                        ..req("1")
                    },
                ),
                (
                    "b",
                    LbRequest {
                        pool: Some("nope".into()),
                        ..req("2")
                    },
                ),
            ],
            expect: vec![
                ("a", Ok(vec!["198.51.100.8"])),
                ("b", Err("pool `nope` (routelet.io/pool) does not exist")),
            ],
        },
        Case {
            name: "a current address outside the service's pool is given up",
            services: vec![(
                "a",
                LbRequest {
                    pool: Some("reserved".into()),
                    current: vec![ip("203.0.113.1")],
                    ..req("1")
                },
            )],
            expect: vec![("a", Ok(vec!["198.51.100.8"]))],
        },
        Case {
            name: "dual stack: one address per family",
            services: vec![(
                "a",
                LbRequest {
                    families: vec![true, false],
                    ..req("1")
                },
            )],
            expect: vec![("a", Ok(vec!["203.0.113.1", "2001:db8:5::"]))],
        },
        Case {
            name: "IPv6 only",
            services: vec![(
                "a",
                LbRequest {
                    families: vec![false],
                    ..req("1")
                },
            )],
            expect: vec![("a", Ok(vec!["2001:db8:5::"]))],
        },
        Case {
            name: "prefer dual stack in a v4-only pool: partial; require dual stack: waits",
            services: vec![
                (
                    "a",
                    LbRequest {
                        pool: Some("reserved".into()),
                        families: vec![true, false],
                        ..req("1")
                    },
                ),
                (
                    "b",
                    LbRequest {
                        pool: Some("reserved".into()),
                        families: vec![true, false],
                        require_all_families: true,
                        ..req("2")
                    },
                ),
                (
                    "c",
                    LbRequest {
                        pool: Some("reserved".into()),
                        ..req("3")
                    },
                ),
            ],
            expect: vec![
                ("a", Ok(vec!["198.51.100.8"])),
                ("b", Err("no free IPv6 address in pool `reserved`")),
                // b's IPv4 address went back to the pool.
                ("c", Ok(vec!["198.51.100.9"])),
            ],
        },
    ];
    let pools = pools();
    for c in cases {
        let requests: BTreeMap<ServiceKey, LbRequest> =
            c.services.into_iter().map(|(n, r)| (key(n), r)).collect();
        let got = allocate(&pools, &requests);
        assert_eq!(got.len(), requests.len(), "{}", c.name);
        for (name, want) in c.expect {
            let outcome = got.get(&key(name)).expect("every service has an outcome");
            match (want, outcome) {
                (Ok(ips), o) => assert_eq!(o, &assigned(&ips), "{}: {name}", c.name),
                (Err(reason), LbOutcome::Pending(r)) => {
                    assert!(r.contains(reason), "{}: {name}: {r}", c.name)
                }
                (Err(reason), o) => assert!(
                    matches!(o, LbOutcome::Pending(_)),
                    "{}: {name}: expected pending ({reason}), got {o:?}",
                    c.name
                ),
            }
        }
    }
}

/// No address is ever handed out twice, whatever the mix of requests.
#[test]
fn never_twice() {
    let pools = pools();
    let mut requests = BTreeMap::new();
    for i in 0..12u8 {
        let mut r = req(&format!("{:02}", i % 5));
        if i % 3 == 0 {
            r.current = vec![ip("203.0.113.1")];
        }
        if i % 4 == 0 {
            r.requested = vec![ip("203.0.113.2")];
        }
        if i % 2 == 0 {
            r.families = vec![true, false];
        }
        requests.insert(key(&format!("s{i}")), r);
    }
    let got = allocate(&pools, &requests);
    let mut seen = std::collections::BTreeSet::new();
    for o in got.values() {
        if let LbOutcome::Assigned(ips) = o {
            for ip in ips {
                assert!(seen.insert(*ip), "{ip} handed out twice: {got:?}");
            }
        }
    }
    assert!(seen.len() >= 3, "{got:?}");
}
