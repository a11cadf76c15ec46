//! Helpers shared by the integration tests in `tests/tests/`: locating the repository, starting
//! processes in their own process group and stopping them cleanly.

pub mod process;
