//! The edge. (Being built: see the edge issue.)
#![forbid(unsafe_code)]
