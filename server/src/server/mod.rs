//! The top of the crate: turns a configuration into a running server and stops it. Imports the
//! configuration, the HTTP layer, the documents, the connection layer and the engine.
//!
//! Inside, in the order a start goes through them: `limits` ([`CheckedConfig`], the one check of
//! the settings no server could serve with), `listeners` ([`bind`], the routers and TLS of each
//! listener, the certificate reloads), `state` (limits, documents, API keys and CORS for the HTTP
//! layer; the keys file reload), `startup` ([`load_engine`], the model's self-check, [`run`],
//! [`serve`]), `shutdown` ([`shutdown_signal`], drain, the wait for in-flight work), and
//! `healthcheck` (the `healthcheck` subcommand's probe). [`ServerError`] (in `error`) is what any
//! of them returns, with its exit status; `termination` writes its line for Kubernetes.

mod error;
mod healthcheck;
mod limits;
mod listeners;
mod shutdown;
mod startup;
mod state;
mod termination;

pub use error::{EXIT_FAILURE, ServerError};
pub use healthcheck::{healthcheck, probe};
pub use limits::CheckedConfig;
pub use listeners::{Bound, bind};
pub use shutdown::shutdown_signal;
pub use startup::{load_engine, model_bytes, run, serve};
pub use state::{app_state, secured_state, security};
pub use termination::write_termination_message;
