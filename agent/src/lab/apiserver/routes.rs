//! URL paths to what they address: discovery documents, health checks, a resource collection
//! (optionally in one namespace) or one object (or its `/status`).

use super::resources::{lookup, NAMESPACES, RESOURCES};
use super::status::ApiError;
use super::store::Part;

/// Longest request path accepted.
pub const MAX_PATH: usize = 2048;

#[derive(Debug, PartialEq)]
pub enum Route {
    Health,
    Version,
    CoreVersions,
    CoreResources,
    Groups,
    Group(String),
    GroupResources(String, String),
    /// `ns`: None = all namespaces (or a cluster-scoped resource).
    Collection {
        res: usize,
        ns: Option<String>,
    },
    Object {
        res: usize,
        ns: String,
        name: String,
        part: Part,
    },
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let nf = ApiError::path_not_found;
    match rest {
        // /namespaces/{ns}/{plural}[/{name}[/status]]
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" && *plural != "finalize" => {
            let res = lookup(group, version, plural).ok_or_else(nf)?;
            if !RESOURCES[res].namespaced {
                return Err(nf());
            }
            object_or_collection(res, Some((*ns).to_string()), tail)
        }
        [plural, tail @ ..] => {
            let res = lookup(group, version, plural).ok_or_else(nf)?;
            if RESOURCES[res].namespaced && !tail.is_empty() {
                return Err(nf());
            }
            object_or_collection(res, None, tail)
        }
        [] => Err(nf()),
    }
}

fn object_or_collection(res: usize, ns: Option<String>, tail: &[&str]) -> Result<Route, ApiError> {
    let part = match tail {
        [] => return Ok(Route::Collection { res, ns }),
        [_] => Part::Main,
        [_, "status"] if RESOURCES[res].status => Part::Status,
        _ => return Err(ApiError::path_not_found()),
    };
    let name = tail.first().copied().unwrap_or("").to_string();
    if name.is_empty() {
        return Err(ApiError::path_not_found());
    }
    Ok(Route::Object {
        res,
        ns: ns.unwrap_or_default(),
        name,
        part,
    })
}

/// Resolve a request path.
pub fn route(path: &str) -> Result<Route, ApiError> {
    if path.len() > MAX_PATH {
        return Err(ApiError::bad_request("request path too long"));
    }
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    match segs.as_slice() {
        ["healthz" | "readyz" | "livez", ..] => Ok(Route::Health),
        ["version"] => Ok(Route::Version),
        ["api"] => Ok(Route::CoreVersions),
        ["api", "v1"] => Ok(Route::CoreResources),
        ["api", "v1", rest @ ..] => resource_route("", "v1", rest),
        ["apis"] => Ok(Route::Groups),
        ["apis", g] if RESOURCES.iter().any(|r| r.group == *g && !g.is_empty()) => {
            Ok(Route::Group((*g).to_string()))
        }
        ["apis", g, v]
            if RESOURCES
                .iter()
                .any(|r| r.group == *g && r.version == *v && !g.is_empty()) =>
        {
            Ok(Route::GroupResources((*g).to_string(), (*v).to_string()))
        }
        ["apis", g, v, rest @ ..] if !g.is_empty() => resource_route(g, v, rest),
        _ => Err(ApiError::path_not_found()),
    }
}

/// The namespace object itself is addressed as `/api/v1/namespaces/{name}`.
pub fn is_namespace(res: usize) -> bool {
    res == NAMESPACES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let nodes = lookup("", "v1", "nodes").expect("nodes");
        let svc = lookup("", "v1", "services").expect("services");
        let leases = lookup("coordination.k8s.io", "v1", "leases").expect("leases");
        assert_eq!(
            route("/api/v1/nodes"),
            Ok(Route::Collection {
                res: nodes,
                ns: None
            })
        );
        assert_eq!(
            route("/api/v1/nodes/a/status"),
            Ok(Route::Object {
                res: nodes,
                ns: String::new(),
                name: "a".into(),
                part: Part::Status
            })
        );
        assert_eq!(
            route("/api/v1/namespaces/default/services/s"),
            Ok(Route::Object {
                res: svc,
                ns: "default".into(),
                name: "s".into(),
                part: Part::Main
            })
        );
        assert_eq!(
            route("/api/v1/services"),
            Ok(Route::Collection { res: svc, ns: None })
        );
        assert_eq!(
            route("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"),
            Ok(Route::Collection {
                res: leases,
                ns: Some("kube-system".into())
            })
        );
        assert_eq!(
            route("/api/v1/namespaces/kube-system"),
            Ok(Route::Object {
                res: NAMESPACES,
                ns: String::new(),
                name: "kube-system".into(),
                part: Part::Main
            })
        );
        assert_eq!(
            route("/api/v1/namespaces/x/status"),
            Ok(Route::Object {
                res: NAMESPACES,
                ns: String::new(),
                name: "x".into(),
                part: Part::Status
            })
        );
        assert!(route("/api/v1/services/s").is_err());
        assert!(route("/api/v1/configmaps/x").is_err());
        assert!(route("/api/v1/namespaces/default/configmaps/c/status").is_err());
        assert!(route("/api/v1/widgets").is_err());
        assert!(route("/apis/nope/v1").is_err());
        assert!(route(&"/a".repeat(2000)).is_err());
        assert_eq!(
            route("/apis/coordination.k8s.io/v1"),
            Ok(Route::GroupResources(
                "coordination.k8s.io".into(),
                "v1".into()
            ))
        );
        assert_eq!(route("/readyz"), Ok(Route::Health));
    }
}
