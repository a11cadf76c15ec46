//! Helpers shared by the integration tests in `tests/tests/`: locating the repository, starting
//! processes in their own process group and stopping them cleanly ([`process`]), and the edge
//! worker in workerd under `wrangler dev` ([`workerd`]).

pub mod process;
pub mod workerd;
