//! The `bpf(2)` commands aya does not wrap, called directly: map-in-map
//! creation and slot updates (the grace-period wait, `cpt`) and batched
//! element updates (`BPF_MAP_UPDATE_BATCH`, Linux 5.6+).

use std::io;
use std::os::fd::RawFd;

/// `enum bpf_cmd` values used here (include/uapi/linux/bpf.h).
pub(super) const BPF_MAP_CREATE: libc::c_long = 0;
pub(super) const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// `bpf(cmd, attr)`: the result, or the OS error.
pub(super) fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable `repr(C)` prefix of `union
    // bpf_attr` of the size passed; the kernel reads (and for some commands
    // writes) only within it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The `batch` member of `union bpf_attr`, padded to the union's size.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
    rest: [u64; 10],
}

/// Writes `values[i]` at `keys[i]` of the map `map_fd` in one syscall per
/// call (the kernel's `generic_map_update_batch`). `values` holds one
/// value per key, each `values.len() / keys.len()` bytes in the map's value
/// layout (for a per-CPU map: one 8-byte-aligned value per possible CPU).
/// A batch the kernel stops part-way (a pending signal) is resumed where
/// it stopped.
///
/// # Errors
///
/// The OS error of the first element that fails (for example `EINVAL` on
/// a kernel before batched operations); the keys before it are written.
pub(super) fn update_batch(map_fd: RawFd, keys: &[u32], values: &[u8]) -> io::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let value_len = values.len() / keys.len();
    let mut done = 0;
    while done < keys.len() {
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done * value_len..].as_ptr() as u64,
            count: (keys.len() - done) as u32,
            map_fd: map_fd as u32,
            ..Default::default()
        };
        let result = bpf(BPF_MAP_UPDATE_BATCH, &mut attr);
        // `count` comes back as the elements written, on error too.
        let written = (attr.count as usize).min(keys.len() - done);
        done += written;
        match result {
            Ok(_) => {}
            Err(e) if written > 0 && e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
