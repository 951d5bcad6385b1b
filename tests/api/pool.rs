//! The pool never lends out a connection that was given back inside a transaction: work that
//! panicked half-way through a transaction must not leave its transaction (and, on SQLite, the
//! write lock) to the next user of the connection.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use lockerhub::db::{self, write_transaction, DatabaseUrl, DbConn, Pool};

fn pool_of_one(url: &str) -> Pool {
    let url = DatabaseUrl::parse(url, Duration::from_secs(5)).expect("database URL");
    db::connect(&url, 1, Duration::from_secs(5)).expect("pool")
}

/// Runs a write transaction on the pool's only connection that panics after its first write.
fn panic_inside_a_transaction(pool: &Pool) {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut conn = pool.get().expect("connection");
        let _: Result<(), diesel::result::Error> = write_transaction(&mut conn, |c: &mut DbConn| {
            c.batch_execute("INSERT INTO probe (n) VALUES (1)")?;
            panic!("work panicked inside its transaction");
        });
    }));
    assert!(outcome.is_err(), "the work panicked");
}

fn probe_rows(pool: &Pool) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = pool.get().expect("the pool still lends a connection");
    diesel::sql_query("SELECT COUNT(*) AS n FROM probe")
        .get_result::<Count>(&mut *conn)
        .expect("count")
        .n
}

#[test]
fn sqlite_connection_left_in_a_transaction_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.db");
    let pool = pool_of_one(&format!("sqlite://{}", path.display()));
    pool.get()
        .unwrap()
        .batch_execute("CREATE TABLE probe (n INTEGER)")
        .unwrap();

    panic_inside_a_transaction(&pool);
    assert_eq!(
        probe_rows(&pool),
        0,
        "the panicked transaction is rolled back, not reused"
    );

    // Work that returns without committing (no panic) is caught as well.
    pool.get()
        .unwrap()
        .batch_execute("BEGIN IMMEDIATE; INSERT INTO probe (n) VALUES (2)")
        .unwrap();
    // Another connection may take the write lock at once: nobody holds it any more.
    let mut other = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    other
        .batch_execute("PRAGMA busy_timeout = 0; BEGIN IMMEDIATE; ROLLBACK")
        .expect("the write lock was released with the discarded connection");
    assert_eq!(probe_rows(&pool), 0);
}

#[test]
#[cfg_attr(not(postgres_tests), ignore = "PostgreSQL: set TEST_DATABASE_URL to run")]
fn postgres_connection_left_in_a_transaction_is_discarded() {
    let admin_url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
    let name = format!("lh_pool_{}", uuid::Uuid::new_v4().simple());
    let mut admin = diesel::PgConnection::establish(&admin_url).expect("admin connection");
    admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&name);
    {
        let pool = pool_of_one(url.as_str());
        pool.get()
            .unwrap()
            .batch_execute("CREATE TABLE probe (n INTEGER)")
            .unwrap();
        panic_inside_a_transaction(&pool);
        assert_eq!(
            probe_rows(&pool),
            0,
            "the panicked transaction is rolled back, not reused"
        );
        // The connection lent now is outside any transaction: a write commits on its own.
        pool.get()
            .unwrap()
            .batch_execute("INSERT INTO probe (n) VALUES (3)")
            .unwrap();
        assert_eq!(probe_rows(&pool), 1);
    }
    admin
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .unwrap();
}
