//! The peer programs of the program-cost bench, built from `bench/xdp/*.c` by
//! `cargo xtask bench` with clang `-target bpf` and loaded here with aya:
//! `one_lookup` (the design's floor), `pass` (the test-run overhead) and
//! `rotate` (feeds a new source address to the program under test on every
//! repetition).

use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, LpmTrie, ProgramArray};
use aya::programs::{ProgramFd, ProgramInfo, Xdp};
use aya::{Ebpf, EbpfLoader, Pod};
use ipnet::Ipv4Net;

/// `struct rotate_state` of bench/xdp/rotate.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RotateState {
    next: u32,
    offset: u32,
}
// SAFETY: repr(C), two u32, no padding.
unsafe impl Pod for RotateState {}

/// Entries of BENCH_SOURCES in bench/xdp/rotate.c.
pub const ROTATE_SOURCES: usize = 65536;

/// A loaded single-program object.
pub struct Loaded {
    pub ebpf: Ebpf,
    name: &'static str,
}

impl Loaded {
    fn load(path: &Path, name: &'static str, rules: Option<u32>) -> Result<Loaded> {
        let mut loader = EbpfLoader::new();
        if let Some(n) = rules {
            loader.map_max_entries("BENCH_RULES", n.max(1));
        }
        let mut ebpf = loader
            .load_file(path)
            .with_context(|| format!("loading {}", path.display()))?;
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("{} has no program {name}", path.display()))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("the kernel refused {name} from {}", path.display()))?;
        Ok(Loaded { ebpf, name })
    }

    fn xdp(&self) -> &Xdp {
        self.ebpf
            .program(self.name)
            .expect("invariant: checked at load")
            .try_into()
            .expect("invariant: an XDP program")
    }

    pub fn fd(&self) -> &ProgramFd {
        self.xdp().fd().expect("invariant: loaded")
    }

    pub fn info(&self) -> Result<ProgramInfo> {
        Ok(self.xdp().info()?)
    }
}

/// bench/xdp/one_lookup.c with `prefixes` in its trie.
pub fn one_lookup(objects: &Path, prefixes: &[Ipv4Net]) -> Result<Loaded> {
    let mut loaded = Loaded::load(
        &objects.join("one_lookup.o"),
        "bench_one_lookup",
        Some(prefixes.len() as u32),
    )?;
    let mut trie: LpmTrie<_, [u8; 4], u32> = LpmTrie::try_from(
        loaded
            .ebpf
            .map_mut("BENCH_RULES")
            .context("one_lookup.o has no BENCH_RULES")?,
    )?;
    for (i, p) in prefixes.iter().enumerate() {
        trie.insert(
            &Key::new(u32::from(p.prefix_len()), p.network().octets()),
            i as u32,
            0,
        )
        .context("filling BENCH_RULES")?;
    }
    Ok(loaded)
}

/// bench/xdp/pass.c.
pub fn pass(objects: &Path) -> Result<Loaded> {
    Loaded::load(&objects.join("pass.o"), "bench_pass", None)
}

/// bench/xdp/rotate.c.
pub struct Rotator {
    pub loaded: Loaded,
}

impl Rotator {
    pub fn load(objects: &Path) -> Result<Rotator> {
        Ok(Rotator {
            loaded: Loaded::load(&objects.join("rotate.o"), "bench_rotate", None)?,
        })
    }

    /// Fills the source pool (cycled if shorter than [`ROTATE_SOURCES`])
    /// and sets the offset of the source field in the frames to come.
    pub fn set_sources(&mut self, sources: &[[u8; 4]], offset: u32) -> Result<()> {
        let mut pool: Array<_, u32> = Array::try_from(
            self.loaded
                .ebpf
                .map_mut("BENCH_SOURCES")
                .context("BENCH_SOURCES")?,
        )?;
        for i in 0..ROTATE_SOURCES {
            pool.set(i as u32, u32::from_ne_bytes(sources[i % sources.len()]), 0)?;
        }
        let mut state: Array<_, RotateState> = Array::try_from(
            self.loaded
                .ebpf
                .map_mut("BENCH_STATE")
                .context("BENCH_STATE")?,
        )?;
        state.set(0, RotateState { next: 0, offset }, 0)?;
        Ok(())
    }

    /// Makes `target` the program the rotator tail-calls.
    pub fn set_target(&mut self, target: &ProgramFd) -> Result<()> {
        let mut slots = ProgramArray::try_from(
            self.loaded
                .ebpf
                .map_mut("BENCH_TARGET")
                .context("BENCH_TARGET")?,
        )?;
        slots
            .set(0, target, 0)
            .context("setting the tail-call target")?;
        Ok(())
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.loaded.fd().as_fd()
    }
}
