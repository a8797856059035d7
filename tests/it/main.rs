//! pgporter's integration tests: one binary, a real PostgreSQL 15 shared by all tests
//! (see `support::pg`), one pgporter per test, in parallel. Run with `scripts/test.sh`.

mod support;

mod admin;
mod admin_console;
mod admin_sessions;
mod audit;
mod auth;
mod auth_query;
mod autodb;
mod butler;
mod clients;
mod cnpg;
mod drivers;
mod drivers_native;
mod faults_client;
mod faults_server;
mod fuzz;
mod hba;
mod identity;
mod isolation;
mod limits;
mod lobby;
mod log_format;
mod log_lines;
mod login_edges;
mod login_wait;
mod login_wait_pause;
mod monitor_tls;
mod negative;
mod ops;
mod ops_binary;
mod passthrough;
mod peers;
mod relay_state;
mod routing;
mod routing_reload;
mod rubin;
mod session;
mod statement;
mod systemd;
mod timeouts;
mod tls;
mod transaction;
mod transaction_prepared;
mod transaction_raw;
