//! The kernel memory of one table set: the sum of `bytes_memlock` (the
//! map's memory in use, as the kernel accounts it since 6.4: an LPM trie
//! counts its nodes, not its capacity) over the pinned maps of that set,
//! read with bpftool from the agent's pin directory.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// Both table sets' memory in KiB (`set_0_kib`, `set_1_kib`) and the
/// larger of the two (`table_set_kib`: the set that holds the policy),
/// with the maps counted. A table set's maps are the pins whose name ends
/// in `_0` or `_1` (firewall-common names every per-set map that way).
pub fn table_sets(pin_dir: &Path) -> Value {
    let mut sets = [0u64; 2];
    let mut maps: Vec<Value> = Vec::new();
    let Ok(entries) = std::fs::read_dir(pin_dir.join("maps")) else {
        return Value::Null;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let set = if name.ends_with("_0") {
            0
        } else if name.ends_with("_1") {
            1
        } else {
            continue;
        };
        let Some(bytes) = memlock(&entry.path()) else {
            continue;
        };
        sets[set] += bytes;
        maps.push(json!({ "map": name, "bytes": bytes }));
    }
    maps.sort_by(|a, b| a["map"].as_str().cmp(&b["map"].as_str()));
    let kib = |b: u64| b as f64 / 1024.0;
    json!({
        "table_set_kib": kib(sets[0].max(sets[1])),
        "set_0_kib": kib(sets[0]),
        "set_1_kib": kib(sets[1]),
        "maps": maps,
    })
}

/// `bytes_memlock` of the map pinned at `pin`.
fn memlock(pin: &Path) -> Option<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(pin)
        .output()
        .ok()?;
    let doc: Value = serde_json::from_slice(&out.stdout).ok()?;
    doc["bytes_memlock"].as_u64()
}
