//! The program's clock cache lives in two extra `VFW_TELEMETRY` slots, so
//! that map has more entries than a build before it pinned: opening such
//! pins migrates to the new maps and carries the event counters (sent,
//! rate-limited, ring full) over, per CPU.

mod support;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use aya::maps::{Map, MapData, PerCpuArray, PerCpuValues};
use firewall_common::{TELEMETRY, TELEMETRY_COUNT};
use support::*;
use vaultfw::dataplane::{BpfLogLevel, Capacity, Dataplane};
use vaultfw::paths::PinDir;
use vaultfw::policy::parse_toml;

const POLICY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]
"#;
const DENIED: [u8; 4] = [198, 51, 100, 7];
/// The slots a build before the clock cache pinned.
const PREVIOUS_SLOTS: u32 = 3;

/// Removes the test's pin directory, even on failure.
struct RemovePins(PathBuf);

impl Drop for RemovePins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(pins: &PinDir) -> Dataplane {
    let validated = parse_toml(POLICY).expect("test policy valid");
    let capacity = Capacity::for_ip_rule_limit(validated.policy.limits.ip_rules as u32);
    let mut dataplane =
        Dataplane::open_pinned(capacity, pins.clone(), BpfLogLevel::Off).expect("open pins");
    let tables = vaultfw::compile::compile_next(
        &validated.policy,
        &Default::default(),
        dataplane.hit_slots(),
        &dataplane.active_tables(),
        &vaultfw::clock::MonotonicClock::now(),
    )
    .with_access_log(100, false);
    let generation = dataplane.generation() + 1;
    dataplane.apply(&tables, generation).expect("apply");
    dataplane
}

fn per_cpu(path: &std::path::Path) -> PerCpuArray<MapData, u64> {
    let data = MapData::from_pin(path).expect("open the pinned telemetry map");
    PerCpuArray::try_from(Map::PerCpuArray(data)).expect("a per-CPU array")
}

/// A per-CPU array of u64 named VFW_TELEMETRY with `entries` slots, pinned
/// at `path` (BPF_MAP_CREATE and BPF_OBJ_PIN, as a build before pinned it).
fn pin_telemetry_map(path: &std::path::Path, entries: u32) {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
    // union bpf_attr's map-create member: type, key size, value size,
    // max entries, flags, inner map fd, numa node, then the name.
    let mut attr = [0u8; 128];
    for (i, v) in [BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, entries]
        .iter()
        .enumerate()
    {
        attr[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    attr[28..28 + TELEMETRY.len()].copy_from_slice(TELEMETRY.as_bytes());
    // SAFETY: a zeroed bpf_attr of the size passed; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_mut_ptr(), 128u32) };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the kernel just returned this fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut pin = [0u8; 128];
    pin[..8].copy_from_slice(&(c_path.as_ptr() as u64).to_ne_bytes());
    pin[8..12].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    // SAFETY: as above; the kernel reads the path while we hold it.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, pin.as_mut_ptr(), 128u32) };
    assert_eq!(ret, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
}

#[test]
fn event_counters_pinned_with_the_previous_telemetry_shape_carry_over() {
    if !require_root() {
        return;
    }
    let root = PathBuf::from(format!(
        "/sys/fs/bpf/vfwtest-telemetry-{}",
        std::process::id()
    ));
    let _remove = RemovePins(root.clone());
    let pins = PinDir::new(&root);

    // A run that logs denied SYNs, then stops (its pins stay).
    let before = {
        let dataplane = open(&pins);
        for _ in 0..3 {
            assert_eq!(dataplane.test_run(&tcp_syn(DENIED, 443)).unwrap(), XDP_DROP);
        }
        dataplane.event_totals().expect("event counters")
    };
    assert!(before.sent >= 1, "the run logged: {before:?}");

    // What the build before the clock cache leaves pinned: the same
    // counters in a VFW_TELEMETRY of three slots.
    let pin = pins.map(TELEMETRY);
    let counts: Vec<PerCpuValues<u64>> = {
        let current = per_cpu(&pin);
        (0..PREVIOUS_SLOTS)
            .map(|slot| current.get(&slot, 0).expect("read a counter"))
            .collect()
    };
    std::fs::remove_file(&pin).expect("unpin the telemetry map");
    pin_telemetry_map(&pin, PREVIOUS_SLOTS);
    {
        let mut previous = per_cpu(&pin);
        for (slot, values) in counts.into_iter().enumerate() {
            previous
                .set(slot as u32, values, 0)
                .expect("write a counter");
        }
    }

    let mut dataplane = open(&pins);
    assert!(dataplane.migrating(), "another shape: the filter moves");
    assert_eq!(
        dataplane.event_totals().expect("event counters"),
        before,
        "the event counters carried over"
    );
    dataplane.commit_pins().expect("commit the new pins");
    drop(dataplane);
    assert_eq!(
        per_cpu(&pin).len(),
        TELEMETRY_COUNT,
        "the pin holds this build's shape"
    );
}
