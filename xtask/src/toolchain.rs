//! Finding or installing everything a `wasm32-unknown-unknown` build needs, so that
//! `cargo xtask build-wasm` works both on a laptop with rustup and on a fresh Debian 12 machine
//! whose only network access is the package registries.
//!
//! Two ways to get a wasm compiler, in order of preference:
//! 1. **rustup**: the active toolchain already has the `wasm32-unknown-unknown` target installed.
//!    Nothing special is needed.
//! 2. **Debian**: `rustc-web cargo-web rust-web-src lld-22` give `/usr/bin/rustc` with the standard
//!    library *sources*; `RUSTC_BOOTSTRAP=1` + `CARGO_UNSTABLE_BUILD_STD=std,panic_abort` make cargo
//!    build std for wasm itself. The packages are installed with apt-get when missing and we run
//!    as root. `/usr/bin` goes first in `PATH` for these builds only (rustup's shims would
//!    otherwise win), and the empty `target-libdir` directory worker-build checks for is created.
//!    Debian ships no `rust-lld` (rustc's default wasm linker): cargo's wasm32 linker is pointed
//!    at lld-22's `wasm-ld-22` ([`DEBIAN_WASM_LINKER`]), for the policy modules and, through
//!    worker-build's cargo, for the edge alike.
//!
//! Pinned tools (installed with `cargo install` from crates.io when missing or of another
//! version): `wasm-bindgen-cli` (must equal the `wasm-bindgen` version in `Cargo.lock`) and
//! `worker-build`. npm packages (`wrangler`, `binaryen` for `wasm-opt`, `esbuild`) come from
//! `package-lock.json` via `npm ci`. `WASM_BINDGEN_BIN`, `WASM_OPT_BIN` and `ESBUILD_BIN` point
//! worker-build at these local binaries so that nothing is downloaded from anywhere else.
//!
//! [`Wasm::compiler`] finds or installs only the compiler: enough for the policy modules (built
//! with [`Wasm::cargo_build_wasm`]) and so for `cargo xtask demo` and `build-policies`.
//! [`Edge::prepare`] adds the pinned tools and npm packages the edge worker needs (`build-wasm`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

/// The wasm target triple every wasm build here uses.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// Must equal the `wasm-bindgen` version `worker` pins in `Cargo.lock`.
pub const WASM_BINDGEN_VERSION: &str = "0.2.130";
/// The `worker` crate version the edge depends on; worker-build is released in lockstep.
pub const WORKER_BUILD_VERSION: &str = "0.8.7";
const DEBIAN_PACKAGES: [&str; 4] = ["rustc-web", "cargo-web", "rust-web-src", "lld-22"];
/// The wasm linker of Debian's `lld-22` package. Debian's `rustc-web` has no `rust-lld`, the
/// linker rustc would otherwise ask for.
pub const DEBIAN_WASM_LINKER: &str = "/usr/bin/wasm-ld-22";
/// The cargo setting that names the wasm32 linker.
const WASM_LINKER_VAR: &str = "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER";

/// Where the wasm compiler comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiler {
    /// rustup's active toolchain with the wasm target installed.
    Rustup,
    /// Debian's `rustc-web` with `-Zbuild-std`.
    Debian,
}

/// How to invoke cargo for wasm32 builds on this machine.
///
/// Built once by [`Wasm::compiler`]; cheap to pass around by reference.
#[derive(Debug, Clone)]
pub struct Wasm {
    pub compiler: Compiler,
    /// The cargo binary to run for wasm builds.
    pub cargo: PathBuf,
    /// `PATH` for wasm builds (Debian: `/usr/bin` first).
    path: OsString,
    /// Repository root.
    pub root: PathBuf,
}

