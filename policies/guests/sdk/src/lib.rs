//! The SDK a restaurant's developer writes a tool policy with.
//!
//! A policy is a `cdylib` crate that implements [`Tool`] and calls [`export_tool!`]; `cargo xtask
//! build-wasm` turns it into a WebAssembly component for the `tool` world in `policies/wit`.
//! The host hands it a [`ToolInput`] (parameters, call context, granted restaurant data) and
//! expects a [`ToolOutput`] (text for the agent plus [`Action`]s the host checks and performs).
//!
//! Modules:
//! - [`menu`]: find menu items by name, alias or a misspelling; nearest available alternatives.
//! - [`money`]: amounts in minor units: formatting for speech, tax in basis points.
//! - [`time`]: the call's local time, `HH:MM` parsing, and opening-hours answers looked up in
//!   the hours facts the host computed ([`time::Hours`]; the SDK has no hours engine).
//! - [`text`]: normalisation, tokens and edit distance shared by the others.
//!
//! Policies are pure: no clock, no I/O. Time is [`CallContext::local_time`]; data is what the
//! grant allowed ([`GrantedData`]).
//!
//! `deny` rather than `forbid(unsafe_code)`: the component glue that `wit-bindgen` generates (the
//! [`bindings`] module and the code [`export_tool!`] expands to) is `unsafe` by nature; every
//! other line of the SDK is safe Rust.
#![deny(unsafe_code)]

#[cfg(all(target_arch = "wasm32", not(feature = "std-alloc")))]
mod heap;
pub mod menu;
pub mod money;
pub mod text;
pub mod time;

pub use pulsara_core::config;
pub use pulsara_policy_abi::*;
pub use chrono;
pub use serde_json::{self, json, Value};

/// Every policy built with the SDK allocates from [`heap::Bump`] (see there for why).
#[cfg(all(target_arch = "wasm32", not(feature = "std-alloc")))]
#[global_allocator]
static HEAP: heap::Bump = heap::Bump::new();

/// Generated component bindings (the `tool` world). Used by [`export_tool!`]; policies never
/// need it directly.
#[doc(hidden)]
#[allow(unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "tool",
        pub_export_macro: true,
        export_macro_name: "__export_tool_world",
        default_bindings_module: "pulsara_policy_sdk::bindings",
    });
}

/// A tool failure the agent should speak around (bad parameters, a missing grant). Business
/// outcomes such as "that item is sold out" are not errors: return them in [`ToolOutput::result`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError(pub String);

impl ToolError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<String> for ToolError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for ToolError {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// One tool implementation.
pub trait Tool {
    /// Handles one call.
    ///
    /// # Errors
    /// A [`ToolError`] whose message the agent can speak around.
    fn run(input: &ToolInput) -> Result<ToolOutput, ToolError>;
}

/// Decodes the tool parameters into `T`.
///
/// # Errors
/// A [`ToolError`] naming what is wrong with the parameters.
pub fn params<T: serde::de::DeserializeOwned>(input: &ToolInput) -> Result<T, ToolError> {
    let value = if input.params.is_null() { json!({}) } else { input.params.clone() };
    serde_json::from_value(value).map_err(|e| ToolError(format!("invalid parameters for {}: {e}", input.tool)))
}

/// A granted part of the data, or a [`ToolError`] saying which grant is missing.
///
/// # Errors
/// When the part is `None` (not granted).
pub fn require<'a, T>(part: &'a Option<T>, grant: &str) -> Result<&'a T, ToolError> {
    part.as_ref()
        .ok_or_else(|| ToolError(format!("this tool needs the restaurant's {grant} (not granted in its configuration)")))
}

/// A plain text answer with no actions.
pub fn reply(text: impl Into<String>) -> ToolOutput {
    ToolOutput { result: text.into(), data: None, actions: Vec::new() }
}

/// The JSON-in/JSON-out step behind [`export_tool!`]; public so policies can be unit-tested
/// natively with exactly what the host would send.
///
/// # Errors
/// The message for the host: invalid input, ABI mismatch, or the tool's own [`ToolError`].
pub fn run_json<T: Tool>(raw: &str) -> Result<String, String> {
    let input: ToolInput = serde_json::from_str(raw).map_err(|e| format!("invalid tool input: {e}"))?;
    if input.abi_version != ABI_VERSION {
        return Err(format!("policy built for ABI {ABI_VERSION}, input is ABI {}", input.abi_version));
    }
    let output = T::run(&input).map_err(|e| e.0)?;
    serde_json::to_string(&output).map_err(|e| format!("could not encode output: {e}"))
}

/// Exports a [`Tool`] implementation as this module's `tool` world.
///
/// ```ignore
/// struct Hello;
/// impl pulsara_policy_sdk::Tool for Hello {
///     fn run(input: &ToolInput) -> Result<ToolOutput, ToolError> { Ok(reply("hello")) }
/// }
/// pulsara_policy_sdk::export_tool!(Hello);
/// ```
#[macro_export]
macro_rules! export_tool {
    ($tool:ty) => {
        #[doc(hidden)]
        struct __PulsaraToolExport;
        #[allow(unsafe_code)]
        const _: () = {
        impl $crate::bindings::Guest for __PulsaraToolExport {
            fn abi_version() -> u32 {
                $crate::ABI_VERSION
            }
            fn run(input: ::std::string::String) -> ::std::result::Result<::std::string::String, ::std::string::String> {
                $crate::run_json::<$tool>(&input)
            }
        }
        $crate::bindings::__export_tool_world!(__PulsaraToolExport with_types_in $crate::bindings);
        };
    };
}
