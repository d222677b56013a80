//! The `rookery` binary: parses the command line, loads the configuration,
//! sets up logging and runs a subcommand. Everything else lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use rookery::config::{Config, Overrides};

/// With the `jemalloc` feature the binary allocates with jemalloc, whose
/// background thread returns freed memory to the OS after a load peak (glibc
/// keeps most of it; BENCHMARKS.md "Memory after load" has the measurements).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Rookery: a self-hosted, Scaledrone-compatible real-time messaging server.
///
/// One binary is the token-issuing auth service (POST /auth), the pub/sub
/// broker (WebSocket /v3/websocket), a REST API (/api) and a chat page (/).
/// With no configuration it runs a development channel on 127.0.0.1:8080.
#[derive(Parser)]
#[command(name = "rookery", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Clone)]
struct Common {
    /// Configuration file (TOML). Without one, the embedded default runs.
    #[arg(long, short, env = "ROOKERY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:8080 (overrides the file).
    #[arg(long, env = "ROOKERY_LISTEN", global = true)]
    listen: Option<SocketAddr>,
    /// Directory of token policies (overrides the file).
    #[arg(long, env = "ROOKERY_POLICIES_DIR", global = true)]
    policies_dir: Option<PathBuf>,
    /// Directory of the chat page and client library (overrides the file).
    #[arg(long, env = "ROOKERY_STATIC_DIR", global = true)]
    static_dir: Option<PathBuf>,
    /// Directory for the development channel's credentials (overrides the file).
    #[arg(long, env = "ROOKERY_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Mint a token from the configured policy, for scripts and REST callers.
    Token(TokenArgs),
    /// Manage members' accounts (add, list, remove, passwd).
    #[command(subcommand)]
    User(UserCommand),
    /// Validate the configuration and policies and show the rendered rules.
    Check {
        /// The client id to render `{client}` with.
        #[arg(long, default_value = rookery::policy::SAMPLE_CLIENT_ID)]
        client: String,
    },
}

#[derive(Args)]
struct TokenArgs {
    /// Channel id (default: the auth channel).
    #[arg(long)]
    channel: Option<String>,
    /// Client id the token is bound to (socket tokens).
    #[arg(long, required_unless_present = "rest")]
    client: Option<String>,
    /// Lifetime in seconds (default: the channel's token TTL).
    #[arg(long)]
    ttl: Option<u64>,
    /// Mint a REST token: no `client` claim, for `Authorization: Bearer`.
    #[arg(long, conflicts_with = "client")]
    rest: bool,
    /// Display name for the token's `data` claim.
    #[arg(long)]
    name: Option<String>,
}

/// `rookery user …`: operator commands on the accounts store the server uses.
#[derive(Subcommand)]
enum UserCommand {
    /// Create an account, also when registration is closed. The password is
    /// the first line of standard input, or of --password-file.
    Add {
        /// 3-32 characters of a-z, 0-9 and _ (lowered).
        username: String,
        /// Display name (default: the username).
        #[arg(long)]
        name: Option<String>,
        /// Read the password from the first line of this file instead of stdin.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// List the accounts: username and display name.
    List,
    /// Delete an account, take it out of its groups and end its sessions.
    Remove { username: String },
    /// Set a new password (read like `add`) and end every session of the account.
    Passwd {
        username: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let command = cli.command.unwrap_or(Command::Serve);
    let overrides = Overrides {
        listen: cli.common.listen,
        static_dir: cli.common.static_dir.clone(),
        policies_dir: cli.common.policies_dir.clone(),
        data_dir: cli.common.data_dir.clone(),
        history_store: None,
        // `check` validates and shows; it must not create the data directory or credentials.
        read_only: matches!(command, Command::Check { .. }),
    };
    let config = Config::load(cli.common.config.as_deref(), &overrides)?;
    match command {
        Command::Serve => serve(config),
        Command::Token(args) => token(&config, &args),
        Command::User(command) => user(&config, command),
        Command::Check { client } => check(&config, &client),
    }
}

fn serve(config: Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener =
            rookery::server::bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
        let address = listener.local_addr()?;
        // Before the line below: whoever sees it may signal us at once, and an
        // uninstalled handler would let SIGTERM kill the process ungracefully.
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(install_signal_handlers(), shutdown.clone()));
        // Scripts and tests wait for this line on stdout.
        println!("rookery listening on http://{address}");
        if let Some(file) = &config.dev_channel_file {
            for line in rookery::config::dev_channel_hints(&config.channels[0].id, file, address) {
                tracing::info!("{line}");
            }
        }
        rookery::server::run(listener, config, shutdown).await?;
        Ok(())
    })
}

type SignalStreams = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);

