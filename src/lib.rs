//! pgporter: a PgBouncer-compatible PostgreSQL connection pooler.

pub mod auth;
pub mod config;
