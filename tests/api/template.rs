//! Migrated template databases, as crates.io's harness has them: the migrations run once, and
//! each test copies the result instead of running every migration again.
//!
//! A template is named from a hash of its migration files' names and contents, so a changed or
//! added migration makes (and uses) a new template and an old one is never reused by mistake.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use diesel::connection::SimpleConnection;
use diesel::Connection;
use lockerhub::db::{run_migrations, DbConn};
use sha2::{Digest, Sha256};

/// Short hash of `migrations/<backend>`: every file's path and contents, in a stable order.
fn migrations_hash(backend: &str) -> String {
    fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read the migrations folder") {
            let path = entry.expect("a migrations entry").path();
            if path.is_dir() {
                collect(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.strip_prefix(&root).unwrap_or(&f).to_string_lossy().as_bytes());
        h.update([0]);
        h.update(std::fs::read(&f).expect("read a migration"));
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// The migrated SQLite template file, made once per set of migrations. Each test copies it.
pub fn sqlite() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // Cargo's scratch directory for integration tests: it outlives one run, so later runs
        // (and other test processes) reuse the file while the migrations are unchanged.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let hash = migrations_hash("sqlite");
        let path = dir.join(format!("lh_tpl_{hash}.db"));
        if !path.exists() {
            std::fs::create_dir_all(dir).expect("create the template directory");
            // Built under a name of its own and renamed into place: a concurrent creator's
            // rename replaces an identical file, and a reader never sees a half-migrated one.
            let building = dir.join(format!("lh_tpl_{hash}.{}.building", uuid::Uuid::new_v4().simple()));
            let conn =
                diesel::SqliteConnection::establish(&building.to_string_lossy()).expect("create the SQLite template");
            // The default rollback journal (not WAL): when the connection closes, everything
            // is in the one file that tests copy.
            let mut conn = DbConn::Sqlite(conn);
            run_migrations(&mut conn).expect("migrate the SQLite template");
            drop(conn);
            std::fs::rename(&building, &path).expect("move the SQLite template into place");
        }
        path
    })
}

/// The name of the migrated PostgreSQL template database on the server `admin_url` names,
/// created by the first test that needs it. Tests `CREATE DATABASE .. TEMPLATE` it.
pub fn postgres(admin_url: &str) -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| create_postgres(admin_url))
}

fn create_postgres(admin_url: &str) -> String {
    use diesel::sql_types::Bool;
    use diesel::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = Bool)]
        found: bool,
    }

    let name = format!("lh_tpl_{}", migrations_hash("postgres"));
    let mut admin = diesel::PgConnection::establish(admin_url).expect("TEST_DATABASE_URL must be reachable");
    // Several test processes (and this one's test threads, through the OnceLock) start at
    // once: one creates the template, the others wait here and then find it.
    admin
        .batch_execute("SELECT pg_advisory_lock(hashtext('lockerhub test template'))")
        .expect("take the template lock");
    let exists = diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS found")
        .bind::<diesel::sql_types::Text, _>(&name)
        .get_result::<Found>(&mut admin)
        .expect("look for the template")
        .found;
    if !exists {
        // Migrated under another name and renamed when complete: a creator that died half-way
        // leaves only the `_building` database, which the next creator drops.
        let building = format!("{name}_building");
        // Two statements: PostgreSQL runs neither inside a transaction, which one batch is.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"))
            .expect("drop a half-made template");
        admin
            .batch_execute(&format!("CREATE DATABASE \"{building}\""))
            .expect("create the template database");
        let mut url = url::Url::parse(admin_url).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&building);
        let conn = diesel::PgConnection::establish(url.as_str()).expect("connect to the template");
        let mut conn = DbConn::Pg(conn);
        run_migrations(&mut conn).expect("migrate the template");
        // PostgreSQL refuses to copy (or rename) a database another session is connected to:
        // this was the only connection. Its server process may take a moment to exit after
        // the close; RENAME and CREATE .. TEMPLATE wait up to 5 s for that on their own.
        drop(conn);
        admin
            .batch_execute(&format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\""))
            .expect("move the template into place");
        // When it was made, for `drop_stale_templates`.
        admin
            .batch_execute(&format!(
                "COMMENT ON DATABASE \"{name}\" IS 'lockerhub test template made {}'",
                chrono::Utc::now().timestamp()
            ))
            .expect("date the template");
        drop_stale_templates(&mut admin, &name);
    }
    admin
        .batch_execute("SELECT pg_advisory_unlock(hashtext('lockerhub test template'))")
        .expect("release the template lock");
    name
}

/// Templates of older migration sets, left by earlier runs: dropped when a new one is made, so
/// they do not pile up on a developer's server. Only those made more than a day ago: another
/// checkout's tests, on another migration set, may be copying theirs between two tests right
/// now (a drop would fail their next copy). One in use this instant refuses the drop anyway.
fn drop_stale_templates(admin: &mut diesel::PgConnection, current: &str) {
    use diesel::sql_types::Text;
    use diesel::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Template {
        #[diesel(sql_type = Text)]
        datname: String,
    }

    let day_ago = chrono::Utc::now().timestamp() - 86_400;
    let stale = diesel::sql_query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'lh\\_tpl\\_%' AND datname NOT LIKE '%\\_building' \
         AND datname <> $1 AND COALESCE(NULLIF(regexp_replace(shobj_description(oid, 'pg_database'), \
         '^lockerhub test template made ([0-9]+)$', '\\1'), shobj_description(oid, 'pg_database'))::BIGINT, 0) < $2",
    )
    .bind::<Text, _>(current)
    .bind::<diesel::sql_types::BigInt, _>(day_ago)
    .load::<Template>(admin)
    .unwrap_or_default();
    for t in stale {
        if let Err(e) = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\"", t.datname)) {
            eprintln!("kept the old test template {}: {e}", t.datname);
        }
    }
}
