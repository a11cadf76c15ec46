//! The policy host: runs restaurants' tool policies (WebAssembly components built against
//! `policies/wit` and the guest SDK) in wasmtime, each call in a fresh sandbox with fuel, a
//! wall-clock deadline and a memory cap, seeing only the data its grant allows and able to act
//! only through the actions its grant allows.
//!
//! Modules and data flow:
//! - [`source`]: module bytes by sha256 ([`ModuleSource`]; directory and in-memory sources).
//! - [`host`]: [`PolicyHost`]: engine, linker, module loading (hash check, precompiled
//!   [`cache`]), one call = fresh store + instance + `run` + output check ([`PolicyHost::call`],
//!   [`PolicyHost::run_module`]).
//! - [`toolset`]: a restaurant's tools resolved per configuration version ([`ToolSet`]; hot swap).
//! - [`data`]: the granted part of the restaurant data for a tool's input.
//! - [`hours`]: the opening-hours facts of a call, computed with `pulsara_core::hours` (the
//!   edge's engine), which the `hours` grant passes to policies instead of the weekly rules.
//! - [`limits`]: defaults and maxima ([`Limits`]).
//! - [`record`]: [`RunRecord`], the replayable log of every run.
//! - [`error`]: [`PolicyError`], with a speakable message per failure.
//!
//! `deny(unsafe_code)` rather than `forbid`: deserialising a precompiled artefact is `unsafe` in
//! wasmtime (the bytes are trusted as compiled code). That one call, on artefacts this process
//! wrote and whose digest it checks, is the only `unsafe` (in [`host`]).
#![deny(unsafe_code)]

pub mod cache;
pub mod data;
pub mod error;
pub mod host;
pub mod hours;
pub mod limits;
pub mod module;
pub mod record;
pub mod source;
pub mod toolset;

pub use error::PolicyError;
pub use host::{HostConfig, LoadStats, PolicyHost, ToolRun};
pub use module::LoadedModule;
pub use limits::Limits;
pub use pulsara_policy_abi as abi;
pub use record::{RunOutcome, RunRecord};
pub use source::{DirSource, MemorySource, ModuleSource, SourceError};
pub use toolset::{BoundTool, ToolSet};
