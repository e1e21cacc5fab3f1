//! The network configuration list the agent writes for the container runtime (one
//! `routelet-cni` plugin), and its atomic, change-only write.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use ipnet::IpNet;
use serde_json::{json, Value};

use super::result::CURRENT_VERSION;

/// The plugin's `type` (the executable name the runtime looks up in its CNI bin dirs).
pub const PLUGIN_TYPE: &str = "routelet-cni";

/// The conflist: `{"cniVersion":"1.1.0","name":NETWORK,"plugins":[{"type":"routelet-cni",
/// "mtu":MTU,"ipam":{"ranges":[...],"dataDir":DIR}}]}` (`mtu` only when given).
pub fn render(network: &str, mtu: Option<u32>, ranges: &[IpNet], data_dir: &Path) -> Value {
    let ranges: Vec<String> = ranges.iter().map(ToString::to_string).collect();
    let mut plugin = json!({
        "type": PLUGIN_TYPE,
        "ipam": {"ranges": ranges, "dataDir": data_dir.display().to_string()},
    });
    if let Some(mtu) = mtu {
        plugin["mtu"] = json!(mtu);
    }
    json!({"cniVersion": CURRENT_VERSION, "name": network, "plugins": [plugin]})
}

/// Write `value` (pretty JSON) to `conf_dir/file_name` through a temporary file and a
/// rename, so a runtime never reads a half-written file. `Ok(false)` when the file already
/// holds exactly this content (nothing written). Creates `conf_dir` if needed.
pub fn write_conflist(conf_dir: &Path, file_name: &str, value: &Value) -> io::Result<bool> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let target = conf_dir.join(file_name);
    match fs::read(&target) {
        Ok(existing) if existing == bytes => return Ok(false),
        _ => {}
    }
    fs::create_dir_all(conf_dir)?;
    // A dot name without a .conf/.conflist/.json suffix: runtimes skip it.
    let tmp = conf_dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn render_matches_the_documented_shape_and_parses_as_plugin_config() {
        let ranges: Vec<IpNet> = vec![
            "10.244.1.0/24".parse().unwrap(),
            "2001:db8:244:1::/64".parse().unwrap(),
        ];
        let v = render(
            "routelet",
            Some(1450),
            &ranges,
            Path::new("/var/lib/routelet/cni"),
        );
        assert_eq!(
            v,
            json!({"cniVersion":"1.1.0","name":"routelet","plugins":[{"type":"routelet-cni",
                "mtu":1450,"ipam":{"ranges":["10.244.1.0/24","2001:db8:244:1::/64"],
                "dataDir":"/var/lib/routelet/cni"}}]})
        );
        // What a runtime hands the plugin: the list's name and version merged in.
        let mut plugin = v["plugins"][0].clone();
        plugin["name"] = v["name"].clone();
        plugin["cniVersion"] = v["cniVersion"].clone();
        let conf = crate::cni::config::parse(plugin.to_string().as_bytes()).unwrap();
        assert_eq!(conf.ranges, ranges);
        let no_mtu = render("routelet", None, &ranges, Path::new("/x"));
        assert!(no_mtu["plugins"][0].get("mtu").is_none());
    }

    #[test]
    fn write_is_atomic_and_reports_changes() {
        let dir = std::env::temp_dir().join(format!(
            "rlc-conflist-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let v = json!({"a": 1});
        assert!(write_conflist(&dir, "10-x.conflist", &v).unwrap());
        assert!(!write_conflist(&dir, "10-x.conflist", &v).unwrap());
        assert!(write_conflist(&dir, "10-x.conflist", &json!({"a": 2})).unwrap());
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["10-x.conflist".to_string()]);
        let back: Value =
            serde_json::from_slice(&fs::read(dir.join("10-x.conflist")).unwrap()).unwrap();
        assert_eq!(back, json!({"a": 2}));
        fs::remove_dir_all(&dir).unwrap();
    }
}