/// The wasm compiler plus what turns the edge's wasm into a Worker: worker-build, wasm-bindgen,
/// wasm-opt and esbuild, all local so that worker-build downloads nothing.
#[derive(Debug, Clone)]
pub struct Edge {
    pub wasm: Wasm,
    /// Installed `wasm-bindgen` CLI (pinned version).
    pub wasm_bindgen: PathBuf,
    /// Installed `worker-build` (pinned version).
    pub worker_build: PathBuf,
    /// `wasm-opt` from the npm package `binaryen`.
    pub wasm_opt: PathBuf,
    /// `esbuild` from npm.
    pub esbuild: PathBuf,
}

impl Edge {
    /// [`Wasm::compiler`], then the pinned cargo tools and the npm packages.
    ///
    /// # Errors
    /// As [`Wasm::compiler`]; also when `Cargo.lock` pins another wasm-bindgen than the CLI
    /// installed here, or a `cargo install` / `npm ci` fails.
    pub fn prepare() -> Result<Self> {
        let wasm = Wasm::compiler()?;
        util::step("edge tools (wasm-bindgen-cli, worker-build, npm packages)");
        let root = wasm.root.clone();
        if wasm.compiler == Compiler::Debian {
            wasm.ensure_target_libdir()?;
        }
        if let Some(locked) = locked_version(&root, "wasm-bindgen") {
            if locked != WASM_BINDGEN_VERSION {
                bail!(
                    "Cargo.lock pins wasm-bindgen {locked} but xtask installs wasm-bindgen-cli \
                     {WASM_BINDGEN_VERSION}; they must match (update WASM_BINDGEN_VERSION in \
                     xtask/src/toolchain.rs or `cargo update -p wasm-bindgen --precise {WASM_BINDGEN_VERSION}`)"
                );
            }
        }
        let wasm_bindgen = ensure_cargo_tool("wasm-bindgen-cli", "wasm-bindgen", WASM_BINDGEN_VERSION)?;
        let worker_build = ensure_cargo_tool("worker-build", "worker-build", WORKER_BUILD_VERSION)?;
        ensure_npm(&root)?;
        let wasm_opt = root.join("node_modules/.bin/wasm-opt");
        if !wasm_opt.exists() {
            bail!(
                "{} is missing after `npm ci`; is `binaryen` in package.json?",
                wasm_opt.display()
            );
        }
        let mut esbuild = root.join("node_modules/@esbuild/linux-x64/bin/esbuild");
        if !esbuild.exists() {
            // Other platforms: fall back to the `esbuild` launcher script.
            esbuild = root.join("node_modules/.bin/esbuild");
        }
        Ok(Self { wasm, wasm_bindgen, worker_build, wasm_opt, esbuild })
    }

    /// `worker-build` with the wasm build environment and the local tool binaries it must use
    /// instead of downloading its own.
    pub fn worker_build_command(&self) -> Command {
        let mut cmd = Command::new(&self.worker_build);
        self.wasm.apply_env(&mut cmd);
        cmd.env("WASM_BINDGEN_BIN", &self.wasm_bindgen)
            .env("WASM_OPT_BIN", &self.wasm_opt)
            .env("ESBUILD_BIN", &self.esbuild);
        cmd
    }
}

impl Wasm {
    /// Finds the wasm compiler, installing Debian's packages when there is no rustup wasm target.
    ///
    /// # Errors
    /// When no compiler can be found or installed (for example, not root on a machine without
    /// the Debian packages). The message says what to install by hand.
    pub fn compiler() -> Result<Self> {
        util::step("wasm compiler");
        let root = util::root();
        let host_path = std::env::var_os("PATH").unwrap_or_default();
        let (compiler, cargo, path) = if rustup_has_wasm_target() {
            eprintln!("    rustup toolchain with {WASM_TARGET}");
            (Compiler::Rustup, PathBuf::from("cargo"), host_path.clone())
        } else {
            ensure_debian_compiler()?;
            let mut paths = vec![PathBuf::from("/usr/bin")];
            paths.extend(std::env::split_paths(&host_path));
            let path = std::env::join_paths(paths).context("PATH contains an invalid entry")?;
            eprintln!("    Debian rustc-web (/usr/bin/rustc) with -Zbuild-std");
            (Compiler::Debian, PathBuf::from("/usr/bin/cargo"), path)
        };
        Ok(Self { compiler, cargo, path, root })
    }

