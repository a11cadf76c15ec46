//! `pulsara keys create|list|revoke|rotate`: API keys for the embedded dashboard, managed directly
//! in its SQLite database. A new key is printed once and stored only as a hash; rotation keeps
//! the old key valid for a grace period.

use std::path::PathBuf;

use anyhow::Context;
use pulsara_dashboard::keys::Scope;
use pulsara_dashboard::store::Store;

#[derive(clap::Args)]
pub struct KeysArgs {
    /// The embedded dashboard's database file.
    #[arg(
        long,
        env = "PULSARA_DASHBOARD_DB",
        default_value = "pulsara-dashboard.db"
    )]
    pub db: PathBuf,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key with one scope; prints it once.
    Create {
        /// edge, bridge or admin.
        #[arg(long)]
        scope: Scope,
        /// A note saying who uses the key.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List keys (ids, scopes, state; never the keys).
    List,
    /// Revoke a key at once.
    Revoke { id: String },
    /// Issue a replacement; the old key keeps working for the grace period.
    Rotate {
        id: String,
        #[arg(long, default_value_t = 86_400)]
        grace_secs: i64,
    },
}

/// Runs a `keys` subcommand, writing its output to `out`.
///
/// # Errors
/// The database cannot be opened, or the key id is unknown / not rotatable.
pub fn run(args: KeysArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let store = Store::open(&args.db).with_context(|| format!("opening {}", args.db.display()))?;
    let now = chrono::Utc::now().timestamp();
    match args.command {
        KeysCommand::Create { scope, label } => {
            let k = store.create_api_key(scope, &label, now)?;
            writeln!(
                out,
                "id:    {}\nscope: {}\nkey:   {}",
                k.id,
                k.scope,
                k.key.expose()
            )?;
            writeln!(
                out,
                "Store the key now: it is shown only once (the database keeps a hash)."
            )?;
        }
        KeysCommand::List => {
            writeln!(
                out,
                "{:<14} {:<7} {:<8} {:<22} label",
                "id", "scope", "state", "expires"
            )?;
            for k in store.list_api_keys()? {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else if k.is_active(now) {
                    "active"
                } else {
                    "expired"
                };
                let expires = k
                    .expires_at
                    .and_then(|e| chrono::DateTime::from_timestamp(e, 0))
                    .map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string())
                    .unwrap_or_else(|| "-".into());
                writeln!(
                    out,
                    "{:<14} {:<7} {:<8} {:<22} {}",
                    k.id, k.scope, state, expires, k.label
                )?;
            }
        }
        KeysCommand::Revoke { id } => {
            store.revoke_api_key(&id, now)?;
            writeln!(out, "revoked {id}")?;
        }
        KeysCommand::Rotate { id, grace_secs } => {
            let k = store.rotate_api_key(&id, grace_secs, now)?;
            writeln!(
                out,
                "id:    {}\nscope: {}\nkey:   {}",
                k.id,
                k.scope,
                k.key.expose()
            )?;
            writeln!(out, "The old key {id} stays valid for {grace_secs} s. Store the new key now: it is shown only once.")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        keys: KeysArgs,
    }

    fn run_args(db: &std::path::Path, args: &[&str]) -> String {
        let mut argv = vec!["t", "--db", db.to_str().unwrap()];
        argv.extend_from_slice(args);
        let t = T::try_parse_from(argv).unwrap();
        let mut out = Vec::new();
        run(t.keys, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn create_list_rotate_revoke() {
        let dir = tempfile_dir();
        let db = dir.join("d.db");
        let created = run_args(&db, &["create", "--scope", "bridge", "--label", "eu"]);
        let key = created
            .lines()
            .find_map(|l| l.strip_prefix("key:   "))
            .unwrap()
            .to_owned();
        let id = created
            .lines()
            .find_map(|l| l.strip_prefix("id:    "))
            .unwrap()
            .to_owned();
        let store = Store::open(&db).unwrap();
        let now = chrono::Utc::now().timestamp();
        assert!(store.authenticate_api_key(&key, now).unwrap().is_ok());
        let list = run_args(&db, &["list"]);
        assert!(
            list.contains(&id) && list.contains("active") && !list.contains(&key),
            "{list}"
        );
        let rotated = run_args(&db, &["rotate", &id, "--grace-secs", "60"]);
        let new_key = rotated
            .lines()
            .find_map(|l| l.strip_prefix("key:   "))
            .unwrap()
            .to_owned();
        assert!(
            store.authenticate_api_key(&key, now + 30).unwrap().is_ok(),
            "old key within grace"
        );
        assert!(
            store.authenticate_api_key(&key, now + 61).unwrap().is_err(),
            "old key after grace"
        );
        assert!(store
            .authenticate_api_key(&new_key, now + 61)
            .unwrap()
            .is_ok());
        run_args(&db, &["revoke", &id]);
        assert!(run_args(&db, &["list"]).contains("revoked"));
        assert!(T::try_parse_from(["t", "create", "--scope", "root"]).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pulsara-keys-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
