//! Writing the compiled prefix tables (`firewall_common::cpt`) and waiting
//! out the readers of a set before it is written again.
//!
//! A set's table is written in one pass: the image `compile::cpt` built is
//! copied into an mmap of the set's `BPF_F_MMAPABLE` array (a shared
//! mapping of the kernel's own pages: nothing else is written, no syscall
//! per cell).
//!
//! Readers: the program reads `VFW_ACTIVE` once per frame and then only
//! the set it names, all inside the one RCU read-side critical section an
//! XDP program runs in. So once a grace period has passed after a flip, no
//! running program can still read the set flipped away from, and it may be
//! written. [`GracePeriod::wait`] waits for one: it stores a map in slot 0
//! of a private `BPF_MAP_TYPE_ARRAY_OF_MAPS`, and the kernel's update of a
//! map-in-map returns only after `synchronize_rcu()` (`maybe_wait_bpf_programs`
//! in kernel/bpf/syscall.c, on 6.1 and 6.12 alike; the kernel's own
//! selftests use the same trick to trigger a grace period).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::thread::JoinHandle;

use aya::maps::MapData;
use firewall_common::FLAG_LOOKUP_COMPILED;
use firewall_common::cpt::{CPT_MAGIC, Cell};

use super::DataplaneError;
use super::sys::{BPF_MAP_CREATE, BPF_MAP_UPDATE_ELEM, bpf};
use crate::compile::CompiledTables;
use crate::compile::cpt::{ListedEntries, compile_prefix_table, listed_entries};

/// `enum bpf_map_type` values used here.
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The leading fields of `union bpf_attr` for `BPF_MAP_CREATE`, padded to
/// the union's size (the kernel requires the bytes it does not know to be
/// zero).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    rest: [u64; 13],
}

/// The fields of `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
#[derive(Default)]
struct MapUpdateAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
    rest: [u64; 12],
}

fn create(map_type: u32, inner_map_fd: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        inner_map_fd,
        ..Default::default()
    };
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: BPF_MAP_CREATE returned a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A private map-in-map whose slot update waits for an RCU grace period.
#[derive(Debug)]
pub(super) struct GracePeriod {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl GracePeriod {
    /// Creates the two one-slot maps (a few hundred bytes of kernel memory).
    pub(super) fn new() -> io::Result<Self> {
        let inner = create(BPF_MAP_TYPE_ARRAY, 0)?;
        let outer = create(BPF_MAP_TYPE_ARRAY_OF_MAPS, inner.as_raw_fd() as u32)?;
        Ok(GracePeriod { outer, inner })
    }

    /// Returns once every BPF program that was running when it was called
    /// has finished (one `synchronize_rcu()`, typically a few ms).
    pub(super) fn wait(&self) -> io::Result<()> {
        let key = 0u32;
        let value = self.inner.as_raw_fd() as u32;
        let mut attr = MapUpdateAttr {
            map_fd: self.outer.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            ..Default::default()
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }
}

/// A shared, writable mapping of an mmapable array's values.
struct Mapping {
    ptr: NonNull<Cell>,
    cells: usize,
}

impl Mapping {
    /// Maps the first `cells` values of `map` (an array of [`Cell`]
    /// created with `BPF_F_MMAPABLE`).
    fn new(map: &MapData, cells: usize) -> io::Result<Self> {
        let len = cells * size_of::<Cell>();
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks
        // that the length fits the array and that it was created mmapable.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping { ptr, cells })
    }

    fn cells(&self) -> &[Cell] {
        // SAFETY: as `cells_mut`, shared.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.cells) }
    }

