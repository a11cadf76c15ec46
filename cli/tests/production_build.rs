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
        .args([
            "tree",
            "--offline",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .args(args)
        .current_dir(&root)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
        assert!(
            crates.iter().any(|c| c == "pulsara-bridge"),
            "{args:?}: {crates:?}"
        );
        for banned in NOT_IN_PRODUCTION {
            assert!(
                !crates.iter().any(|c| c == banned),
                "{args:?} links {banned}"
            );
        }
    }
}

#[test]
fn the_default_command_keeps_the_local_stack() {
    // The check above must be able to fail: the default build does link the stand-ins.
    let crates = tree(&["--package", "pulsara-cli"]);
    for wanted in ["pulsara-local", "pulsara-emulators"] {
        assert!(
            crates.iter().any(|c| c == wanted),
            "the default `pulsara` lost {wanted}"
        );
    }
}

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The image is the production build plus the restaurants and the built-in policies: every
/// `COPY` from the build context is one of those, and the binary is built without the local
/// stack.
#[test]
fn the_container_recipe_ships_production_code_and_built_in_policies_only() {
    let recipe = std::fs::read_to_string(root().join("deploy/Containerfile")).unwrap();
    let build = recipe
        .lines()
        .find(|l| l.starts_with("RUN cargo build"))
        .expect("the recipe builds the binary");
    for part in [
        "--release",
        "--package pulsara-cli",
        "--no-default-features",
    ] {
        assert!(build.contains(part), "{build:?} lacks {part}");
    }
    let from_context: Vec<&str> = recipe
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.starts_with("COPY --from"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    // The first stage copies the sources to build them; the image only what it runs.
    let shipped: Vec<&str> = from_context.into_iter().filter(|src| *src != ".").collect();
    assert_eq!(
        shipped,
        ["restaurants", "target/policies/builtins"],
        "the image copies {shipped:?}"
    );
}

/// What `target/policies/builtins` holds (written by `cargo xtask build-policies`): exactly the
/// crates under `policies/guests/builtins` and their manifest; no example, no test guest.
#[test]
fn the_shipped_policy_directory_holds_the_built_ins_alone() {
    let dir = root().join("target/policies/builtins");
    let names = |path: &Path, keep: &dyn Fn(&Path) -> bool| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(path)
            .unwrap_or_else(|e| {
                panic!("{}: {e} (run `cargo xtask build-policies`)", path.display())
            })
            .map(|e| e.unwrap().path())
            .filter(|p| keep(p))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let crates = names(&root().join("policies/guests/builtins"), &|p| {
        p.join("Cargo.toml").is_file()
    });
    assert!(crates.len() >= 5, "{crates:?}");
    let modules = names(&dir, &|p| p.extension().is_some_and(|e| e == "wasm"));
    assert_eq!(modules, crates);
    let manifest =
        pulsara_policy_abi::manifest::Manifest::read(&dir.join("manifest.json")).unwrap();
    assert_eq!(
        manifest.modules().keys().cloned().collect::<Vec<_>>(),
        crates
    );
    // Every built-in carries its tool specification (from its crate's tool.json) to the agent sync.
    for (name, m) in manifest.modules() {
        assert!(
            m.tool.is_some(),
            "built-in {name} has no tool specification in the manifest"
        );
    }
    assert!(!dir.join("test_memory_bomb.wasm").exists());
}
