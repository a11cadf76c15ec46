//! The README's edge deploy commands, as far as they run without a Cloudflare account:
//! `npx wrangler deploy --env staging|production` as a dry run (wrangler bundles the built worker
//! with each environment's bindings and stops before uploading), and
//! `npx wrangler secret put NAME --env staging` up to the point where it needs credentials.
//! Both use the pinned wrangler in `node_modules` and never touch the network for the deploy:
//! no credentials are passed and `HOME` is a fresh directory, so nothing can be uploaded.
//!
//! Needs the worker (`cargo xtask build-wasm`, which also runs `npm ci`); fails, never skips,
//! without it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use pulsara_tests::process::{repo_root, TempDir};

/// Cloudflare's limit on a Worker's compressed size on the free plan.
const FREE_PLAN_GZIP_LIMIT_KIB: f64 = 3.0 * 1024.0;

fn check_built(root: &Path) {
    for file in ["edge/build/index.js", "edge/build/index_bg.wasm"] {
        assert!(
            root.join(file).is_file(),
            "{file} is missing: build the worker with `cargo xtask build-wasm` (`cargo xtask test` does it)"
        );
    }
    assert!(
        root.join("node_modules/.bin/wrangler").exists(),
        "node_modules/.bin/wrangler is missing: run `cargo xtask build-wasm` (it runs `npm ci` from package-lock.json)"
    );
}

/// `wrangler <args>` in the repository root, offline and without any Cloudflare credentials.
fn wrangler(root: &Path, home: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut cmd = Command::new(root.join("node_modules/.bin/wrangler"));
    cmd.current_dir(root)
        .args(args)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("CI", "1")
        .env("NO_COLOR", "1")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("WRANGLER_LOG_PATH", home.join("logs"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for var in [
        "CLOUDFLARE_API_TOKEN",
        "CLOUDFLARE_API_KEY",
        "CLOUDFLARE_EMAIL",
        "CLOUDFLARE_ACCOUNT_ID",
        "CF_API_TOKEN",
        "CF_API_KEY",
        "CF_EMAIL",
        "CF_ACCOUNT_ID",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().expect("start wrangler");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("wait for wrangler")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Names of the README's edge settings of `kind` (`var` or `secret`), from the
/// "Edge (Worker `[vars]` and secrets…)" table.
fn readme_edge_settings(kind: &str) -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let section = readme
        .split("\n### ")
        .find(|s| s.starts_with("Edge"))
        .expect("README.md has an `### Edge` section");
    let mut names = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if cells.get(2) == Some(&kind) {
            for name in cells[1].split(',') {
                names.insert(name.trim().trim_matches('`').to_owned());
            }
        }
    }
    assert!(
        !names.is_empty(),
        "no `{kind}` rows in the README's edge table"
    );
    names
}

/// The dry run's bundle size line: `Total Upload: 1942.76 KiB / gzip: 483.83 KiB`.
fn upload_sizes(out: &str) -> (f64, f64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("Total Upload:"))
        .unwrap_or_else(|| panic!("no `Total Upload:` line in:\n{out}"));
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 2, "{line}");
    (numbers[0], numbers[1])
}

