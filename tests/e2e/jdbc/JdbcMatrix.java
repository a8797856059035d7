// PgJDBC through pgporter: the driver compatibility check list (see tests/e2e/drivers.py).
//
// Usage: java -cp /usr/share/java/postgresql.jar JdbcMatrix.java HOST PORT USER PASSWORD DB
// (Java 11+ runs a single source file directly). Prints `PASS jdbc:check` lines and `OK`;
// a failure throws (stack trace, non-zero exit). Run by tests/it/drivers.rs.

import java.io.StringReader;
import java.io.StringWriter;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class JdbcMatrix {
    static void pass(String check) {
        System.out.println("PASS jdbc:" + check);
        System.out.flush();
    }

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static long count(Connection c) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT count(*) FROM t")) {
            rs.next();
            return rs.getLong(1);
        }
    }

    static Connection connect(String url, String user, String password) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        // PGPORTER_TEST_SSLMODE=require: the same checks over client TLS (no CA check).
        String sslmode = System.getenv("PGPORTER_TEST_SSLMODE");
        p.setProperty("sslmode", sslmode == null ? "disable" : sslmode);
        // Server-side prepare (a named statement) from the first execution on.
        p.setProperty("prepareThreshold", "1");
        return DriverManager.getConnection(url, p);
    }

    /** Return once a session of this user runs `SELECT pg_sleep(30)` (within 20 s). */
    static void waitRunning(String url, String user, String password) throws Exception {
        try (Connection mon = connect(url, user, password);
                PreparedStatement ps = mon.prepareStatement(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = current_user"
                                + " AND state = 'active' AND query LIKE '%pg_sleep(30)%'"
                                + " AND pid <> pg_backend_pid()")) {
            long deadline = System.nanoTime() + 20_000_000_000L;
            while (true) {
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    if (rs.getLong(1) > 0) {
                        return;
                    }
                }
                if (System.nanoTime() > deadline) {
                    throw new AssertionError("pg_sleep(30) not seen running within 20 s");
                }
                Thread.sleep(50);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/" + args[4];
        String user = args[2], password = args[3];
        Connection c = connect(url, user, password);
        pass("connect");
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT 1")) {
            rs.next();
            check(rs.getInt(1) == 1, "select 1");
        }
        pass("simple-query");
        try (PreparedStatement ps = c.prepareStatement("SELECT ?::int * 2, ?::text")) {
            for (int i = 0; i < 3; i++) {
                ps.setInt(1, 21 + i);
                ps.setString(2, "x'y");
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    check(rs.getInt(1) == 42 + 2 * i && rs.getString(2).equals("x'y"), "prepared");
                }
            }
        }
        try (Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'S\\_%'")) {
            rs.next();
            check(rs.getLong(1) >= 1, "pgjdbc did not prepare a named statement");
        }
        pass("params-prepared");
        try (Statement s = c.createStatement()) {
            s.execute("CREATE TEMPORARY TABLE t (id int PRIMARY KEY, name text)");
            s.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')");
        }
        check(count(c) == 2, "temp table");
        pass("temp-table");
        c.setAutoCommit(false);
        try (PreparedStatement ps = c.prepareStatement("INSERT INTO t VALUES (?, ?)")) {
            ps.setInt(1, 3);
            ps.setString(2, "three");
            ps.executeUpdate();
        }
        c.rollback();
        c.setAutoCommit(true);
        check(count(c) == 2, "rollback");
        pass("rollback");
        CopyManager copy = c.unwrap(PGConnection.class).getCopyAPI();
        long in = copy.copyIn("COPY t FROM STDIN", new StringReader("10\tten\n11\televen\n"));
        check(in == 2, "copy in count");
        StringWriter out = new StringWriter();
        copy.copyOut("COPY (SELECT id, name FROM t WHERE id >= 10 ORDER BY id) TO STDOUT", out);
        check(out.toString().equals("10\tten\n11\televen\n"), "copy out: " + out);
        pass("copy");
        try (Statement s = c.createStatement()) {
            // Cancelled once the query runs (watched on a connection of its own): PostgreSQL
            // ignores a cancel that comes before its backend has started the query, which a
            // fixed delay could not rule out on a loaded machine.
            Thread canceller = new Thread(() -> {
                try {
                    waitRunning(url, user, password);
                    s.cancel();
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            canceller.start();
            try {
                s.execute("SELECT pg_sleep(30)");
                throw new AssertionError("pg_sleep was not cancelled");
            } catch (SQLException e) {
                check("57014".equals(e.getSQLState()), "cancel sqlstate " + e.getSQLState());
            }
            canceller.join();
        }
        pass("cancel");
        try (Statement s = c.createStatement()) {
            s.executeQuery("SELECT * FROM no_such_table");
            throw new AssertionError("no error");
        } catch (SQLException e) {
            check("42P01".equals(e.getSQLState()), "error sqlstate " + e.getSQLState());
        }
        check(count(c) == 4, "after error");
        pass("error-sqlstate");
        c.close();
        try {
            connect(url, user, password + "-wrong").close();
            throw new AssertionError("wrong password accepted");
        } catch (SQLException e) {
            check("28P01".equals(e.getSQLState()), "wrong password sqlstate " + e.getSQLState());
        }
        pass("wrong-password");
        System.out.println("OK");
    }
}
