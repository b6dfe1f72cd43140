//! The pin directory on bpffs: making sure bpffs is mounted, creating the
//! directory (0700), deciding which pinned maps can be reused by a newly
//! loaded program, and removing everything on detach.
//!
//! A pinned map is reused when its shape (type, key size, value size,
//! capacity) is what this build's program declares; that is how rules and
//! counters survive a restart or an upgrade. A map whose shape changed, or
//! a compiled table written in another layout (its magic), is
//! unpinned (the running program keeps its reference until the link moves
//! to the new program) and created anew.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use aya::maps::{MapInfo, MapType};
use firewall_common::cpt::{CPT_0, CPT_1};
use firewall_common::{ACTIVE_SET, MAPS, MapKind, POLICY_CONFIG, PolicyConfig};

use super::{Capacity, DataplaneError};
use crate::paths::{BPFFS_MOUNT, PinDir};

/// bpffs's `statfs` magic (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The shape the kernel reports for a map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct MapShape {
    pub name: &'static str,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl MapShape {
    /// The shape as a log record's object: `{"name", "type" (snake case:
    /// `"lpm_trie"`), "key_size", "value_size", "max_entries"}` (sizes in
    /// bytes).
    fn record(&self) -> serde_json::Value {
        let mut map_type = String::new();
        for (i, c) in format!("{:?}", self.map_type).chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                map_type.push('_');
            }
            map_type.push(c.to_ascii_lowercase());
        }
        serde_json::json!({
            "name": self.name,
            "type": map_type,
            "key_size": self.key_size,
            "value_size": self.value_size,
            "max_entries": self.max_entries,
        })
    }
}

/// Every pinned map of the program with the shape this build gives it:
/// the `firewall_common` layout, entries sized by `capacity`. A map each
/// program owns (the aya-log ring buffer) is left out: it is never pinned,
/// so a build that adds or drops it adopts the pins as they are.
pub(super) fn expected_shapes(capacity: &Capacity) -> Vec<MapShape> {
    MAPS.iter()
        .filter(|spec| spec.pinned)
        .map(|spec| MapShape {
            name: spec.name,
            map_type: map_type(spec.kind),
            key_size: spec.key_size,
            value_size: spec.value_size,
            max_entries: capacity.entries(spec),
        })
        .collect()
}

/// aya's name for a layout's map type.
fn map_type(kind: MapKind) -> MapType {
    match kind {
        MapKind::Array => MapType::Array,
        MapKind::PerCpuArray => MapType::PerCpuArray,
        MapKind::LruHash => MapType::LruHash,
        MapKind::LpmTrie => MapType::LpmTrie,
        MapKind::RingBuf => MapType::RingBuf,
    }
}

/// The shape of a map as the kernel holds it.
pub(super) fn shape_of(name: &'static str, info: &MapInfo) -> Option<MapShape> {
    Some(MapShape {
        name,
        map_type: info.map_type().ok()?,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
    })
}

