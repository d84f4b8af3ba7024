//! Rebuild when a migration is added: `sqlx::migrate!` embeds the `migrations/` folder at compile
//! time, and cargo does not watch new files in it otherwise.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
