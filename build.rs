fn main() {
    // Embedded migrations: a new migration file must trigger a rebuild.
    println!("cargo:rerun-if-changed=migrations");
}
