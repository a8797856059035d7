//! Parsing a realistic pgbouncer.ini: 200 databases with varied connstrings, a full
//! [pgbouncer] section and per-user overrides; plus a 200-line auth_file.

use criterion::{black_box, Criterion, Throughput};
use pgporter::auth::scram::verifier::DEFAULT_ITERATIONS;
use pgporter::config::{parse_ini, parse_userlist};

fn ini_text() -> String {
    let mut s = String::from(";; generated for the benchmark\n[databases]\n");
    for i in 0..200 {
        let line = match i % 4 {
            0 => format!("db{i} = host=127.0.0.1 port=5432 dbname=app{i}\n"),
            1 => format!("db{i} = host=10.0.{}.{} port=6543 dbname=app{i} user=svc{i} pool_size=30 reserve_pool=5\n", i / 250, i % 250),
            2 => format!("db{i} = host=pg-a,pg-b port=5432,5433 dbname=\"app {i}\" load_balance_hosts=disable target_session_attrs=read-write\n"),
            _ => format!("db{i} = host=/var/run/postgresql dbname=app{i} pool_mode=session max_db_connections=50 client_encoding=UTF8 datestyle=ISO application_name=svc{i}\n"),
        };
        s.push_str(&line);
    }
    s.push_str("* = host=127.0.0.1 port=5432\n\n[users]\n");
    for i in 0..20 {
        s.push_str(&format!(
            "user{i} = pool_mode=session max_user_connections=40\n"
        ));
    }
    s.push_str(
        "\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 6432\nunix_socket_dir =\n\
         auth_type = scram-sha-256\nauth_file = userlist.txt\npool_mode = session\n\
         default_pool_size = 20\nmin_pool_size = 0\nreserve_pool_size = 0\nmax_client_conn = 10000\n\
         max_db_connections = 0\nserver_reset_query = DISCARD ALL\nserver_check_delay = 30\n\
         server_lifetime = 3600\nserver_idle_timeout = 600\nquery_wait_timeout = 120\n\
         client_login_timeout = 60\nignore_startup_parameters = extra_float_digits, options\n\
         log_connections = 0\nlog_disconnections = 0\nlog_pooler_errors = 1\nstats_period = 60\n\
         admin_users = admin\nstats_users = stats, monitor\ntcp_keepalive = 1\n\
         pkt_buf = 4096\nmax_packet_size = 2147483647\nsbuf_loopcnt = 5\n",
    );
    s
}

fn userlist_text() -> String {
    (0..200)
        .map(|i| format!("\"user{i}\" \"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=\"\n"))
        .collect()
}

pub(crate) fn bench(c: &mut Criterion) {
    let ini = ini_text();
    let users = userlist_text();
    parse_ini(&ini, "bench.ini").expect("bench ini parses");
    let mut warnings = Vec::new();
    let parsed = parse_userlist(&users, "userlist.txt", DEFAULT_ITERATIONS, &mut warnings);
    assert!(
        warnings.is_empty() && parsed.len() == 200,
        "bench userlist parses"
    );
    let mut g = c.benchmark_group("config");
    g.throughput(Throughput::Bytes(ini.len() as u64));
    g.bench_function("parse_ini_200_databases", |b| {
        b.iter(|| parse_ini(black_box(&ini), "bench.ini"))
    });
    g.throughput(Throughput::Bytes(users.len() as u64));
    g.bench_function("parse_userlist_200_scram", |b| {
        b.iter(|| {
            parse_userlist(
                black_box(&users),
                "userlist.txt",
                DEFAULT_ITERATIONS,
                &mut Vec::new(),
            )
        })
    });
    g.finish();
}
