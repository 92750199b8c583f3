//! Helpers the end-to-end tests share (each test file includes this module as `mod common;`).
#![allow(dead_code)] // each test file uses some of them

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use m3ixup::agents::algorithms::ppo::PpoConfig;
use m3ixup::config::load;

/// The Flex backend seeds one global RNG: the tests that train hold this lock.
static BACKEND_RNG: Mutex<()> = Mutex::new(());

/// Holds the backend's RNG for the caller (a test that failed while holding it does not block
/// the others).
pub fn backend_rng() -> MutexGuard<'static, ()> {
    BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// A shipped config, `configs/<name>`.
pub fn config_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs").join(name)
}

/// The PPO smoke config with `overrides` (`section.key=value`), validated.
pub fn ppo_smoke(overrides: &[&str]) -> PpoConfig {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let config: PpoConfig = load(Some(&config_path("ppo-smoke.toml")), &overrides).unwrap();
    config.validate().unwrap();
    config
}

/// A directory for the test `tag` of this test file, under cargo's scratch directory; what an
/// earlier run left there is removed.
pub fn fresh_dir(tag: &str) -> PathBuf {
    let name = format!("{}-{tag}-{}", env!("CARGO_CRATE_NAME"), std::process::id());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Metrics rows without their wall-clock figures, values as bits (so NaN equals NaN): what two
/// runs of one seed must share.
pub fn timeless(rows: &[Vec<(String, f64)>]) -> Vec<Vec<(String, u64)>> {
    rows.iter()
        .map(|r| r.iter().filter(|(k, _)| !k.starts_with("time/")).map(|(k, v)| (k.clone(), v.to_bits())).collect())
        .collect()
}