    /// The mapped values. The program only reads them, and never those of
    /// a set being written (see the module doc), so no access races.
    fn cells_mut(&mut self) -> &mut [Cell] {
        // SAFETY: the mapping holds `cells` page-aligned, initialised
        // values and lives as long as `self`; `&mut self` makes this the
        // only user-space reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cells) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.cells * size_of::<Cell>());
        }
    }
}

/// Copies `image` to the start of `map` in one pass. The caller has
/// checked that the image fits.
fn write_image(map: &MapData, image: &[Cell]) -> io::Result<()> {
    // Only the pages the image covers: mapping a page costs more than
    // copying it, and the cells past the image are never read.
    let mut mapping = Mapping::new(map, image.len())?;
    mapping.cells_mut().copy_from_slice(image);
    Ok(())
}

/// Whether the compiled table pinned at `path` holds no table of another
/// layout: never written (magic 0), or written with this build's
/// [`CPT_MAGIC`]. A program still attached walks the pinned table, so a
/// table of another layout ([`firewall_common::cpt::CPT_MAGIC_V1`]) is
/// never rewritten in place: the start moves the filter to new maps. An
/// array that cannot be read counts as current: reading its entries then
/// fails the start.
pub(super) fn pinned_layout_is_current(path: &std::path::Path) -> bool {
    MapData::from_pin(path).map_or(true, |map| layout_is_current(&map))
}

/// [`pinned_layout_is_current`] of an open array.
fn layout_is_current(map: &MapData) -> bool {
    match Mapping::new(map, 1) {
        Ok(mapping) => [0, CPT_MAGIC].contains(&mapping.cells()[0][0]),
        Err(_) => true,
    }
}

/// All of `map`, whatever its size (the pins of another capacity are read
/// during a migration).
fn map_whole(map: &MapData) -> Result<Mapping, String> {
    let cells = map.info().map_err(|e| e.to_string())?.max_entries();
    Mapping::new(map, cells as usize).map_err(|e| e.to_string())
}

/// Both sets' compiled tables and the grace-period state of the double
/// buffer (tries included): what `Tables` calls around every write and
/// flip.
pub(super) struct CompiledSets {
    /// Each set's array; `None` for pins of a build before compiled tables
    /// (read as a migration's predecessor, never written).
    maps: Option<[MapData; 2]>,
    /// Cells each array holds.
    cells: u32,
    grace: Arc<GracePeriod>,
    settling: Settling,
}

/// Whether a program may still read the spare set.
enum Settling {
    /// A grace period has passed since the last flip.
    Settled,
    /// A flip happened and no wait for its grace period is under way.
    Unsettled,
    /// A flip happened and a thread is waiting out its grace period: begun
    /// right after the flip, so the next apply usually finds it over
    /// instead of waiting a whole grace period (several ms) itself.
    Waiting(JoinHandle<io::Result<()>>),
}

impl CompiledSets {
    /// The sets' arrays (`maps`, each of `cells` cells). Unsettled at
    /// first: a predecessor may have flipped just before handing over.
    pub(super) fn new(maps: Option<[MapData; 2]>, cells: u32) -> Result<Self, DataplaneError> {
        let grace = GracePeriod::new().map_err(|e| DataplaneError::CompiledTable {
            set: 0,
            reason: format!("cannot create the grace-period map-in-map: {e}"),
        })?;
        Ok(CompiledSets {
            maps,
            cells,
            grace: Arc::new(grace),
            settling: Settling::Unsettled,
        })
    }

    /// Records a flip of the active set (call it after the index write, or
    /// after a failed one: readers may have seen either index) and starts
    /// waiting out its grace period in the background.
    pub(super) fn flipped(&mut self) {
        // A wait begun before this flip does not cover it.
        if let Settling::Waiting(earlier) =
            std::mem::replace(&mut self.settling, Settling::Unsettled)
        {
            let _ = earlier.join();
        }
        let grace = Arc::clone(&self.grace);
        self.settling = match std::thread::Builder::new()
            .name("vaultfw-grace".into())
            .spawn(move || grace.wait())
        {
            Ok(waiting) => Settling::Waiting(waiting),
            // No thread to spare: settle() waits in line.
            Err(_) => Settling::Unsettled,
        };
    }