    /// The target directory for wasm builds, separate from native ones so the two never
    /// invalidate each other: `<root>/target/wasm`.
    pub fn target_dir(&self) -> PathBuf {
        self.root.join("target").join("wasm")
    }

    /// Sets the environment a wasm cargo build needs on `cmd` (PATH, build-std for Debian) and
    /// clears what an enclosing `cargo run` may have set.
    pub fn apply_env(&self, cmd: &mut Command) {
        for var in [
            "RUSTC",
            "RUSTDOC",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PATH", &self.path);
        if self.compiler == Compiler::Debian {
            cmd.env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_UNSTABLE_BUILD_STD", "std,panic_abort")
                .env("RUSTC", "/usr/bin/rustc")
                .env(WASM_LINKER_VAR, DEBIAN_WASM_LINKER)
                .env_remove("RUSTUP_TOOLCHAIN");
        }
    }

    /// A `cargo` command for wasm builds with [`Wasm::apply_env`] applied. Add the subcommand and
    /// `--target wasm32-unknown-unknown` yourself.
    pub fn cargo(&self) -> Command {
        let mut cmd = Command::new(&self.cargo);
        self.apply_env(&mut cmd);
        cmd
    }

    /// `cargo build --target wasm32-unknown-unknown [--release]` for the crate or workspace whose
    /// `Cargo.toml` is in `manifest_dir`, with its artefacts under
    /// `target_dir/wasm32-unknown-unknown/{release,debug}/`.
    ///
    /// # Errors
    /// When cargo cannot start or the build fails.
    pub fn cargo_build_wasm(
        &self,
        manifest_dir: &Path,
        target_dir: &Path,
        release: bool,
    ) -> Result<()> {
        let mut cmd = self.cargo();
        cmd.current_dir(manifest_dir)
            .arg("build")
            .arg("--target")
            .arg(WASM_TARGET)
            .arg("--target-dir")
            .arg(target_dir);
        if release {
            cmd.arg("--release");
        }
        util::run(&mut cmd)
    }

    /// worker-build checks that `rustc --target wasm32-unknown-unknown --print target-libdir`
    /// exists; with `-Zbuild-std` an empty directory is enough.
    fn ensure_target_libdir(&self) -> Result<()> {
        let out = Command::new("/usr/bin/rustc")
            .args(["--target", WASM_TARGET, "--print", "target-libdir"])
            .output()
            .context("could not run /usr/bin/rustc")?;
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.as_os_str().is_empty() || dir.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&dir).with_context(|| {
            format!("could not create {} (worker-build needs it to exist; create it as root: mkdir -p {})", dir.display(), dir.display())
        })?;
        eprintln!("    created empty {}", dir.display());
        Ok(())
    }
}

/// The version of package `name` in the workspace's `Cargo.lock`, if it is there once.
fn locked_version(root: &Path, name: &str) -> Option<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).ok()?;
    let wanted = format!("name = \"{name}\"");
    let mut versions = lock.split("[[package]]").filter_map(|block| {
        let mut lines = block.lines().map(str::trim);
        lines.find(|l| *l == wanted)?;
        let v = lines.find(|l| l.starts_with("version = "))?;
        Some(
            v.trim_start_matches("version = ")
                .trim_matches('"')
                .to_owned(),
        )
    });
    let first = versions.next()?;
    versions.next().is_none().then_some(first)
}