/// Mounts bpffs at `/sys/fs/bpf` when `dir` lies below it and nothing is
/// mounted there (DESIGN.md section 5), then creates `dir`, `maps/` and
/// `links/` with mode 0700.
pub(super) fn prepare(dir: &PinDir) -> Result<(), DataplaneError> {
    if dir.root().starts_with(BPFFS_MOUNT) && !is_bpffs(Path::new(BPFFS_MOUNT)) {
        refuse_private_mount_namespace()?;
        nix::mount::mount(
            Some("bpf"),
            BPFFS_MOUNT,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|errno| DataplaneError::Pins {
            path: BPFFS_MOUNT.into(),
            operation: "mount bpffs on",
            source: errno.into(),
        })?;
        tracing::info!(path = BPFFS_MOUNT, "mounted bpffs");
    }
    for path in [dir.root().to_path_buf(), dir.maps(), dir.links()] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o700)))
            .map_err(|source| DataplaneError::Pins {
                path: path.clone(),
                operation: "create the pin directory",
                source,
            })?;
    }
    if !is_bpffs(dir.root()) {
        return Err(DataplaneError::Pins {
            path: dir.root().to_path_buf(),
            operation: "use as a pin directory (it is not on bpffs)",
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    Ok(())
}

/// Refuses to mount bpffs in a mount namespace that is not the host's
/// (`ip netns exec` gives its command a private one, with a fresh `/sys`):
/// pins made there vanish with the process, so a stop with `--on-exit
/// keep` would open the host while the log says the filter stays.
///
/// Told by the parent process: a daemon started by a shell, systemd or a
/// test harness shares its parent's mount namespace; one that `ip netns
/// exec` started does not (the check is skipped where the parent's
/// namespace cannot be read, e.g. PID 1 of a container).
fn refuse_private_mount_namespace() -> Result<(), DataplaneError> {
    let namespace = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let parent = nix::unistd::getppid().as_raw().to_string();
    let (ours, theirs) = (namespace("self"), namespace(&parent));
    if ours.is_some() && theirs.is_some() && ours != theirs {
        return Err(DataplaneError::Pins {
            path: BPFFS_MOUNT.into(),
            operation: "mount bpffs on",
            source: std::io::Error::other(
                "this process runs in a mount namespace of its own (`ip netns exec` makes one, \
                 with a fresh /sys), where pins would vanish with the process and --on-exit keep \
                 could not keep the filter; enter only the network namespace \
                 (`nsenter --net=/run/netns/NAME vaultfw run ...`), or mount the host's bpffs \
                 at /sys/fs/bpf there; nothing was loaded",
            ),
        });
    }
    Ok(())
}

/// An exclusive lock on a pin directory, held while a daemon uses it: two
/// daemons on one pin directory would overwrite each other's tables and
/// remove each other's pins.
#[derive(Debug)]
pub(super) struct PinDirLock {
    _dir: std::fs::File,
}

/// Locks `dir` (flock on the directory itself) or says who holds it.
pub(super) fn lock(dir: &PinDir) -> Result<PinDirLock, DataplaneError> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(dir.root()).map_err(|source| DataplaneError::Pins {
        path: dir.root().to_path_buf(),
        operation: "open",
        source,
    })?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let source = std::io::Error::last_os_error();
        return Err(DataplaneError::PinDirInUse {
            path: dir.root().to_path_buf(),
            holder: lock_holder(dir.root()),
            source,
        });
    }
    Ok(PinDirLock { _dir: file })
}

/// What a start does with one map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MapPin {
    /// Pinned with the shape this build wants: reused as it is.
    Reuse,
    /// Not pinned: created.
    Create,
    /// Pinned with another shape (new limits, an upgrade): created anew
    /// beside it and swapped in once every link runs the new program.
    Recreate,
}

/// Each expected map with what a start does with it.
pub(super) struct PinPlan {
    pub maps: Vec<(MapShape, MapPin)>,
}

impl PinPlan {
    /// Compares the pins under `dir` with `expected`.
    pub(super) fn read(dir: &PinDir, expected: Vec<MapShape>) -> Self {
        let maps = expected
            .into_iter()
            .map(|want| {
                let path = dir.map(want.name);
                let pin = if !path.exists() {
                    MapPin::Create
                } else {
                    let have = MapInfo::from_pin(&path).ok().and_then(|info| shape_of(want.name, &info));
                    let same_shape = have.as_ref() == Some(&want);
                    let current_layout = || {
                        ![CPT_0, CPT_1].contains(&want.name)
                            || super::cpt::pinned_layout_is_current(&path)
                    };
                    // What moves the filter is the operator's choice (an
                    // upgrade, new limits, another --lookup): said at info,
                    // as it trips no alert; a failing move is an error.
                    if same_shape && current_layout() {
                        MapPin::Reuse
                    } else if same_shape {
                        tracing::info!(
                            map = want.name,
                            "pinned compiled table has another layout (an upgrade): the filter moves to new maps"
                        );
                        MapPin::Recreate
                    } else {
                        tracing::info!(
                            map = want.name,
                            ecs = %serde_json::json!({ "vaultfw": {
                                "pinned": have.as_ref().map(MapShape::record),
                                "wanted": want.record(),
                            } }),
                            "pinned map has another shape (an upgrade, new limits or another --lookup): the filter moves to new maps"
                        );
                        MapPin::Recreate
                    }
                };
                (want, pin)
            })
            .collect();
        PinPlan { maps }
    }

    /// Whether the program must move to new table maps: a pinned map has
    /// another shape, or some maps are pinned and others are missing. A
    /// program still attached then reads the old maps, so they cannot be
    /// shared with the new program piecemeal: every table-set map and the
    /// per-rule counters are created anew together (see `migrate`).
    pub(super) fn migrating(&self) -> bool {
        let has = |wanted: MapPin| self.maps.iter().any(|(_, pin)| *pin == wanted);
        has(MapPin::Recreate) || (has(MapPin::Create) && has(MapPin::Reuse))
    }

