//! What ships: `pulsara serve` is built from `pulsara-bridge` and `pulsara-cli --no-default-features`
//! (deploy/Containerfile), and neither may link a stand-in of the outside world or the local
//! stack. Read from cargo's own resolution of the workspace (`cargo tree`, offline), so a new
//! dependency that drags an emulator into production fails here.

use std::path::Path;
use std::process::Command;

/// Crates that exist for tests, the demo and benchmarks only.
const NOT_IN_PRODUCTION: [&str; 3] = ["pulsara-emulators", "pulsara-local", "roxmltree"];

/// The normal (non-dev) dependency tree of `args`, one crate name per line.
fn tree(args: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--edges", "normal,build", "--prefix", "none", "--format", "{p}"])
        .args(args)
        .current_dir(&root)
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_production_bridge_links_no_stand_in() {
    for args in [
        &["--package", "pulsara-bridge"][..],
        &["--package", "pulsara-cli", "--no-default-features"][..],
    ] {
        let crates = tree(args);
        assert!(crates.iter().any(|c| c == "pulsara-bridge"), "{args:?}: {crates:?}");
        for banned in NOT_IN_PRODUCTION {
            assert!(!crates.iter().any(|c| c == banned), "{args:?} links {banned}");
        }
    }
}

#[test]
fn the_default_command_keeps_the_local_stack() {
    // The check above must be able to fail: the default build does link the stand-ins.
    let crates = tree(&["--package", "pulsara-cli"]);
    for wanted in ["pulsara-local", "pulsara-emulators"] {
        assert!(crates.iter().any(|c| c == wanted), "the default `pulsara` lost {wanted}");
    }
}