#[test]
fn deploy_dry_run_staging_and_production() {
    let root = repo_root();
    check_built(&root);
    let home = TempDir::new("pulsara-wrangler-home");
    let vars = readme_edge_settings("var");
    let secrets = readme_edge_settings("secret");
    let built_wasm = std::fs::read(root.join("edge/build/index_bg.wasm")).unwrap();

    for (env, public_base) in [
        ("staging", "https://edge-staging."),
        ("production", "https://edge."),
    ] {
        let outdir = TempDir::new(&format!("pulsara-deploy-{env}"));
        let out = wrangler(
            &root,
            home.path(),
            &[
                "deploy",
                "--dry-run",
                "--outdir",
                outdir.path().to_str().unwrap(),
                "--env",
                env,
            ],
            "",
        );
        let shown = text(&out);
        assert!(
            out.status.success(),
            "wrangler deploy --dry-run --env {env} failed:\n{shown}"
        );
        assert!(shown.contains("--dry-run: exiting now."), "{shown}");

        // Every var the README documents is set for this environment ([vars] are not
        // inherited by [env.*]), no secret is a plain var, and the KV cache is bound.
        let binding = |name: &str| {
            shown
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("env.{name} ")))
                .map(str::to_owned)
        };
        for var in &vars {
            let line = binding(var).unwrap_or_else(|| {
                panic!("--env {env}: {var} is not set (the README lists it):\n{shown}")
            });
            assert!(line.contains("Environment Variable"), "{line}");
        }
        for secret in &secrets {
            assert!(
                binding(secret).is_none(),
                "--env {env}: the secret {secret} is a plain var in wrangler.toml"
            );
        }
        let kv = binding("CONFIG_CACHE").unwrap_or_else(|| panic!("no CONFIG_CACHE:\n{shown}"));
        assert!(kv.contains("KV Namespace"), "{kv}");
        let public = binding("PUBLIC_BASE_URL").unwrap();
        assert!(public.contains(public_base), "--env {env}: {public}");
        assert!(
            !binding("BRIDGE_URLS").unwrap().contains("ws://"),
            "bridges only over wss://"
        );

        // The bundle is the built worker, within Cloudflare's size limit.
        let (_, gzip_kib) = upload_sizes(&shown);
        assert!(
            gzip_kib < FREE_PLAN_GZIP_LIMIT_KIB,
            "--env {env}: {gzip_kib} KiB gzipped is over the free plan's 3 MiB"
        );
        let files: Vec<String> = std::fs::read_dir(outdir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(files.iter().any(|f| f == "index.js"), "{files:?}");
        let wasm = files
            .iter()
            .find(|f| f.ends_with(".wasm"))
            .unwrap_or_else(|| panic!("no wasm in the bundle: {files:?}"));
        assert!(
            std::fs::read(outdir.path().join(wasm)).unwrap() == built_wasm,
            "the bundle's {wasm} is not edge/build/index_bg.wasm"
        );
    }
}

#[test]
fn secret_put_names_the_edge_secrets() {
    let root = repo_root();
    check_built(&root);
    let secrets = readme_edge_settings("secret");

    // NAME is one of the README's edge secrets: exactly those .dev.vars.example documents, each
    // read by the edge.
    let example =
        std::fs::read_to_string(root.join(".dev.vars.example")).expect(".dev.vars.example");
    let documented: BTreeSet<String> = example
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .collect();
    assert_eq!(
        documented, secrets,
        ".dev.vars.example and the README's secrets differ"
    );
    let read: BTreeSet<String> = pulsara_edge::settings::SECRETS.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(read, secrets, "the README's edge secrets and the ones the edge reads differ");

    // wrangler takes the command as the README writes it: it resolves `--env staging` from
    // wrangler.toml, then stops for want of credentials (none are given here).
    let home = TempDir::new("pulsara-wrangler-home");
    let name = secrets.iter().next().unwrap();
    let out = wrangler(
        &root,
        home.path(),
        &["secret", "put", name, "--env", "staging"],
        "not-a-real-secret",
    );
    let shown = text(&out);
    assert!(
        !out.status.success(),
        "secret put cannot succeed without credentials:\n{shown}"
    );
    assert!(
        shown.contains("CLOUDFLARE_API_TOKEN"),
        "expected a request for credentials:\n{shown}"
    );
    assert!(!shown.contains("No environment found"), "{shown}");
    assert!(
        !shown.contains("not-a-real-secret"),
        "wrangler echoed the secret:\n{shown}"
    );
    // An environment wrangler.toml does not define is refused before that.
    let out = wrangler(
        &root,
        home.path(),
        &["secret", "put", name, "--env", "nosuch"],
        "not-a-real-secret",
    );
    let shown = text(&out);
    assert!(!out.status.success());
    assert!(
        shown.contains("No environment found in configuration with name \"nosuch\""),
        "{shown}"
    );
}
