//! What the controller must do to go from the desired state it applied last to the new one
//! (pure): start or restart the speaker (identity changed), hand it the new neighbor set or
//! originated prefixes, change blackholes, report new problems.

use std::collections::BTreeSet;

use crate::desired::{DesiredState, Problem};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The speaker must be (re)started: first state, or router id / ASN changed (every session
    /// resets anyway when they change). Implies every `set_*` below.
    pub restart_speaker: bool,
    /// The route-reflector cluster id changed (the node became or stopped being a reflector):
    /// set live, so no session drops during a topology switch.
    pub set_cluster_id: bool,
    pub set_neighbors: bool,
    pub set_originated: bool,
    pub set_blackholes: bool,
    /// Problems not reported for the previous state.
    pub new_problems: Vec<Problem>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

pub fn plan(prev: Option<&DesiredState>, next: &DesiredState) -> Plan {
    let known: BTreeSet<&Problem> = prev
        .map(|p| p.problems.iter().collect())
        .unwrap_or_default();
    let new_problems = next
        .problems
        .iter()
        .filter(|p| !known.contains(p))
        .cloned()
        .collect();
    let Some(prev) = prev else {
        return Plan {
            restart_speaker: true,
            set_cluster_id: true,
            set_neighbors: true,
            set_originated: true,
            set_blackholes: true,
            new_problems,
        };
    };
    let restart = prev.router_id != next.router_id || prev.asn != next.asn;
    Plan {
        restart_speaker: restart,
        set_cluster_id: restart || prev.cluster_id != next.cluster_id,
        set_neighbors: restart || prev.neighbors != next.neighbors,
        set_originated: restart || prev.originate != next.originate,
        set_blackholes: restart || prev.blackholes != next.blackholes,
        new_problems,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use bgp::config::NeighborConfig;

    use super::*;
    use crate::desired::{ObjectRef, Role};

    fn state() -> DesiredState {
        DesiredState {
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            asn: 64512,
            role: Role::FullMesh,
            cluster_id: None,
            neighbors: vec![NeighborConfig::new("10.0.0.2".parse().expect("ip"), 64512)],
            originate: ["10.244.1.0/24".parse().expect("prefix")].into(),
            blackholes: BTreeSet::new(),
            problems: vec![],
        }
    }

    #[test]
    fn plan_table() {
        let problem = Problem {
            object: ObjectRef::Node("n2".into()),
            reason: "InvalidAnnotation",
            message: "bad".into(),
        };
        type Change = Box<dyn Fn(&mut DesiredState)>;
        let cases: Vec<(&str, Change, Plan)> = vec![
            ("nothing changed", Box::new(|_| {}), Plan::default()),
            (
                "a neighbor more",
                Box::new(|s| {
                    s.neighbors
                        .push(NeighborConfig::new("10.0.0.3".parse().expect("ip"), 64512))
                }),
                Plan {
                    set_neighbors: true,
                    ..Plan::default()
                },
            ),
            (
                "became a reflector client: neighbor flag only",
                Box::new(|s| {
                    s.role = Role::ReflectorClient;
                    s.neighbors[0].route_reflector_client = true;
                }),
                Plan {
                    set_neighbors: true,
                    ..Plan::default()
                },
            ),
            (
                "became a reflector: cluster id set live, clients flagged",
                Box::new(|s| {
                    s.role = Role::Reflector;
                    s.cluster_id = Some(Ipv4Addr::new(244, 0, 0, 1));
                    s.neighbors[0].route_reflector_client = true;
                }),
                Plan {
                    set_cluster_id: true,
                    set_neighbors: true,
                    ..Plan::default()
                },
            ),
            (
                "ASN annotation changed",
                Box::new(|s| s.asn = 65001),
                Plan {
                    restart_speaker: true,
                    set_cluster_id: true,
                    set_neighbors: true,
                    set_originated: true,
                    set_blackholes: true,
                    ..Plan::default()
                },
            ),
            (
                "a service IP",
                Box::new(|s| {
                    s.originate
                        .insert("203.0.113.5/32".parse().expect("prefix"));
                }),
                Plan {
                    set_originated: true,
                    ..Plan::default()
                },
            ),
            (
                "a block",
                Box::new(|s| {
                    s.blackholes
                        .insert("10.244.0.0/26".parse().expect("prefix"));
                }),
                Plan {
                    set_blackholes: true,
                    ..Plan::default()
                },
            ),
            (
                "a new problem",
                Box::new(move |s| s.problems.push(problem.clone())),
                Plan {
                    new_problems: vec![Problem {
                        object: ObjectRef::Node("n2".into()),
                        reason: "InvalidAnnotation",
                        message: "bad".into(),
                    }],
                    ..Plan::default()
                },
            ),
        ];
        let prev = state();
        for (name, change, want) in cases {
            let mut next = state();
            change(&mut next);
            assert_eq!(plan(Some(&prev), &next), want, "{name}");
        }
        let first = plan(None, &prev);
        assert!(first.restart_speaker && first.set_neighbors && first.set_originated);
        // A problem already reported is not reported again.
        let mut with_problem = state();
        with_problem.problems.push(Problem {
            object: ObjectRef::Node("n2".into()),
            reason: "InvalidAnnotation",
            message: "bad".into(),
        });
        assert!(plan(Some(&with_problem), &with_problem.clone()).is_empty());
    }
}