    /// Returns once no program can still read the spare set (a grace
    /// period has passed since the last flip); call before writing any of
    /// its maps. A background wait that failed is done again here, so its
    /// error is the one reported.
    pub(super) fn settle(&mut self) -> Result<(), DataplaneError> {
        let waited = match std::mem::replace(&mut self.settling, Settling::Unsettled) {
            Settling::Settled => Ok(()),
            Settling::Waiting(waiting) => match waiting.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) | Err(_) => self.grace.wait(),
            },
            Settling::Unsettled => self.grace.wait(),
        };
        waited.map_err(|e| DataplaneError::CompiledTable {
            set: 0,
            reason: format!("cannot wait for an RCU grace period: {e}"),
        })?;
        self.settling = Settling::Settled;
        Ok(())
    }

    /// The IPv4 entries set `set`'s table lists; `None` when it lists none
    /// (see `listed_entries`: its tries hold them) or the pins predate
    /// compiled tables.
    ///
    /// # Errors
    ///
    /// [`DataplaneError::CompiledTable`] when the array cannot be mapped or
    /// its list is corrupt.
    pub(super) fn listed(&self, set: u32) -> Result<Option<ListedEntries>, DataplaneError> {
        let Some(maps) = &self.maps else {
            return Ok(None);
        };
        map_whole(&maps[set as usize])
            .and_then(|mapping| listed_entries(mapping.cells()).map_err(|e| e.to_string()))
            .map_err(|reason| DataplaneError::CompiledTable { set, reason })
    }

    /// Whether set `set`'s array holds no table of another layout (see
    /// [`pinned_layout_is_current`]).
    pub(super) fn layout_is_current(&self, set: u32) -> bool {
        self.maps
            .as_ref()
            .is_none_or(|maps| layout_is_current(&maps[set as usize]))
    }

    /// Whether set `set`'s table is exactly the image `tables` compile to
    /// (what the program walks; the cells past it are never read).
    ///
    /// # Errors
    ///
    /// [`DataplaneError::CompiledTable`] when the array cannot be mapped or
    /// `tables` do not compile.
    pub(super) fn serves(&self, set: u32, tables: &CompiledTables) -> Result<bool, DataplaneError> {
        let fail = |reason: String| DataplaneError::CompiledTable { set, reason };
        let Some(maps) = &self.maps else {
            return Ok(true);
        };
        let image = compile_prefix_table(tables).map_err(|e| fail(e.to_string()))?;
        let mapping = map_whole(&maps[set as usize]).map_err(fail)?;
        Ok(mapping.cells().get(..image.len()) == Some(&image[..]))
    }

    /// Writes the compiled table of `tables` into spare set `set` when its
    /// lookups use it ([`firewall_common::FLAG_LOOKUP_COMPILED`]); returns
    /// the writes done (one pass, or none). Call [`CompiledSets::settle`]
    /// first.
    pub(super) fn write(
        &mut self,
        set: u32,
        tables: &CompiledTables,
    ) -> Result<usize, DataplaneError> {
        if tables.flags & FLAG_LOOKUP_COMPILED == 0 {
            return Ok(0);
        }
        let fail = |reason: String| DataplaneError::CompiledTable { set, reason };
        let maps = self
            .maps
            .as_ref()
            .ok_or_else(|| fail("the pinned maps predate compiled tables".into()))?;
        let image = self.image(set, tables)?;
        write_image(&maps[set as usize], &image).map_err(|e| fail(e.to_string()))?;
        Ok(1)
    }

    /// The image `tables` compile to for set `set`, refused when the
    /// array cannot hold it ([`DataplaneError::CompiledTable`], naming the
    /// cells needed and held, and the fix). Writes nothing.
    pub(super) fn image(
        &self,
        set: u32,
        tables: &CompiledTables,
    ) -> Result<Vec<Cell>, DataplaneError> {
        let fail = |reason: String| DataplaneError::CompiledTable { set, reason };
        let image = compile_prefix_table(tables).map_err(|e| fail(e.to_string()))?;
        if image.len() > self.cells as usize {
            return Err(fail(format!(
                "the policy needs {} cells but the table holds {}: it has room for \
                 limits.ip_rules IP rules plus {} subnet and trusted-service prefixes; raise \
                 limits.ip_rules and restart vaultfw, or run with --lookup trie (no such bound)",
                image.len(),
                self.cells,
                super::COMPILED_EXTRA_PREFIXES,
            )));
        }
        Ok(image)
    }
}
