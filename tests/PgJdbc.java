// pgjdbc (Debian's libpostgresql-jdbc-java), the driver DBeaver, Metabase and Grafana's Java
// side use, against `shoplake query`'s Postgres wire. Run by tests/it/pg.rs as
//   java -cp /usr/share/java/postgresql.jar tests/PgJdbc.java URL USER PASSWORD
// and prints what it saw, one `key=value` a line; the Rust test compares it with the lake.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class PgJdbc {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        try (Connection conn = DriverManager.getConnection(args[0], props)) {
            DatabaseMetaData meta = conn.getMetaData();
            System.out.println("product=" + meta.getDatabaseProductName() + " " + meta.getDatabaseProductVersion());
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = meta.getTables(null, null, "%", new String[] {"TABLE", "VIEW"})) {
                while (rs.next()) {
                    tables.add(rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME"));
                }
            }
            System.out.println("tables=" + String.join(",", tables));
            List<String> columns = new ArrayList<>();
            try (ResultSet rs = meta.getColumns(null, null, "orders", "%")) {
                while (rs.next()) {
                    columns.add(rs.getString("COLUMN_NAME"));
                }
            }
            System.out.println("orders_columns=" + String.join(",", columns));
            // A prepared statement with parameters, run past pgjdbc's prepareThreshold (5), after
            // which it keeps the statement on the server and asks for binary results.
            try (PreparedStatement ps = conn.prepareStatement(
                    "select count(*) as n, min(event_time) as first from events where event_name = ? and event_time >= ?")) {
                for (int i = 1; i <= 7; i++) {
                    ps.setString(1, "page_viewed");
                    ps.setTimestamp(2, java.sql.Timestamp.valueOf("2000-01-01 00:00:00"));
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        System.out.println("prepared_" + i + "=" + rs.getLong("n") + " " + (rs.getTimestamp("first") != null));
                    }
                }
            }
            // A fetch size reads a large answer in slices (portal suspended between them).
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.setFetchSize(5000);
                long rows = 0;
                long sum = 0;
                try (ResultSet rs = st.executeQuery("select value from generate_series(1, 100000)")) {
                    while (rs.next()) {
                        rows++;
                        sum += rs.getLong(1);
                    }
                }
                System.out.println("fetched=" + rows + " " + sum);
            }
            conn.commit();
        }
    }
}