    /// The pinned shape of `name` as the kernel reports it (for reading the
    /// old maps' layout during a migration).
    pub(super) fn pinned_max_entries(dir: &PinDir, name: &str) -> Option<u32> {
        MapInfo::from_pin(dir.map(name))
            .ok()
            .map(|info| info.max_entries())
    }
}

/// The directory (beside `maps/`) where a migration pins the maps it
/// creates until the swap. bpffs refuses names with a dot, so staged maps
/// keep their names in a directory of their own.
const STAGED_DIR: &str = "staged";

/// Where a map created by a migration is pinned until the swap.
pub(super) fn staged_map(dir: &PinDir, name: &str) -> std::path::PathBuf {
    dir.root().join(STAGED_DIR).join(name)
}

/// Creates the (empty) staging directory, 0700.
pub(super) fn prepare_staging(dir: &PinDir) -> Result<(), DataplaneError> {
    let path = dir.root().join(STAGED_DIR);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(|source| DataplaneError::Pins {
            path,
            operation: "create the staging directory",
            source,
        })
}

/// Removes maps staged by a migration that did not finish (a failed start,
/// or a process that died before the swap), and their directory: the next
/// migration stages them anew.
pub(super) fn remove_staged(dir: &PinDir) -> Result<(), DataplaneError> {
    let staging = dir.root().join(STAGED_DIR);
    let Ok(entries) = fs::read_dir(&staging) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        tracing::warn!(pin = %path.display(), "removing a map staged by an unfinished migration");
        fs::remove_file(&path).map_err(|source| DataplaneError::Pins {
            path,
            operation: "remove the staged map",
            source,
        })?;
    }
    fs::remove_dir(&staging).map_err(|source| DataplaneError::Pins {
        path: staging,
        operation: "remove the staging directory",
        source,
    })
}

