fn main() {
    // Embedded migrations: a new migration file must trigger a rebuild.
    println!("cargo:rerun-if-changed=migrations");
    // The PostgreSQL variants of the integration tests need a server: with `TEST_DATABASE_URL`
    // unset they are compiled as ignored, so `cargo test` reports them as such instead of as
    // passed.
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo:rerun-if-env-changed=TEST_DATABASE_URL");
    if std::env::var_os("TEST_DATABASE_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=postgres_tests");
    }
}