/// SIGINT and SIGTERM streams; `None` (logged) when they cannot be installed.
fn install_signal_handlers() -> Option<SignalStreams> {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(interrupt), Ok(terminate)) => Some((interrupt, terminate)),
        _ => {
            tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
            None
        }
    }
}

async fn wait_for_signal(signals: Option<SignalStreams>, shutdown: CancellationToken) {
    let Some((mut interrupt, mut terminate)) = signals else {
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("signal received, shutting down");
    shutdown.cancel();
}

fn token(config: &Config, args: &TokenArgs) -> Result<()> {
    let channel_id = args.channel.as_deref().unwrap_or(&config.auth_channel);
    let channel = config
        .channel(channel_id)
        .with_context(|| format!("no channel {channel_id:?} in the configuration"))?;
    let client = if args.rest { None } else { args.client.as_deref() };
    let data = args.name.as_ref().map(|name| serde_json::json!({ "name": name }));
    let minted = rookery::auth::ChannelAuth::new(channel.clone()).mint(client, None, data.as_ref(), args.ttl);
    println!("{}", minted.token);
    Ok(())
}

fn check(config: &Config, client: &str) -> Result<()> {
    println!("configuration OK: listening on {}", config.listen);
    if let Some(file) = &config.dev_channel_file {
        if file.exists() {
            println!("development channel: credentials in {}", file.display());
        } else {
            println!(
                "development channel: not created yet; `rookery serve` will write its credentials to {}",
                file.display()
            );
        }
    }
    for channel in &config.channels {
        println!(
            "\nchannel {:?}: require_auth={} policy={:?} token_ttl={}s history={} expiry={:?}",
            channel.id,
            channel.require_auth,
            channel.policy.name,
            channel.token_ttl_seconds,
            channel.history_size,
            channel.expiry
        );
        println!("  permissions for client {client:?} (last matching rule wins):");
        for (room, rule) in channel.policy.render(client) {
            println!("    {room:<40} {rule}");
        }
    }
    Ok(())
}

fn user(config: &Config, command: UserCommand) -> Result<()> {
    use rookery::accounts::{Accounts, names};
    use rookery::groups::Groups;
    use rookery::stores::Stores;
    // Input is checked before the store is opened (and before a password is
    // asked for), so mistakes are reported first and cheaply.
    let accounts = |config: &Config| -> Result<Accounts> {
        let stores = Stores::open(config)?;
        Ok(Accounts::new(config, stores.accounts)?)
    };
    match command {
        UserCommand::Add {
            username,
            name,
            password_file,
        } => {
            let username = names::normalize_username(&username)?;
            if let Some(name) = &name {
                names::validate_display_name(name)?;
            }
            let password = read_password(&username, password_file.as_deref())?;
            names::check_password(&password)?;
            let user = accounts(config)?.add_user(&username, &password, name.as_deref())?;
            println!("added user {} ({})", user.username, user.display_name);
        }
        UserCommand::List => {
            for user in accounts(config)?.users()? {
                println!("{}\t{}", user.username, user.display_name);
            }
        }
        UserCommand::Remove { username } => {
            let username = names::normalize_username(&username)?;
            let stores = Stores::open(config)?;
            // Groups first: should this fail, the account is still there and
            // the command can be run again. Memberships left by a user removed
            // before are cleared too, before "no user" is reported.
            let groups = Groups::new(config.groups.clone(), stores.groups, stores.accounts.clone());
            let channels: Vec<&str> = config.channels.iter().map(|c| c.id.as_str()).collect();
            let left = groups.remove_user_everywhere(&channels, &username)?;
            Accounts::new(config, stores.accounts)?.remove_user(&username)?;
            println!("removed user {username} from {left} group(s) and ended their sessions");
        }
        UserCommand::Passwd {
            username,
            password_file,
        } => {
            let username = names::normalize_username(&username)?;
            let password = read_password(&username, password_file.as_deref())?;
            names::check_password(&password)?;
            accounts(config)?.set_password(&username, &password)?;
            println!("changed the password of {username} and ended their sessions");
        }
    }
    Ok(())
}

/// The first line of `file`, or of standard input, without its line ending.
/// Nothing else is trimmed: spaces are part of a password.
fn read_password(username: &str, file: Option<&std::path::Path>) -> Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let mut line = String::new();
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            line = text.lines().next().unwrap_or_default().to_owned();
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                // The terminal echoes what is typed; prefer a pipe or --password-file.
                eprint!("password for {username} (visible as you type): ");
                std::io::stderr().flush()?;
            }
            stdin
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from stdin")?;
            let end = line.trim_end_matches(['\n', '\r']).len();
            line.truncate(end);
        }
    }
    Ok(line)
}
