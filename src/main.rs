use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lockerhub::config::{Settings, SETTINGS_HELP};
use lockerhub::startup::Application;

/// lockerhub: one parcel-locker network for every carrier.
#[derive(Parser)]
#[command(version, about, after_help = SETTINGS_HELP)]
struct Cli {
    /// TOML config file (default: ./lockerhub.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create an admin API key and print it once.
    CreateAdminKey {
        /// A label for the key.
        #[arg(long, default_value = "admin")]
        name: String,
        /// The named person who holds the key (default: the name). A remote open beyond the
        /// window needs approval by a key held by someone else.
        #[arg(long)]
        holder: Option<String>,
        /// admin (everything, including admin keys), operator (everything else) or viewer (read only).
        #[arg(long, default_value = "admin", value_parser = ["admin", "operator", "viewer"])]
        role: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    lockerhub::telemetry::init(settings.log_format, &settings.log_level);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings),
        Command::Migrate => migrate(&settings),
        Command::CreateAdminKey { name, holder, role } => {
            create_admin_key(&settings, &name, holder.as_deref().unwrap_or(&name), &role)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> Result<(), String> {
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        app.run_until_stopped().await.map_err(|e| e.to_string())
    })
}

fn migrate(settings: &Settings) -> Result<(), String> {
    let url = lockerhub::db::DatabaseUrl::parse(&settings.database_location(), settings.db_connect_timeout())?;
    let pool = lockerhub::db::connect(&url, 1, settings.db_connect_timeout())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let n = lockerhub::db::run_migrations(&mut conn)?;
    println!("database {} is up to date ({n} migrations applied now)", url.display());
    Ok(())
}

fn create_admin_key(settings: &Settings, name: &str, holder: &str, role: &str) -> Result<(), String> {
    use lockerhub::domain::remote_open::{Holder, Role};
    let holder = Holder::parse(holder)?;
    let role = Role::parse(role).ok_or_else(|| format!("unknown role {role:?}: use admin, operator or viewer"))?;
    let url = lockerhub::db::DatabaseUrl::parse(&settings.database_location(), settings.db_connect_timeout())?;
    let pool = lockerhub::db::connect(&url, 1, settings.db_connect_timeout())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let (id, key) =
        lockerhub::db::admin_keys::create_with(&mut conn, name, &holder, role, None).map_err(|e| e.to_string())?;
    eprintln!(
        "Created admin key {id} ({name}, held by {}, role {}). It is shown only once; store it now:",
        holder.as_str(),
        role.as_str()
    );
    println!("{key}");
    Ok(())
}
