//! When the faults land: a seeded pseudo-random schedule (SplitMix64), so a
//! failing run can be replayed. The seed is printed at the start of every
//! test; `VAULTFW_FAULT_SEED` (decimal or `0x` hex) replaces the default.
//! Each path draws from its own stream (the seed mixed with the path's
//! name), so one test run alone draws the same delays as in a full run.

use std::time::Duration;

/// The seed when `VAULTFW_FAULT_SEED` is not set.
pub const DEFAULT_SEED: u64 = 0x0011_5EED_F417;
/// The variable that replaces [`DEFAULT_SEED`].
pub const SEED_ENV: &str = "VAULTFW_FAULT_SEED";

/// The seed of this run: `$VAULTFW_FAULT_SEED`, else [`DEFAULT_SEED`].
pub fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => text.parse().ok(),
            };
            parsed.unwrap_or_else(|| {
                panic!("{SEED_ENV}={text:?} is not a u64: give it in decimal or as 0x-hex")
            })
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// SplitMix64: small, fast, and the same numbers on every machine.
pub struct Rng(u64);

impl Rng {
    /// The stream of `path` under `seed`.
    pub fn for_path(seed: u64, path: &str) -> Self {
        let state = path
            .bytes()
            .fold(seed, |state, byte| mix(state ^ u64::from(byte)));
        Rng(state)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A delay drawn uniformly from `0..=max` (microsecond steps).
    pub fn up_to(&mut self, max: Duration) -> Duration {
        let micros = u64::try_from(max.as_micros()).expect("delays are short");
        Duration::from_micros(self.below(micros + 1))
    }
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
