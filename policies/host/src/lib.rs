//! The policy host. (Being built: see the policies issue.)
#![forbid(unsafe_code)]
