//! Building and benchmarking the policy modules.
//!
//! `build`: compiles the guest workspace (`policies/guests`) for `wasm32-unknown-unknown` in
//! release mode with the wasm compiler from [`crate::toolchain`] (no edge tools), turns every policy crate's core
//! module into a WebAssembly component for the `tool` world (`policies/wit`) with `wit-component`
//! (in-process: no external binaries), and writes `target/policies/<name>.wasm` plus
//! `target/policies/manifest.json` ([`pulsara_policy_abi::manifest`]: each module's sha256 and,
//! from the `tool.json` in its crate, its tool specification), the table the embedded dashboard
//! seeds `builtin:<name>` module references and the agents' client tools from. Built-ins and
//! examples must have a `tool.json`; test guests may.
//! `target/policies/builtins/` holds the same for the built-in policies alone: what a production
//! bridge ships (the container recipe and the systemd unit copy it), without the examples and the
//! test guests.
//!
//! A policy crate is any directory with a `Cargo.toml` under `policies/guests/{builtins,examples,
//! testing}`; its package name equals its directory name, so its core module is `<name>.wasm`.
//!
//! `test`: the guest crates' native unit tests (SDK helpers), which the root workspace cannot run
//! because the guests are a workspace of their own.
//!
//! `bench`: builds the modules, then runs the host's benchmark binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use pulsara_core::agent::ToolSpec;
use pulsara_policy_abi::manifest::{self, Manifest};
use sha2::{Digest, Sha256};

use crate::toolchain::{Wasm, WASM_TARGET};
use crate::util;

/// Folders of `policies/guests` that hold one policy crate per subdirectory.
const GROUPS: [&str; 3] = ["builtins", "examples", "testing"];

pub fn build(tc: &Wasm) -> Result<()> {
    util::step("policy modules: cargo build (wasm32, release)");
    let root = util::root();
    let guests = root.join("policies/guests");
    let target = tc.target_dir();
    tc.cargo_build_wasm(&guests, &target, true)?;

    util::step("policy modules: core modules → components");
    let out_dir = root.join("target/policies");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("could not create {}", out_dir.display()))?;
    let built = target.join(WASM_TARGET).join("release");
    let mut manifest = Manifest::default();
    let mut shipped = BTreeMap::new();
    for (group, name) in policy_crates(&guests)? {
        let core_path = built.join(format!("{name}.wasm"));
        let core = std::fs::read(&core_path)
            .with_context(|| format!("{} is missing after the build; is the package named {name:?}?", core_path.display()))?;
        let component = componentize(&core).with_context(|| format!("making a component of {}", core_path.display()))?;
        let hash = hex::encode(Sha256::digest(&component));
        let dest = out_dir.join(format!("{name}.wasm"));
        if std::fs::read(&dest).ok().as_deref() != Some(component.as_slice()) {
            std::fs::write(&dest, &component).with_context(|| format!("could not write {}", dest.display()))?;
        }
        eprintln!("    {name:<24} {:>8} bytes  sha256 {hash}", component.len());
        let tool = tool_spec(&guests.join(group).join(&name), group != "testing")?;
        if group == SHIPPED {
            shipped.insert(name.clone(), (hash.clone(), component, tool.clone()));
        }
        manifest.insert(&name, &hash, &out_dir, tool);
    }
    write_manifest(&out_dir, &manifest)?;
    eprintln!("    wrote {} modules and manifest.json to {}", manifest.len(), out_dir.display());

    // The production set: the built-ins only, in a directory of their own.
    let ship_dir = out_dir.join(SHIPPED);
    if ship_dir.is_dir() {
        std::fs::remove_dir_all(&ship_dir).with_context(|| format!("could not clear {}", ship_dir.display()))?;
    }
    std::fs::create_dir_all(&ship_dir).with_context(|| format!("could not create {}", ship_dir.display()))?;
    let mut ship_manifest = Manifest::default();
    for (name, (hash, component, tool)) in shipped {
        let dest = ship_dir.join(format!("{name}.wasm"));
        std::fs::write(&dest, &component).with_context(|| format!("could not write {}", dest.display()))?;
        ship_manifest.insert(&name, &hash, &ship_dir, tool);
    }
    write_manifest(&ship_dir, &ship_manifest)?;
    eprintln!("    wrote the {} built-ins a production bridge ships to {}", ship_manifest.len(), ship_dir.display());
    Ok(())
}

/// The group of policy crates a production bridge ships, and the subdirectory of
/// `target/policies` they are written to.
const SHIPPED: &str = "builtins";

/// The crate's `tool.json`, checked as ElevenLabs checks a client tool.
fn tool_spec(crate_dir: &Path, required: bool) -> Result<Option<ToolSpec>> {
    let path = crate_dir.join("tool.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("could not read {} (every built-in and example policy needs one)", path.display())),
    };
    ToolSpec::from_json(&text).map(Some).with_context(|| format!("{} is not a tool specification ElevenLabs accepts", path.display()))
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = dir.join(manifest::FILE_NAME);
    std::fs::write(&path, manifest.to_json() + "\n").with_context(|| format!("could not write {}", path.display()))
}

/// Native unit tests of the guest workspace (SDK helpers and built-ins' pure logic).
pub fn test() -> Result<()> {
    util::step("policy guests: native unit tests");
    let root = util::root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["test", "--manifest-path"])
        .arg(root.join("policies/guests/Cargo.toml"))
        .args(["--package", "pulsara-policy-sdk", "--target-dir"])
        .arg(root.join("target/guests-native"))
        .env_remove("CARGO_TARGET_DIR");
    util::run(&mut cmd)
}

pub fn bench() -> Result<()> {
    build(&Wasm::compiler()?)?;
    util::step("policy benchmarks");
    util::cargo(&["bench", "--package", "pulsara-policy-host", "--bench", "policies"])
}

/// The policy crates in `guests` as (group, name), sorted by name.
fn policy_crates(guests: &Path) -> Result<Vec<(&'static str, String)>> {
    let mut names = Vec::new();
    for group in GROUPS {
        let dir = guests.join(group);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("could not list {}", dir.display())),
        };
        for entry in entries {
            let path: PathBuf = entry?.path();
            if path.join("Cargo.toml").is_file() {
                if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    names.push((group, name.to_owned()));
                }
            }
        }
    }
    if names.is_empty() {
        bail!("no policy crates under {}", guests.display());
    }
    names.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(names)
}

/// A core module built with `wit-bindgen` (which embeds the world as a custom section) → a
/// component.
fn componentize(core: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .module(core)
        .context("reading the module's component-type section (was it built with the SDK?)")?
        .validate(true)
        .encode()
        .context("encoding the component")
}
