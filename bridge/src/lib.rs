//! The bridge. (Being built: see the bridge issue.)
#![forbid(unsafe_code)]
