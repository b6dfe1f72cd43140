//! The `bpf(2)` commands aya does not wrap, called directly: map-in-map
//! creation and slot updates (the grace-period wait, `cpt`) and batched
//! element updates and deletes (`BPF_MAP_UPDATE_BATCH` and
//! `BPF_MAP_DELETE_BATCH`: Linux 5.6+ for arrays, later for LPM tries).

use std::io;
use std::os::fd::RawFd;

/// `enum bpf_cmd` values used here (include/uapi/linux/bpf.h).
pub(super) const BPF_MAP_CREATE: libc::c_long = 0;
pub(super) const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

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

/// `BPF_MAP_UPDATE_BATCH` (`values` given) or `BPF_MAP_DELETE_BATCH`
/// (`None`) of `count` elements of the map `map_fd`, `keys` and `values`
/// holding them back to back in the map's key and value layouts (a per-CPU
/// value is one 8-byte-aligned value per possible CPU). One syscall, resumed
/// where the kernel stopped for a pending signal. Returns the elements done
/// — all, or those before the first that failed, with its error (a kernel
/// without batched operations for the map type refuses the first).
pub(super) fn batch(
    map_fd: RawFd,
    keys: &[u8],
    values: Option<&[u8]>,
    count: usize,
) -> (usize, Option<io::Error>) {
    if count == 0 {
        return (0, None);
    }
    let (key_len, value_len) = (keys.len() / count, values.map_or(0, |v| v.len() / count));
    let cmd = if values.is_some() {
        BPF_MAP_UPDATE_BATCH
    } else {
        BPF_MAP_DELETE_BATCH
    };
    let mut done = 0;
    while done < count {
        let mut attr = BatchAttr {
            keys: keys[done * key_len..].as_ptr() as u64,
            values: values.map_or(0, |v| v[done * value_len..].as_ptr() as u64),
            count: (count - done) as u32,
            map_fd: map_fd as u32,
            ..Default::default()
        };
        let asked = count - done;
        let result = bpf(cmd, &mut attr);
        match result {
            Ok(_) => done += asked,
            Err(e) => {
                // The kernel writes `count` back as the elements done when
                // it ran the batch; one it refused outright (no batched
                // operations for the map type, a bad descriptor) leaves it
                // as asked — and with an error at least one is undone.
                let batch_done = attr.count as usize;
                let batch_done = if batch_done < asked { batch_done } else { 0 };
                done += batch_done;
                if batch_done == 0 || e.kind() != io::ErrorKind::Interrupted {
                    return (done, Some(e));
                }
            }
        }
    }
    (done, None)
}