fn rustup_has_wasm_target() -> bool {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return false;
    };
    out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == WASM_TARGET)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn ensure_debian_compiler() -> Result<()> {
    let have = Path::new("/usr/bin/rustc").exists()
        && Path::new("/usr/bin/cargo").exists()
        && Path::new("/usr/lib/rustlib/src/rust/library").exists()
        && debian_linker_present();
    if have {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "no wasm32 compiler: install one with `rustup target add {WASM_TARGET}`, or as root \
             `apt-get install -y {}`",
            DEBIAN_PACKAGES.join(" ")
        );
    }
    util::step(&format!("apt-get install {}", DEBIAN_PACKAGES.join(" ")));
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends"])
            .args(DEBIAN_PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive");
        util::run(&mut cmd)
    };
    if install().is_err() {
        util::run(Command::new("apt-get").arg("update"))?;
        install()?;
    }
    Ok(())
}

/// Whether the linker Debian builds really use ([`DEBIAN_WASM_LINKER`]) is installed; a
/// `rust-lld` lying around does not count, because these builds never call it.
fn debian_linker_present() -> bool {
    Path::new(DEBIAN_WASM_LINKER).exists()
}

fn cargo_bin_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return PathBuf::from(home).join("bin");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cargo").join("bin")
}

/// Returns the path of `bin` at `version`, running `cargo install <krate> --version <version>`
/// when it is missing or reports another version. No `--locked`: wasm-bindgen-cli's lockfile pins
/// a dependency version the registry index no longer has.
fn ensure_cargo_tool(krate: &str, bin: &str, version: &str) -> Result<PathBuf> {
    let path = cargo_bin_dir().join(bin);
    let current = Command::new(&path)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match current {
        Some(v) if v.split_whitespace().last() == Some(version) => {
            eprintln!("    {bin} {version}: {}", path.display());
            return Ok(path);
        }
        Some(v) => util::step(&format!("cargo install {krate} {version} (found {v:?})")),
        None => util::step(&format!(
            "cargo install {krate} {version} (about 10 minutes on 2 cores)"
        )),
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["install", krate, "--version", version, "--force"])
        .env_remove("CARGO_TARGET_DIR");
    util::run(&mut cmd)?;
    Ok(path)
}

/// `npm ci` when `node_modules` is missing or older than `package-lock.json`.
fn ensure_npm(root: &Path) -> Result<()> {
    let lock = root.join("package-lock.json");
    let marker = root.join("node_modules/.package-lock.json");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (mtime(&marker), mtime(&lock)) {
        (Some(installed), Some(locked)) => installed >= locked,
        _ => false,
    };
    if fresh {
        eprintln!("    npm packages: up to date (node_modules)");
        return Ok(());
    }
    util::step("npm ci (wrangler, binaryen, esbuild from package-lock.json)");
    let mut cmd = Command::new("npm");
    cmd.args(["ci", "--no-audit", "--no-fund"])
        .current_dir(root)
        .env("WRANGLER_SEND_METRICS", "false");
    util::run(&mut cmd)
        .context("npm ci failed; Node.js 20+ and npm are needed (apt-get install nodejs npm)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(cmd: &Command, name: &str) -> Option<OsString> {
        cmd.get_envs()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.map(OsString::from))
    }

    #[test]
    fn debian_builds_link_with_the_lld_package_not_rust_lld() {
        let wasm = Wasm {
            compiler: Compiler::Debian,
            cargo: PathBuf::from("/usr/bin/cargo"),
            path: OsString::from("/usr/bin"),
            root: PathBuf::from("."),
        };
        let cmd = wasm.cargo();
        assert_eq!(env_of(&cmd, WASM_LINKER_VAR), Some(OsString::from(DEBIAN_WASM_LINKER)));
        assert!(DEBIAN_PACKAGES.contains(&"lld-22"), "the linker comes from lld-22");
    }

    #[test]
    fn rustup_builds_keep_rustups_own_linker() {
        let wasm = Wasm {
            compiler: Compiler::Rustup,
            cargo: PathBuf::from("cargo"),
            path: OsString::from("/usr/bin"),
            root: PathBuf::from("."),
        };
        assert_eq!(env_of(&wasm.cargo(), WASM_LINKER_VAR), None);
    }
}
