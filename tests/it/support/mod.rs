//! Integration-test harness: one shared PostgreSQL 15 ([`pg`]), pgporter in-process
//! ([`porter`]), per-test fixtures and client helpers ([`fixture`], [`clients`], [`cmd`]).

// Not every test module uses every helper.
#![allow(dead_code)]

pub(crate) mod certs;
pub(crate) mod checklist;
pub(crate) mod checks;
pub(crate) mod clients;
pub(crate) mod cmd;
pub(crate) mod cnpg;
pub(crate) mod fixture;
pub(crate) mod http;
pub(crate) mod pg;
pub(crate) mod porter;
pub(crate) mod process;
pub(crate) mod psql;
pub(crate) mod raw;
pub(crate) mod replica;
pub(crate) mod rubin;
pub(crate) mod shared_account;
pub(crate) mod skip;

// The harness's public surface; not every item is used by today's tests.
#[allow(unused_imports)]
pub(crate) use clients::{connect, connect_with_messages, db_error, simple_value};
pub(crate) use fixture::Fixture;
#[allow(unused_imports)]
pub(crate) use fixture::{Names, Spec};
#[allow(unused_imports)]
pub(crate) use pg::{cluster, PgCluster};
#[allow(unused_imports)]
pub(crate) use porter::{spawn_pgporter, Porter};
#[allow(unused_imports)]
pub(crate) use replica::{ReplCluster, ReplFixture};
pub(crate) use shared_account::SharedAccount;

/// SHOW POOLS' columns, PgBouncer 1.24's: CloudNativePG's exporter reads them by position.
pub(crate) const SHOW_POOLS: [&str; 17] = [
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "cl_active_cancel_req",
    "cl_waiting_cancel_req",
    "sv_active",
    "sv_active_cancel",
    "sv_being_canceled",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
    "load_balance_hosts",
];

/// How long a client-side operation may take before a test calls it a hang.
pub(crate) const HANG: std::time::Duration = std::time::Duration::from_secs(20);
