//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`, `gt`/`lt`) and field
//! selectors (`metadata.name`, `metadata.namespace` and a few per-type fields), parsed and
//! matched with kube-apiserver's semantics.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector (all requirements must hold; empty = everything).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector(Vec<(String, Op)>);

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    super::meta::is_qualified_name(k)
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("found '{rest}', expected: '('"))?;
    let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    for v in &vals {
        if !super::meta::is_label_value(v) {
            return Err(format!("invalid label value: \"{v}\""));
        }
    }
    Ok(vals)
}

fn parse_requirement(req: &str) -> Result<(String, Op), String> {
    let req = req.trim();
    if let Some(key) = req.strip_prefix('!') {
        let key = key.trim();
        return if valid_key(key) {
            Ok((key.to_string(), Op::NotExists))
        } else {
            Err(format!("invalid label key \"{key}\""))
        };
    }
    let (key, op) = if let Some((k, v)) = req.split_once("!=") {
        (k, Op::Ne(v.trim().to_string()))
    } else if let Some((k, v)) = req.split_once("==") {
        (k, Op::Eq(v.trim().to_string()))
    } else if let Some((k, v)) = req.split_once('=') {
        (k, Op::Eq(v.trim().to_string()))
    } else if let Some((k, v)) = req.split_once('>') {
        (
            k,
            Op::Gt(
                v.trim()
                    .parse()
                    .map_err(|_| format!("invalid integer value: {v}"))?,
            ),
        )
    } else if let Some((k, v)) = req.split_once('<') {
        (
            k,
            Op::Lt(
                v.trim()
                    .parse()
                    .map_err(|_| format!("invalid integer value: {v}"))?,
            ),
        )
    } else {
        let mut words = req.splitn(2, char::is_whitespace);
        let k = words.next().unwrap_or("");
        let rest = words.next().unwrap_or("").trim();
        if rest.is_empty() {
            (k, Op::Exists)
        } else if let Some(set) = rest.strip_prefix("notin") {
            (k, Op::NotIn(parse_set(set)?))
        } else if let Some(set) = rest.strip_prefix("in") {
            (k, Op::In(parse_set(set)?))
        } else {
            return Err(format!("unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"));
        }
    };
    let key = key.trim();
    if !valid_key(key) {
        return Err(format!(
            "unable to parse requirement: invalid label key \"{key}\""
        ));
    }
    if let Op::Eq(v) | Op::Ne(v) = &op {
        if !super::meta::is_label_value(v) {
            return Err(format!(
                "unable to parse requirement: invalid label value: \"{v}\""
            ));
        }
    }
    Ok((key.to_string(), op))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        split_top_level(s)
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Does an object (its `metadata.labels`) match?
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        self.0.iter().all(|(k, op)| {
            let v = labels.and_then(|l| l.get(k)).and_then(Value::as_str);
            match op {
                Op::Eq(want) => v == Some(want.as_str()),
                Op::Ne(want) => v != Some(want.as_str()),
                Op::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::NotIn(set) => !v.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x < *n),
            }
        })
    }
}

/// A parsed field selector: `(JSON pointer, equal?, value)` terms, all must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// Fields a resource can be selected on besides `metadata.name` / `metadata.namespace`.
fn extra_fields(plural: &str) -> &'static [&'static str] {
    match plural {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
        ],
        "nodes" => &["spec.unschedulable"],
        "namespaces" => &["status.phase"],
        _ => &[],
    }
}

impl FieldSelector {
    pub fn parse(s: &str, plural: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut terms = Vec::new();
        for term in s.split(',') {
            let (field, eq, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !extra_fields(plural).contains(&field)
            {
                return Err(format!("field label not supported: {field}"));
            }
            let pointer = format!("/{}", field.replace('.', "/"));
            terms.push((pointer, eq, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(pointer, eq, want)| {
            let have = match obj.pointer(pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Null) | None => {
                    if pointer.ends_with("hostNetwork") || pointer.ends_with("unschedulable") {
                        "false".to_string()
                    } else {
                        String::new()
                    }
                }
                Some(other) => other.to_string(),
            };
            (have == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "n1", "namespace": "default", "labels": labels}})
    }

    #[test]
    fn label_operators() {
        let o = obj(json!({"app": "web", "tier": "front", "n": "5"}));
        let m = |s: &str| LabelSelector::parse(s).expect("parses").matches(&o);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("missing!=x"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web,db)"));
        assert!(m("missing notin (a)"));
        assert!(!m("missing in (a)"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m("n>4,n<6"));
        assert!(m("app in (web,db),tier=front"));
    }

    #[test]
    fn label_parse_errors() {
        assert!(LabelSelector::parse("a b c").is_err());
        assert!(LabelSelector::parse("in (a").is_err());
        assert!(LabelSelector::parse("x in a,b").is_err());
        assert!(LabelSelector::parse("bad key=1").is_err());
        assert!(LabelSelector::parse("k=-bad").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let f = |s: &str| {
            FieldSelector::parse(s, "nodes")
                .expect("parses")
                .matches(&o)
        };
        assert!(f("metadata.name=n1"));
        assert!(f("metadata.name==n1,metadata.namespace=default"));
        assert!(!f("metadata.name!=n1"));
        assert!(f("spec.unschedulable=false"));
        assert!(FieldSelector::parse("spec.foo=x", "nodes").is_err());
        assert!(FieldSelector::parse("garbage", "nodes").is_err());
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "a"}});
        assert!(FieldSelector::parse("spec.nodeName=a", "pods")
            .expect("parses")
            .matches(&pod));
    }
}
