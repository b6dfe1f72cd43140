//! BPF_PROG_TEST_RUN through the raw syscall, on any program fd, so the
//! program under test and its peers are timed by exactly the same code; and
//! a way to get a file descriptor of the program a `Dataplane` loaded
//! (which keeps its own private), recognised by the policy generation the
//! bench wrote into it.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aya::maps::{Array, MapData};
use aya::programs::{ProgramFd, ProgramInfo, loaded_programs};
use firewall_common::{POLICY_CONFIG, PROGRAM_NAME, PolicyConfig, TABLE_SETS};

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs the XDP program `prog` `repeat` times on `frame`; returns the XDP
/// action of the last run and the kernel's mean time per run (integer ns,
/// as the kernel reports it).
pub fn test_run(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> Result<(u32, u32)> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid bpf_attr prefix of the size we pass; the
    // kernel reads `frame` (alive for the call) and writes only `attr`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as u32,
        )
    };
    if ret != 0 {
        let err = std::io::Error::last_os_error();
        bail!("BPF_PROG_TEST_RUN failed: {err}");
    }
    Ok((attr.retval, attr.duration))
}

/// A file descriptor of the `vaultfw` program whose config map holds
/// `generation` in either table set (the bench applies a random generation,
/// so no other loaded copy — another test's agent — can match).
pub fn find_vaultfw(generation: u64) -> Result<(ProgramFd, ProgramInfo)> {
    for info in loaded_programs() {
        let Ok(info) = info else { continue };
        if info.name_as_str() != Some(PROGRAM_NAME) {
            continue;
        }
        let Ok(Some(map_ids)) = info.map_ids() else {
            continue;
        };
        for id in map_ids {
            let Ok(map) = MapData::from_id(id) else {
                continue;
            };
            let Ok(map_info) = map.info() else { continue };
            if map_info.name_as_str() != Some(POLICY_CONFIG) {
                continue;
            }
            let Ok(config) = Array::<MapData, PolicyConfig>::try_from(aya::maps::Map::Array(map))
            else {
                continue;
            };
            let hit = (0..TABLE_SETS).any(|set| {
                config
                    .get(&set, 0)
                    .is_ok_and(|c| c.generation == generation)
            });
            if hit {
                let fd = info.fd().context("opening the vaultfw program by id")?;
                return Ok((fd, info));
            }
        }
    }
    bail!("no loaded `{PROGRAM_NAME}` program holds generation {generation}")
}

/// What the kernel says about a loaded program (bpftool prog show).
#[derive(Debug, serde::Serialize)]
pub struct ProgramSize {
    pub xlated_bytes: Option<u32>,
    pub jited_bytes: Option<u32>,
    pub verified_insns: Option<u32>,
    pub xlated_insns: Option<u32>,
}

pub fn program_size(info: &ProgramInfo) -> ProgramSize {
    ProgramSize {
        xlated_bytes: info.size_translated(),
        jited_bytes: Some(info.size_jitted()),
        verified_insns: info.verified_instruction_count(),
        xlated_insns: info.size_translated().map(|b| b / 8),
    }
}

/// Nanoseconds of a duration, as f64.
pub fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}