/// Swaps each staged map in for its predecessor with one rename (bpffs
/// renames atomically): from here a restart reuses the new maps.
pub(super) fn swap_staged(dir: &PinDir, names: &[&'static str]) -> Result<(), DataplaneError> {
    for name in names {
        let (staged, pinned) = (staged_map(dir, name), dir.map(name));
        fs::rename(&staged, &pinned).map_err(|source| DataplaneError::Pins {
            path: staged.clone(),
            operation: "swap in the new map",
            source,
        })?;
    }
    remove_staged(dir)
}

/// Removes every pin under `dir` and the directories themselves: links
/// first (that detaches the program), then maps. Missing entries are fine.
pub fn remove_all(dir: &PinDir) -> Result<Vec<String>, DataplaneError> {
    let mut removed = Vec::new();
    for sub in [dir.links(), dir.maps(), dir.root().join(STAGED_DIR)] {
        let entries = match fs::read_dir(&sub) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(DataplaneError::Pins {
                    path: sub,
                    operation: "list",
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            fs::remove_file(&path).map_err(|source| DataplaneError::Pins {
                path: path.clone(),
                operation: "unpin",
                source,
            })?;
            removed.push(path.display().to_string());
        }
        let _ = fs::remove_dir(&sub);
    }
    let _ = fs::remove_dir(dir.root());
    Ok(removed)
}

/// The interfaces that have a pinned link under `dir`.
pub(super) fn pinned_link_names(dir: &PinDir) -> Result<Vec<String>, DataplaneError> {
    let entries = match fs::read_dir(dir.links()) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(DataplaneError::Pins {
                path: dir.links(),
                operation: "list",
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Removes the pinned link of `interface`: the last reference to the link
/// goes, which detaches the program from it.
pub(super) fn unpin_link(dir: &PinDir, interface: &str) -> Result<(), DataplaneError> {
    let path = dir.link(interface);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DataplaneError::Pins {
            path,
            operation: "unpin the XDP link",
            source,
        }),
    }
}

/// Whether `path` is on a bpffs mount.
fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// What a pin directory says about the host while no daemon runs.
#[derive(Debug, serde::Serialize)]
pub struct PinnedState {
    /// Always false here: the daemon did not answer.
    pub daemon_running: bool,
    /// The directory inspected.
    pub pin_dir: std::path::PathBuf,
    /// Whether any interface is filtered by a pinned link right now;
    /// `None` when no pinned interface is visible from here.
    pub filtering: Option<bool>,
    /// One entry per pinned link.
    pub interfaces: Vec<PinnedLinkState>,
    /// The generation the pinned tables serve, when readable.
    pub generation: Option<u64>,
    /// How the served table set looks up IPv4 sources, when readable.
    pub lookup: Option<crate::compile::cpt::Lookup>,
    /// The process that holds the pin directory's lock: a daemon runs on
    /// these pins but did not answer on the socket asked (its socket was
    /// removed, or it was started with another `--socket`).
    pub held_by_pid: Option<u32>,
}

/// A pinned link as the kernel sees it.
#[derive(Debug, serde::Serialize)]
pub struct PinnedLinkState {
    /// The interface (the pin's file name).
    pub interface: String,
    /// Its ifindex now, if it exists.
    pub ifindex: Option<u32>,
    /// The XDP mode the kernel reports for it.
    pub mode: Option<&'static str>,
    /// The id of the program the interface runs (`bpftool prog show id N`).
    pub prog_id: Option<u32>,
    /// Whether the pinned link's program is what the interface runs;
    /// `None` when the interface is not visible from this network
    /// namespace (run `show` where the daemon runs).
    pub live: Option<bool>,
}

/// The verdict counters and access-log accounting the pinned maps hold.
#[derive(Debug)]
pub struct PinnedCounters {
    /// Over every interface.
    pub totals: super::VerdictTotals,
    /// Per interface slot (`ifindex % firewall_common::INTERFACE_SLOTS`).
    pub slots: Vec<super::VerdictTotals>,
    /// The access log's kernel-side accounting.
    pub events: super::EventTotals,
}

/// Reads the pinned counters while no daemon runs (`vaultfw stats`
/// without a daemon). Errors: the maps are not pinned or unreadable.
pub fn counters(dir: &PinDir) -> Result<PinnedCounters, DataplaneError> {
    let (slots, events) = super::tables::pinned_counters(dir)?;
    Ok(PinnedCounters {
        totals: super::tables::sum_slots(&slots),
        slots,
        events,
    })
}

/// Reads the pin directory and the kernel's view of each pinned link.
pub fn inspect(dir: &PinDir) -> PinnedState {
    let mut interfaces = Vec::new();
    if let Ok(entries) = fs::read_dir(dir.links()) {
        for entry in entries.flatten() {
            let interface = entry.file_name().to_string_lossy().into_owned();
            let link_prog = aya::programs::links::PinnedLink::from_pin(entry.path())
                .ok()
                .map(aya::programs::links::FdLink::from)
                .and_then(|l| l.info().ok())
                .map(|info| info.program_id());
            let ifindex = nix::net::if_::if_nametoindex(interface.as_str()).ok();
            let kernel = ifindex
                .and_then(|i| super::xdp_attachment(i).ok())
                .unwrap_or_default();
            interfaces.push(PinnedLinkState {
                live: ifindex.map(|_| link_prog.is_some() && kernel.prog_id == link_prog),
                interface,
                ifindex,
                mode: kernel.mode,
                prog_id: kernel.prog_id,
            });
        }
    }
    let served = served_config(dir);
    PinnedState {
        daemon_running: false,
        pin_dir: dir.root().to_path_buf(),
        filtering: if interfaces.iter().any(|i| i.live == Some(true)) {
            Some(true)
        } else if interfaces.iter().all(|i| i.live.is_none()) && !interfaces.is_empty() {
            None
        } else {
            Some(false)
        },
        interfaces,
        generation: served.map(|c| c.generation),
        lookup: served.map(|c| crate::compile::cpt::Lookup::from_flags(c.flags)),
        held_by_pid: lock_holder(dir.root()),
    }
}

/// The settings of the table set the pinned program serves: the active
/// set's, or — past an unconfirmed apply's deadline — the other set's
/// (the previous generation). `None`: the pinned maps are absent or
/// unreadable.
pub(super) fn served_config(dir: &PinDir) -> Option<PolicyConfig> {
    let config = aya::maps::MapData::from_pin(dir.map(POLICY_CONFIG))
        .ok()
        .and_then(|data| {
            aya::maps::Array::<_, PolicyConfig>::try_from(aya::maps::Map::Array(data)).ok()
        })?;
    let active = aya::maps::MapData::from_pin(dir.map(ACTIVE_SET))
        .ok()
        .and_then(|d| aya::maps::Array::<_, u32>::try_from(aya::maps::Map::Array(d)).ok())
        .and_then(|a| a.get(&0, 0).ok())
        .unwrap_or(0)
        & 1;
    let active_config = config.get(&active, 0).ok()?;
    if active_config.fallback_due(crate::clock::kernel_now_ns) {
        config.get(&(active ^ 1), 0).ok()
    } else {
        Some(active_config)
    }
}

/// The process holding a `flock` on `dir` (see [`lock`]), read from
/// `/proc/locks` (`N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF`)
/// rather than by taking the lock, which would race a daemon starting.
fn lock_holder(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir).ok()?;
    let dev = meta.dev();
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    let locks = fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&id.as_str()))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use firewall_common::{MAPS, MapKind};

    use super::map_type;

    /// The object the agent embeds, parsed as aya parses it before load
    /// (nothing is loaded: no root needed). A map declared otherwise than
    /// the `firewall_common` layout says would fail the pin-shape check on
    /// every start, and be recreated with its counters lost.
    #[test]
    fn the_embedded_object_declares_every_map_as_the_common_layout_does() {
        let object = aya_obj::Object::parse(super::super::PROGRAM_OBJECT)
            .expect("the embedded BPF object parses");
        // Data sections (`.rodata`, `.bss`) become maps too; they are not
        // part of the layout.
        let declared: BTreeSet<&str> = object
            .maps
            .keys()
            .map(String::as_str)
            .filter(|name| !name.starts_with('.'))
            .collect();
        let layout: BTreeSet<&str> = MAPS.iter().map(|m| m.name).collect();
        assert_eq!(declared, layout, "the object's maps are the layout's");
        for spec in &MAPS {
            let map = &object.maps[spec.name];
            assert_eq!(
                (
                    map.map_type(),
                    map.key_size(),
                    map.value_size(),
                    map.max_entries(),
                    map.map_flags(),
                ),
                (
                    spec.kind as u32,
                    spec.key_size,
                    spec.value_size,
                    spec.max_entries,
                    spec.flags,
                ),
                "{}: (type, key size, value size, max entries, flags) in the object vs the layout",
                spec.name
            );
        }
    }

    /// The tries' lookup (`--lookup trie`) never reads the compiled tables:
    /// they hold an empty table's cells whatever the limits, and the
    /// compiled lookup gets room for the policy — so the two lookups pin
    /// arrays of other shapes, and a switch moves the filter to new maps.
    #[test]
    fn compiled_tables_are_sized_only_for_the_compiled_lookup() {
        use crate::compile::cpt::Lookup;
        let cells = |limit, lookup| {
            let capacity = super::Capacity::for_ip_rule_limit(limit).with_lookup(lookup);
            let shapes = super::expected_shapes(&capacity);
            shapes
                .iter()
                .find(|s| s.name == firewall_common::layout::CPT_MAPS[0].name)
                .map(|s| s.max_entries)
                .expect("the compiled table's shape")
        };
        let empty = u32::try_from(firewall_common::cpt::cells_bound(0, 0, 0, 0)).unwrap();
        assert_eq!(cells(1_000_000, Lookup::Trie), empty);
        assert_eq!(cells(127, Lookup::Trie), empty);
        assert!(cells(127, Lookup::Compiled) > empty);
        assert!(cells(100_000, Lookup::Compiled) > cells(127, Lookup::Compiled));
    }

    /// A map each program owns (aya-log's ring) is neither pinned nor
    /// compared with the pins, so a build that adds it adopts the pins of
    /// a build without it instead of migrating.
    #[test]
    fn maps_each_program_owns_are_left_out_of_the_pin_plan() {
        let capacity = super::Capacity::for_ip_rule_limit(254);
        let shapes = super::expected_shapes(&capacity);
        assert!(
            shapes.iter().all(|s| s.name != firewall_common::BPF_LOGS),
            "{shapes:?}"
        );
        assert_eq!(
            shapes.len(),
            MAPS.iter().filter(|m| m.pinned).count(),
            "every pinned map is planned"
        );
        assert!(
            MAPS.iter()
                .any(|m| m.name == firewall_common::BPF_LOGS && !m.pinned)
        );
    }

    #[test]
    fn layout_map_kinds_name_the_same_kernel_map_types_as_aya() {
        for kind in [
            MapKind::Array,
            MapKind::PerCpuArray,
            MapKind::LruHash,
            MapKind::LpmTrie,
            MapKind::RingBuf,
        ] {
            assert_eq!(map_type(kind) as u32, kind as u32, "{kind:?}");
        }
    }
}
