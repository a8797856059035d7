//! pgporter's integration tests: one binary, a real PostgreSQL 15 shared by all tests
//! (see `support::pg`), one pgporter per test, in parallel. Run with `scripts/test.sh`.

mod support;

mod admin;
mod auth;
mod butler;
mod clients;
mod drivers;
mod drivers_native;
mod limits;
mod negative;
mod ops;
mod session;
